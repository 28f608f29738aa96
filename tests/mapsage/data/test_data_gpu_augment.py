"""Batch-wise kornia augmentation (``augment.backend: kornia``) on the CPU: a mask derived from the image stays
aligned with it through the whole geometric pipeline, ignore pixels stay ignore and borders become ignore, masks are
never interpolated, a seed reproduces the draws, and the training engine runs it on a machine without a GPU (saying
so in the log) with batches at the crop size."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mapsage.data import decoder_for, load_mask, read_color_mask
from mapsage.data.gpu_augment import KorniaAugment, window_size
from mapsage.data.transforms import build_train_transform
from tests.support.data import DUBAI_ROOT, boundary_band, dubai_cfg
from tests.support.train import tiny_cfg

torch.set_num_threads(1)

GEOMETRY = ("augment.backend=kornia", "augment.crop_size=[128, 128]", "augment.scale_range=[0.5, 2.0]",
            "augment.hflip=0.5", "augment.vflip=0.5", "augment.rotate_deg=30", "augment.rotate_p=1.0",
            "augment.elastic_p=0.5", "augment.elastic_alpha=20", "augment.elastic_sigma=4",
            "augment.color_jitter_p=0", "augment.cat_max_ratio=1.0")
IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))      # mean/std: images are the 0..1 colours, so they round-trip exactly


@pytest.fixture(scope="module")
def colour_batch():
    """Four loader windows of a real Dubai mask used as the image (its colours) and the mask decoded from it: a
    mask derived from the image, so alignment can be checked after any transform."""
    path = DUBAI_ROOT / "Tile 2/masks/image_part_004.png"      # 509x544, palette mode
    rgb = read_color_mask(path).copy()
    mask = load_mask(path, dubai_cfg())
    loader_tf = build_train_transform(dubai_cfg(*GEOMETRY), seed=0)       # the kornia backend's loader part
    images, masks = [], []
    for _ in range(4):
        out = loader_tf(image=rgb, mask=mask)
        images.append(torch.from_numpy(out["image"]).permute(2, 0, 1).float() / 255.0)
        masks.append(torch.from_numpy(out["mask"].astype(np.int64)))
    return torch.stack(images), torch.stack(masks)


def _derive(images: torch.Tensor) -> np.ndarray:
    dec = decoder_for(dubai_cfg())
    rgb = (images * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.stack([dec.decode(np.ascontiguousarray(im), strict=False)[0] for im in rgb])


def test_loader_cuts_windows_for_the_smallest_scale(colour_batch):
    images, masks = colour_batch
    cfg = dubai_cfg(*GEOMETRY)
    assert window_size(cfg) == (256, 256)                    # 128 / 0.5: room for the zoomed-out draws
    assert images.shape == (4, 3, 256, 256) and masks.shape == (4, 256, 256)
    names = [type(op).__name__ for op in build_train_transform(cfg).transforms]
    assert names == ["PadIfNeeded", "CatMaxRatioCrop"]       # no resampling on the CPU
    assert window_size(dubai_cfg(*GEOMETRY, "augment.scale_range=[1.0, 2.0]")) == (128, 128)


def test_mask_derived_from_the_image_stays_aligned_exactly(colour_batch):
    images, masks = colour_batch
    aug = KorniaAugment(dubai_cfg(*GEOMETRY), *IDENTITY, seed=0, image_resample="nearest")
    labelled = 0
    for _ in range(6):
        x, m = aug(images, masks)
        assert x.shape == (4, 3, 128, 128) and m.shape == (4, 128, 128) and m.dtype == torch.int64
        # resampled the same way as the mask (nearest), the image must reproduce the mask pixel for pixel, the
        # rotated-in and zoomed-out borders included (image black -> unknown colour -> ignore; mask -> ignore)
        assert np.array_equal(_derive(x), m.numpy())
        labelled += int((m != 255).sum())
    assert labelled > 6 * 4 * 128 * 128 * 0.3


def test_bilinear_images_differ_from_the_mask_only_at_label_edges(colour_batch):
    images, masks = colour_batch
    aug = KorniaAugment(dubai_cfg(*GEOMETRY), *IDENTITY, seed=1)          # the real pipeline: bilinear images
    for _ in range(4):
        x, m = aug(images, masks)
        derived, msk = _derive(x), m.numpy().astype(np.uint8)
        for d, k in zip(derived, msk):
            known = d != 255
            wrong = known & (d != k)
            assert not (wrong & ~boundary_band(k, 3)).any(), "a class disagreement away from any label edge"
            lab = k != 255
            if lab.sum() > 1000:       # blended edge colours decode as unknown: up to 2x zoom widens that band
                assert (known & lab & (d == k)).sum() / lab.sum() > 0.7


def test_ignore_stays_ignore_and_masks_are_never_interpolated(colour_batch):
    images, masks = colour_batch
    aug = KorniaAugment(dubai_cfg(*GEOMETRY), *IDENTITY, seed=2)
    allowed = set(torch.unique(masks).tolist()) | {255}
    holed = masks.clone()
    holed[:, 64:192, 64:192] = 255                             # an ignore block in the middle of every window
    for _ in range(5):
        x, m = aug(images, holed)
        assert set(torch.unique(m).tolist()) <= allowed
    all_ignore = torch.full_like(masks, 255)
    _, m = aug(images, all_ignore)
    assert bool((m == 255).all())                              # never a class out of ignore pixels
    # 30 degrees of rotation on every sample always brings ignore into the corners
    rot = KorniaAugment(dubai_cfg(*GEOMETRY, "augment.scale_range=[1.0, 1.0]", "augment.elastic_p=0"),
                        *IDENTITY, seed=3)
    full = torch.zeros(4, 128, 128, dtype=torch.int64)
    _, m = rot(images[:, :, :128, :128], full)
    assert bool((m[:, 0, 0] == 255).all()) and bool((m[:, -1, -1] == 255).all())
    assert int((m == 0).sum()) > 4 * 128 * 128 * 0.5


def test_same_seed_same_draws_and_the_global_rng_untouched(colour_batch):
    images, masks = colour_batch
    cfg = dubai_cfg(*GEOMETRY, "augment.color_jitter_p=0.5", "augment.random_erasing_p=0.5")

    def run(seed):
        aug = KorniaAugment(cfg, *IDENTITY, seed=seed)
        return [aug(images, masks) for _ in range(2)]

    torch.manual_seed(7)
    a = run(11)
    after = torch.rand(3)
    torch.manual_seed(7)
    b = run(11)
    assert torch.equal(torch.rand(3), after)                  # the training loop's own draws do not move
    for (xa, ma), (xb, mb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ma, mb)
    assert not torch.equal(a[0][1], a[1][1])                  # batches of one epoch differ
    c = run(12)
    assert not torch.equal(a[0][1], c[0][1])
    # seed(s, start_batch=n) resumes the epoch's draws at batch n
    aug = KorniaAugment(cfg, *IDENTITY, seed=0)
    aug.seed(11, start_batch=1)
    x, m = aug(images, masks)
    assert torch.equal(x, a[1][0]) and torch.equal(m, a[1][1])


def test_colour_jitter_and_erasing_touch_the_image_only(colour_batch):
    images, masks = colour_batch
    base = ("augment.backend=kornia", "augment.crop_size=[256, 256]", "augment.scale_range=[1.0, 1.0]",
            "augment.hflip=0", "augment.rotate_p=0", "augment.cat_max_ratio=1.0")
    aug = KorniaAugment(dubai_cfg(*base, "augment.color_jitter=[0.4, 0.4, 0.4, 0.1]", "augment.color_jitter_p=1.0",
                                  "augment.random_erasing_p=1.0"), (0.4, 0.4, 0.4), (0.2, 0.2, 0.2), seed=0)
    norm = (images - 0.4) / 0.2
    x, m = aug(norm, masks)
    assert torch.equal(m, masks)
    assert (x - norm).abs().mean() > 0.05
    assert bool(((x * 0.2 + 0.4).abs() < 1e-5).flatten(1).any(1).all())     # every sample has an erased (black) box


def test_engine_runs_kornia_on_a_cpu_machine_and_says_so(one_thread, tmp_path):
    from mapsage.events import EventWriter, read_events
    from mapsage.train import Trainer
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, batch, outputs):
            seen.append((tuple(batch["images"].shape), set(torch.unique(batch["targets"].mask).tolist())))
            return outputs.sum() * 0.0

    cfg = tiny_cfg("augment.backend=kornia", "train.ema.enabled=false", "train.epochs=1")
    tr = Trainer(cfg, run_dir=tmp_path, events=EventWriter(tmp_path), extra_losses={"rec": Recorder()},
                 show_bar=False, validate=False)
    tr.fit()
    assert tr.train_set[0]["image"].shape[-2:] == (256, 256)     # the loader's window: 64 / 0.25
    assert [s for s, _ in seen] == [(2, 3, 64, 64)] * 2           # the model sees crop-size batches
    assert all(v <= set(range(7)) | {255} for _, v in seen)
    logs = [r["message"] for r in read_events(tmp_path / "events.jsonl")[0] if r["type"] == "log"]
    note = [t for t in logs if "augment.backend is kornia but there is no GPU" in t]
    assert len(note) == 1 and "\n" not in note[0]


def test_backend_is_checked():
    from mapsage.config import ConfigError
    with pytest.raises(ConfigError, match="augment.backend"):
        dubai_cfg("augment.backend=gpu")
    assert dubai_cfg().augment.backend == "albumentations"
    names = [type(op).__name__ for op in build_train_transform(dubai_cfg()).transforms]
    assert "RandomScale" in names and "Rotate" in names             # the CPU path is unchanged


def test_swa_batchnorm_statistics_see_the_augmented_crops(one_thread, tmp_path, monkeypatch):
    from mapsage.train import Trainer
    from mapsage.train.swa import Swa
    shapes = []
    real = Swa.update_bn

    def recording(self, images, device, max_batches=None):
        def seen():
            for x in images:
                shapes.append(tuple(x.shape))
                yield x
        return real(self, seen(), device, max_batches=max_batches)

    monkeypatch.setattr(Swa, "update_bn", recording)
    cfg = tiny_cfg("augment.backend=kornia", "train.ema.enabled=false", "train.epochs=1", "train.swa.enabled=true",
                   "train.swa.start_epoch=0")
    tr = Trainer(cfg, run_dir=tmp_path, show_bar=False, validate=False)
    tr.fit()
    assert tr.swa.has_bn()                                          # SegFormer's decoder carries BatchNorm
    assert shapes and set(shapes) == {(2, 3, 64, 64)}              # not the loader's 256 px windows


def test_distillation_does_not_cache_teacher_views_under_kornia():
    from mapsage.distill.targets import cache_rule
    cfg = tiny_cfg("augment.backend=kornia", "augment.cutmix_p=0", "augment.mixup_p=0")
    mode, why = cache_rule(cfg, tile_views=True)
    assert mode == "off" and "augment.backend: kornia" in why
