"""Joint training transforms on real tiles: image and mask stay aligned, masks are never interpolated, borders are
ignore-filled, colour jitter touches the image only, cat_max_ratio re-crops, and seeds make crops reproducible."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mapsage.data import build_dataset, decoder_for, load_image, load_mask, read_color_mask
from mapsage.data.transforms import build_train_transform
from tests.support.data import DUBAI_ROOT, LOVEDA_ROOT, boundary_band, dubai_cfg, loveda_cfg

torch.set_num_threads(1)

GEOMETRY = ("augment.crop_size=[256, 256]", "augment.scale_range=[0.5, 2.0]", "augment.hflip=0.5",
            "augment.vflip=0.5", "augment.rotate_deg=30", "augment.rotate_p=1.0", "augment.color_jitter_p=0",
            "augment.cat_max_ratio=1.0")


@pytest.fixture(scope="module")
def colour_pair():
    """A real Dubai mask used as the image (its colours), and the mask decoded from it: a mask derived from the
    image, so alignment can be checked exactly after any transform."""
    path = DUBAI_ROOT / "Tile 2/masks/image_part_004.png"      # a palette-mode mask, 509x544 (smaller than crops)
    rgb = read_color_mask(path).copy()
    return rgb, load_mask(path, dubai_cfg())


def _derive(image: np.ndarray) -> np.ndarray:
    mask, _ = decoder_for(dubai_cfg()).decode(image, strict=False)       # unknown (blended) colours -> 255
    return mask


def test_mask_derived_from_the_image_stays_aligned_exactly(colour_pair):
    rgb, mask = colour_pair
    cfg = dubai_cfg(*GEOMETRY)
    tf = build_train_transform(cfg, image_interpolation=cv2.INTER_NEAREST, seed=0)
    checked = 0
    for _ in range(40):
        out = tf(image=rgb, mask=mask)
        img, msk = out["image"], out["mask"]
        assert img.shape == (256, 256, 3) and msk.shape == (256, 256)
        # resampling the image the same way as the mask (nearest) must reproduce the mask pixel for pixel,
        # including the padded and rotated-in borders (image 0 = black -> ignored; mask fill = ignore)
        assert np.array_equal(_derive(img), msk)
        checked += int((msk != 255).sum())
    assert checked > 40 * 256 * 256 * 0.3


def test_alignment_with_bilinear_images_differs_only_at_label_edges(colour_pair):
    rgb, mask = colour_pair
    tf = build_train_transform(dubai_cfg(*GEOMETRY), seed=1)        # the real pipeline: bilinear images
    for _ in range(30):
        out = tf(image=rgb, mask=mask)
        derived, msk = _derive(out["image"]), out["mask"]
        known = derived != 255
        wrong = known & (derived != msk)
        assert not (wrong & ~boundary_band(msk, 2)).any(), "a class disagreement away from any label edge"
        labelled = (msk != 255)
        if labelled.sum() > 1000:
            assert (known & labelled & (derived == msk)).sum() / labelled.sum() > 0.85


def test_masks_are_never_interpolated():
    cases = [(load_image(DUBAI_ROOT / "Tile 4/images/image_part_002.jpg"),
              load_mask(DUBAI_ROOT / "Tile 4/masks/image_part_002.png", dubai_cfg()), dubai_cfg(*GEOMETRY)),
             (load_image(LOVEDA_ROOT / "Train/Rural/images_png/1.png"),
              load_mask(LOVEDA_ROOT / "Train/Rural/masks_png/1.png", loveda_cfg()), loveda_cfg(*GEOMETRY))]
    for image, mask, cfg in cases:
        allowed = set(np.unique(mask).tolist()) | {255}
        tf = build_train_transform(cfg, seed=2)
        for _ in range(15):
            out = tf(image=image, mask=mask)
            assert out["mask"].dtype == np.uint8
            assert set(np.unique(out["mask"]).tolist()) <= allowed


def test_borders_are_ignore_filled(colour_pair):
    rgb, mask = colour_pair
    h, w = mask.shape
    cfg = dubai_cfg("augment.crop_size=[640, 640]", "augment.scale_range=[1.0, 1.0]", "augment.hflip=0",
                    "augment.rotate_deg=0", "augment.color_jitter_p=0", "augment.cat_max_ratio=1.0")
    out = build_train_transform(cfg, seed=3)(image=rgb, mask=mask)
    img, msk = out["image"], out["mask"]
    assert msk.shape == (640, 640)
    pad = np.ones((640, 640), bool)
    top, left = (640 - h) // 2, (640 - w) // 2
    pad[top:top + h, left:left + w] = False
    assert np.all(msk[pad] == 255) and np.all(img[pad] == 0)
    assert np.array_equal(msk[~pad].reshape(h, w), mask)
    # rotation fills its corners with ignore, not with a class
    rot = dubai_cfg("augment.crop_size=[256, 256]", "augment.scale_range=[1.0, 1.0]", "augment.hflip=0",
                    "augment.rotate_deg=45", "augment.rotate_p=1.0", "augment.color_jitter_p=0")
    big = load_mask(DUBAI_ROOT / "Tile 5/masks/image_part_001.png", dubai_cfg())
    big_img = load_image(DUBAI_ROOT / "Tile 5/images/image_part_001.jpg")
    tf = build_train_transform(rot, seed=4)
    corner_ignored = 0
    for _ in range(10):
        out = tf(image=big_img[:256, :256], mask=big[:256, :256])
        corner_ignored += int(out["mask"][0, 0] == 255) + int(out["mask"][-1, -1] == 255)
    assert corner_ignored >= 10           # >= 9 degrees of rotation always cuts the 256 px corners


def test_colour_jitter_changes_the_image_only():
    image = load_image(LOVEDA_ROOT / "Val/Rural/images_png/2.png")
    mask = load_mask(LOVEDA_ROOT / "Val/Rural/masks_png/2.png", loveda_cfg())
    cfg = loveda_cfg("augment.crop_size=[1024, 1024]", "augment.scale_range=[1.0, 1.0]", "augment.hflip=0",
                     "augment.rotate_deg=0", "augment.color_jitter=[0.4, 0.4, 0.4, 0.1]", "augment.color_jitter_p=1.0")
    tf = build_train_transform(cfg, seed=5)
    for _ in range(3):
        out = tf(image=image, mask=mask)
        assert np.array_equal(out["mask"], mask)
        assert not np.array_equal(out["image"], image)


def test_crop_without_augmentation_is_a_plain_window():
    # every pixel encodes its own position, so the crop's origin can be read off and the window checked
    h, w = 700, 900
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx % 256, yy % 256, (xx // 256) * 16 + yy // 256], -1).astype(np.uint8)
    mask = ((xx // 50 + yy // 50) % 7).astype(np.uint8)
    cfg = dubai_cfg("augment.enabled=false", "augment.crop_size=[320, 480]")
    tf = build_train_transform(cfg, seed=6)
    for _ in range(10):
        out = tf(image=image, mask=mask)
        px = out["image"][0, 0].astype(int)
        x0, y0 = px[0] + 256 * (px[2] // 16), px[1] + 256 * (px[2] % 16)
        assert out["image"].shape == (320, 480, 3)
        assert np.array_equal(out["image"], image[y0:y0 + 320, x0:x0 + 480])
        assert np.array_equal(out["mask"], mask[y0:y0 + 320, x0:x0 + 480])


def test_cat_max_ratio_avoids_crops_dominated_by_one_class():
    # Val/Rural/2 is 87 % forest: a plain 256 px crop is usually all forest
    image = load_image(LOVEDA_ROOT / "Val/Rural/images_png/2.png")
    mask = load_mask(LOVEDA_ROOT / "Val/Rural/masks_png/2.png", loveda_cfg())
    base = ("augment.crop_size=[256, 256]", "augment.scale_range=[1.0, 1.0]", "augment.hflip=0",
            "augment.rotate_deg=0", "augment.color_jitter_p=0")

    def dominated_share(ratio: float) -> float:
        tf = build_train_transform(loveda_cfg(*base, f"augment.cat_max_ratio={ratio}"), seed=7)
        hits = 0
        for _ in range(40):
            counts = np.bincount(tf(image=image, mask=mask)["mask"].ravel(), minlength=256)[:255]
            hits += counts.max() / counts.sum() >= 0.75
        return hits / 40

    plain, guarded = dominated_share(1.0), dominated_share(0.75)
    # up to 10 draws per crop (mmseg's rule): fewer dominated crops, though not none on a tile this uniform
    assert plain > 0.9 and guarded < plain - 0.25


def test_same_seed_same_crops_through_the_dataset():
    cfg = dubai_cfg("augment.color_jitter_p=0")

    def crops():
        torch.manual_seed(123)
        ds = build_dataset(cfg, "val", train=True)
        return [ds[i] for i in (0, 1, 0)]

    a, b = crops(), crops()
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])
        assert tuple(x["image"].shape) == (3, 256, 256) and x["mask"].dtype == torch.int64
    assert not torch.equal(a[0]["mask"], a[2]["mask"]) or not torch.equal(a[0]["image"], a[2]["image"])
    torch.manual_seed(124)
    other = build_dataset(cfg, "val", train=True)[0]
    assert not torch.equal(other["image"], a[0]["image"])


def test_dataloader_workers_get_different_crops():
    cfg = dubai_cfg("augment.color_jitter_p=0", "dataset.max_samples=1")
    ds = build_dataset(cfg, "val", train=True)

    class Repeat:
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return ds[0]

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(Repeat(), batch_size=1, num_workers=2)
    masks = [b["mask"][0] for b in loader]
    assert len(masks) == 4
    # worker 0 gives items 0 and 2, worker 1 items 1 and 3: the workers must not replay the same random stream
    assert not (torch.equal(masks[0], masks[1]) and torch.equal(masks[2], masks[3]))


def test_transform_config_errors():
    from mapsage.config import ConfigError
    with pytest.raises(ConfigError, match=r"augment.scale_range must be \[min, max\]"):
        build_train_transform(dubai_cfg("augment.scale_range=[2.0, 0.5]"))
    with pytest.raises(ConfigError, match=r"augment.crop_size must be \[height, width\]"):
        build_train_transform(dubai_cfg("augment.crop_size=[0, 256]"))
    with pytest.raises(ConfigError, match=r"augment.color_jitter must be \[brightness"):
        build_train_transform(dubai_cfg("augment.color_jitter=[0.1, 0.1]"))
