"""Progressive resolution, per-batch multi-size crops, the mixing schedule by epoch, CutMix alpha and the new
albumentations regularisers, observed on real batches of the training engine."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from tests.support.train import tiny_cfg


class Recorder(nn.Module):
    """An extra loss term that records what the engine fed the model (shape, soft targets) and adds nothing."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[int, tuple, bool]] = []

    def forward(self, batch, outputs):
        self.seen.append((batch["epoch"], tuple(batch["images"].shape), batch["targets"].is_soft))
        return outputs.sum() * 0.0 if torch.is_tensor(outputs) else outputs["seg"].sum() * 0.0


def _fit(*overrides):
    from mapsage.train import Trainer
    rec = Recorder()
    cfg = tiny_cfg("train.ema.enabled=false", *overrides)
    tr = Trainer(cfg, extra_losses={"rec": rec}, show_bar=False, validate=False)
    tr.fit()
    return rec.seen, tr


def test_progressive_resolution_changes_batch_shape_at_the_scheduled_epoch(one_thread):
    seen, tr = _fit("train.epochs=3", "augment.crop_schedule=[{from_epoch: 0, size: [48, 48]}, "
                    "{from_epoch: 2, size: [96, 64]}]")
    shapes = {e: {s[2:] for ep, s, _ in seen if ep == e} for e in range(3)}
    assert shapes == {0: {(48, 48)}, 1: {(48, 48)}, 2: {(96, 64)}}
    assert tr.train_set[0]["image"].shape[-2:] == (96, 64)           # tiles cropped at the largest size


def test_progressive_resize_keeps_the_field_of_view(one_thread):
    from mapsage.train.aug_schedule import BatchResizer
    cfg = tiny_cfg("augment.crop_schedule=[{from_epoch: 0, size: [32, 32]}]", "augment.crop_resize=true")
    r = BatchResizer(cfg.augment)
    r.start_epoch(0, 1)
    mask = torch.zeros(1, 64, 64, dtype=torch.long)
    mask[:, :, 32:] = 3
    img = torch.rand(1, 3, 64, 64)
    i2, m2 = r(img, mask)
    assert i2.shape[-2:] == (32, 32) and set(m2.unique().tolist()) == {0, 3}
    assert (m2[:, :, 16:] == 3).all() and (m2[:, :, :16] == 0).all()


def test_multi_size_crops_drawn_per_batch(one_thread):
    seen, _ = _fit("train.epochs=1", "train.steps_per_epoch=5", "augment.crop_sizes=[32, 48, 64]")
    sizes = [s[2:] for _, s, _ in seen]
    assert set(sizes) <= {(32, 32), (48, 48), (64, 64)} and len(set(sizes)) >= 2
    again, _ = _fit("train.epochs=1", "train.steps_per_epoch=5", "augment.crop_sizes=[32, 48, 64]")
    assert [s[2:] for _, s, _ in again] == sizes                    # seeded per epoch: a resume draws the same


def test_mixing_off_for_the_last_epochs(one_thread):
    seen, _ = _fit("train.epochs=3", "augment.mixup_p=1.0", "augment.mix_off_last_epochs=1")
    soft = {e: {s for ep, _, s in seen if ep == e} for e in range(3)}
    assert soft == {0: {True}, 1: {True}, 2: {False}}


def test_aug_phases_turn_mixing_on_later(one_thread):
    seen, _ = _fit("train.epochs=2", "augment.phases=[{from_epoch: 1, mixup_p: 1.0}]")
    soft = {e: {s for ep, _, s in seen if ep == e} for e in range(2)}
    assert soft == {0: {False}, 1: {True}}


def test_cutmix_alpha_shapes_the_box_share():
    from mapsage.train.mixing import BatchMixer
    shares = {}
    for alpha in (1.0, 0.1):
        cfg = tiny_cfg("augment.cutmix_p=1.0", "augment.cutmix_same_domain=false", f"augment.cutmix_alpha={alpha}")
        mixer = BatchMixer(cfg.augment)
        mixer.seed(0)
        vals = []
        for _ in range(200):
            masks = torch.stack([torch.zeros(32, 32, dtype=torch.long), torch.ones(32, 32, dtype=torch.long)])
            _, t, _ = mixer(torch.zeros(2, 3, 32, 32), masks)
            vals.append(float((t.mask[0] == 1).float().mean()))
        shares[alpha] = np.asarray(vals)
    # Beta(0.1, 0.1) puts lam near 0 or 1: most boxes are tiny or (nearly) the whole tile
    extreme = {a: float(((v < 0.05) | (v > 0.8)).mean()) for a, v in shares.items()}
    assert extreme[0.1] > extreme[1.0] + 0.25


def test_random_erasing_and_elastic_in_the_pipeline():
    import albumentations as A

    from mapsage.data.transforms import build_train_transform
    cfg = tiny_cfg("augment.random_erasing_p=1.0", "augment.elastic_p=1.0")
    t = build_train_transform(cfg, seed=0)
    names = [type(op).__name__ for op in t.transforms]
    assert "Erasing" in names and "ElasticTransform" in names
    cfg2 = tiny_cfg("augment.random_erasing_p=1.0", "augment.scale_range=[1.0, 1.0]", "augment.rotate_p=0",
                    "augment.color_jitter_p=0", "augment.hflip=0")
    t2 = build_train_transform(cfg2, seed=0)
    img = np.full((64, 64, 3), 200, np.uint8)
    mask = np.full((64, 64), 2, np.uint8)
    out = t2(image=img, mask=mask)
    assert (out["image"] == 0).any() and (out["mask"] == 2).all()   # erased image pixels, labels untouched
    assert isinstance(t2.transforms[-1], A.Erasing)


def test_crop_schedule_and_sizes_together_is_an_error():
    from mapsage.config import ConfigError
    from mapsage.train.aug_schedule import BatchResizer
    cfg = tiny_cfg("augment.crop_sizes=[32]", "augment.crop_schedule=[{from_epoch: 0, size: [32, 32]}]")
    with pytest.raises(ConfigError, match="augment.crop_schedule"):
        BatchResizer(cfg.augment)
