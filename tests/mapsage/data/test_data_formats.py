"""Datasets as they come: mmseg-converted masks (reduce_zero_label), index-mask paths written relative or absolute,
and CelebAMask-HQ-style part masks (one binary PNG per part) written from the real bundled Dubai masks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mapsage.config import ConfigError, load_config
from mapsage.data import build_dataset, discover_samples, load_mask
from mapsage.errors import DataError
from tests.support.data import LOVEDA_ROOT
from tests.support.formats import PART_CLASSES, dubai_part_layout, mmseg_loveda_layout, part_config

torch.set_num_threads(1)
ROOT_CFG = "configs/stage1_baselines/segformer_mit-b2_loveda-mmseg.yaml"


def _raw(path):
    return np.array(Image.open(path))


def test_reduce_zero_label_reads_mmseg_converted_loveda(tmp_path):
    root = mmseg_loveda_layout(tmp_path / "loveDA")
    cfg = load_config(ROOT_CFG, [f"dataset.root={root}"])
    samples = discover_samples(cfg.dataset)
    assert sorted(s.id for s in samples) == ["train/0", "train/1", "val/2"]     # img_dir/ left out of the ids
    train = build_dataset(cfg, "train")
    assert len(train) == 2 and len(build_dataset(cfg, "val")) == 1
    for s in samples:
        raw = _raw(s.mask_path).astype(np.int16)
        ids = load_mask(s.mask_path, cfg.dataset)
        expected = np.where(raw == 0, 255, raw - 1)                 # mmseg: 0 -> ignore, v -> v - 1
        assert np.array_equal(ids, expected)
        # the same as LoveDA's official reader of the same file
        off = load_config("configs/stage1_baselines/demo_segformer_mit-b0_loveda-samples.yaml")
        assert np.array_equal(ids, load_mask(LOVEDA_ROOT / f"{'Train' if s.id.startswith('train') else 'Val'}"
                                             f"/Rural/masks_png/{s.id.split('/')[1]}.png", off.dataset))


def test_reduce_zero_label_errors_name_the_key(tmp_path):
    root = mmseg_loveda_layout(tmp_path / "loveDA")
    with pytest.raises(ConfigError, match="reduce_zero_label and dataset.value_map"):
        load_config(ROOT_CFG, [f"dataset.root={root}", "dataset.value_map={1: 0}"])
    # without reduce_zero_label the raw 7 is not a class id of a 7-class table: the error says so
    cfg = load_config(ROOT_CFG, [f"dataset.root={root}", "dataset.reduce_zero_label=false"])
    with pytest.raises(DataError, match="value 7"):
        load_mask(root / "ann_dir/train/0.png", cfg.dataset)


@pytest.mark.parametrize("pairs", [
    ["img_dir/", "ann_dir/"],                  # relative, no leading slash
    ["/img_dir/", "/ann_dir/"],                # root-relative with a leading slash
    "absolute",                                # the folders written as absolute paths
])
def test_mask_from_image_relative_and_absolute(tmp_path, pairs):
    root = mmseg_loveda_layout(tmp_path / "loveDA")
    if pairs == "absolute":
        pairs = [f"{root}/img_dir/", f"{root}/ann_dir/"]
    cfg = load_config(ROOT_CFG, [f"dataset.root={root}", f"dataset.mask_from_image={pairs}"])
    samples = discover_samples(cfg.dataset)
    assert sorted(s.id for s in samples) == ["train/0", "train/1", "val/2"]
    for s in samples:
        assert s.mask_path.resolve() == (root / "ann_dir" / s.id).with_suffix(".png").resolve()


def test_part_masks_merge_to_the_real_labels(tmp_path):
    expected = dubai_part_layout(tmp_path / "parts")
    cfg = load_config(part_config(tmp_path / "parts"))
    assert cfg.dataset.type == "part_mask" and cfg.dataset.num_classes == 6
    samples = discover_samples(cfg.dataset)
    assert [s.id for s in samples] == [f"images/{n}" for n in range(6)]
    # "00004" in the part file names matches image "4.jpg"; files lie in per-thousand-style subfolders
    assert samples[4].mask_path == tmp_path / "parts" / "masks" / "1" / "00004"
    ds = build_dataset(cfg, "train")
    assert len(ds) == 4
    for i, s in enumerate(ds.samples):
        image, mask = ds.load_pair(i)
        assert np.array_equal(mask, expected[s.id.split("/")[1]])
        assert image.shape[:2] == mask.shape
    item = ds[0]
    assert set(torch.unique(item["mask"]).tolist()) <= set(range(6))


def test_part_masks_paint_in_order_and_scale_up(tmp_path):
    expected = dubai_part_layout(tmp_path / "parts", crop=128)
    cfg = load_config(part_config(tmp_path / "parts"))
    s = discover_samples(cfg.dataset)[0]
    # an overlapping part: "vegetation" painted over the whole image wins (last in the order)...
    Image.fromarray(np.full((128, 128), 255, np.uint8)).save(s.mask_path.parent / f"{s.mask_path.name}_vegetation.png")
    assert (load_mask(s.mask_path, cfg.dataset) == PART_CLASSES.index("vegetation")).all()
    # ...and loses where it comes first
    cfg2 = load_config(part_config(tmp_path / "parts"), ["dataset.name=reordered"])
    cfg2.dataset.part_masks.parts = {"vegetation": "vegetation", **{c: c for c in PART_CLASSES[1:5]}}
    got = load_mask(s.mask_path, cfg2.dataset)
    ref = expected["0"]
    covered = (ref >= 1) & (ref <= 4)
    assert np.array_equal(got[covered], ref[covered]) and (got[~covered] == PART_CLASSES.index("vegetation")).all()
    # a 2x larger image: the merged label is scaled up to it (CelebAMask-HQ: 512 masks, 1024 images)
    img = Image.open(s.image_path)
    img.resize((256, 256)).save(s.image_path)
    ds = build_dataset(load_config(part_config(tmp_path / "parts")), "train")
    image, mask = ds.load_pair(ds.index_of(s.id))
    assert mask.shape == (256, 256) and np.array_equal(mask[::2, ::2], load_mask(s.mask_path, cfg.dataset))


def test_part_mask_errors(tmp_path):
    dubai_part_layout(tmp_path / "parts", crop=64)
    path = part_config(tmp_path / "parts")
    with pytest.raises(ConfigError, match="part_masks.parts names class"):
        load_config(path, ["dataset.part_masks.parts={skin: skin}"])
    with pytest.raises(DataError, match="part_masks.dir"):
        discover_samples(load_config(path, ["dataset.part_masks.dir=nowhere"]).dataset)
    (tmp_path / "parts" / "images" / "99.jpg").write_bytes((tmp_path / "parts" / "images" / "0.jpg").read_bytes())
    with pytest.raises(DataError, match="99.jpg"):
        discover_samples(load_config(path).dataset)
