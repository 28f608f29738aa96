"""Datasets on the real data: discovery, the sample contract, LoveDA's official layout, splits by tile saved with
the run, normalisation from the backbone, and every error path (corrupt image, size mismatch, missing mask...)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from mapsage.config import ConfigError
from mapsage.data import (
    SPLIT_FILE,
    Sample,
    assign_splits,
    build_dataset,
    denormalize,
    discover_samples,
    get_normalization,
    load_image,
    load_split,
    normalization_info,
    save_split,
    split_table,
)
from mapsage.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from mapsage.errors import DataError
from tests.support.data import DUBAI_ROOT, LOVEDA_CLASSES, copy_dubai_tiles, copy_loveda, dubai_cfg, loveda_cfg

torch.set_num_threads(1)


# -------------------------------------------------------------------------------------------------------------
# discovery and the sample contract


def test_dubai_discovery_ids_groups_and_masks():
    samples = discover_samples(dubai_cfg().dataset)
    assert len(samples) == 72
    assert samples[0].id == "Tile 1/image_part_001" and samples[0].group == "Tile 1"
    assert all(isinstance(s, Sample) and s.mask_path.is_file() and s.image_path.is_file() for s in samples)
    assert {s.group for s in samples} == {f"Tile {i}" for i in range(1, 9)}
    assert all(s.domain is None for s in samples)
    assert len({s.id for s in samples}) == 72


def test_dataset_item_contract_full_tile():
    cfg = dubai_cfg()
    ds = build_dataset(cfg, "val")
    item = ds[0]
    s = ds.samples[0]
    h, w = Image.open(s.image_path).size[::-1]
    assert item["image"].dtype == torch.float32 and tuple(item["image"].shape) == (3, h, w)
    assert item["mask"].dtype == torch.int64 and tuple(item["mask"].shape) == (h, w)
    assert set(torch.unique(item["mask"]).tolist()) <= {0, 1, 2, 3, 4, 255}
    assert item["id"] == s.id and item["domain"] == "" and item["path"] == str(s.image_path)
    # normalised with the backbone's (ImageNet) statistics, and denormalize inverts it exactly
    img = load_image(s.image_path)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    ref = (torch.from_numpy(img).permute(2, 0, 1).float() / 255 - mean) / std
    assert torch.allclose(item["image"], ref, atol=1e-6)
    assert np.array_equal(denormalize(item["image"], cfg), img)
    assert ds[-1]["id"] == ds.samples[-1].id
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_mask_cache_is_reused_and_protected():
    ds = build_dataset(dubai_cfg(), "val", cache_mb=64)
    first = ds.load_mask(0)
    assert ds.load_mask(0) is first and not first.flags.writeable
    item = ds[0]
    item["mask"][:] = 0                      # the returned tensor is a copy: the cache is untouched
    assert np.array_equal(ds.load_mask(0), first) and (first != 0).any()
    tiny = build_dataset(dubai_cfg(), "val", cache_mb=1)       # 1 MiB cache: older masks are evicted
    tiny.load_mask(0), tiny.load_mask(1)
    assert tiny._cached <= 2 ** 20


def test_dataset_pickles_light_for_spawned_workers():
    import pickle
    ds = build_dataset(dubai_cfg(), "val", train=True)
    torch.manual_seed(0)
    first = ds[0]                                  # fills the mask cache and the colour lookup table
    blob = pickle.dumps(ds)
    assert len(blob) < 1_000_000                   # neither the 16 MiB colour table nor cached masks travel
    clone = pickle.loads(blob)
    assert clone.ids == ds.ids and len(clone._cache) == 0
    assert np.array_equal(clone.load_mask(0), ds.load_mask(0))
    assert tuple(clone[0]["image"].shape) == tuple(first["image"].shape)


# -------------------------------------------------------------------------------------------------------------
# splits


def test_dubai_split_is_by_whole_tile_and_deterministic():
    cfg = dubai_cfg()
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    tg, vg = {s.group for s in train.samples}, {s.group for s in val.samples}
    assert not tg & vg and len(tg | vg) == 8
    assert (len(tg), len(vg)) == (6, 2)                    # ratios 0.75 / 0.25 of 8 tiles
    assert len(train) == 54 and len(val) == 18
    again = build_dataset(dubai_cfg(), "val")
    assert again.ids == val.ids
    other_seed = {s.group for s in build_dataset(dubai_cfg("dataset.split.seed=1"), "val").samples}
    assert other_seed != vg                             # the seed really drives the assignment


def test_group_assignment_is_stable_when_another_tile_is_added(tmp_path):
    # a tile's split depends on (seed, tile name), not on the other tiles: hashing orders groups
    cfg_all = dubai_cfg()
    order_all = assign_splits(discover_samples(cfg_all.dataset), cfg_all.dataset)
    root = copy_dubai_tiles(tmp_path, tiles=[f"Tile {i}" for i in range(1, 9)], parts=(1,))
    cfg = dubai_cfg(f"dataset.root={root}", "dataset.split.ratios={train: 0.5, val: 0.5}")
    a = assign_splits(discover_samples(cfg.dataset), cfg.dataset)
    shutil.rmtree(root / "Tile 8")
    b = assign_splits(discover_samples(cfg.dataset), cfg.dataset)
    assert len(a) == 8 and len(b) == 7 and len(order_all) == 72
    assert sum(a[k] == b[k] for k in b) >= 6                 # at most the tile at the cut moves


def test_explicit_assign_and_errors():
    cfg = dubai_cfg("dataset.split.assign={train: ['Tile 1', 'Tile 2', 'Tile 3', 'Tile 4', 'Tile 5', 'Tile 6'], "
                    "val: ['Tile 7'], test: ['Tile 8']}")
    assert {s.group for s in build_dataset(cfg, "test").samples} == {"Tile 8"}
    with pytest.raises(ConfigError, match=r"dataset.split.assign.val: group 'Tile 9' matches no sample; did you "
                                          r"mean 'Tile [0-9]'"):
        build_dataset(dubai_cfg("dataset.split.assign={train: ['Tile 1'], val: ['Tile 9']}"), "val")
    with pytest.raises(ConfigError, match=r"leaves group\(s\) \['Tile 2'"):
        build_dataset(dubai_cfg("dataset.split.assign={train: ['Tile 1'], val: ['Tile 3']}"), "val")
    with pytest.raises(ConfigError, match=r"split 'tset' is not one of \['train', 'val'\]"):
        build_dataset(dubai_cfg(), "tset")
    with pytest.raises(ConfigError, match="group_regex .* does not match sample id"):
        discover_samples(dubai_cfg("dataset.split.group_regex=^(?P<group>Kachel [0-9]+)/").dataset)


def test_save_split_writes_split_json_and_list_method_reproduces_it(tmp_path):
    cfg = dubai_cfg()
    path = save_split(cfg.dataset, tmp_path / "run")
    assert path.name == SPLIT_FILE
    data = json.loads(path.read_text())
    assert data["method"] == "by_group" and data["seed"] == cfg.dataset.split.seed
    assert data["counts"] == {"train": 54, "val": 18}
    assert sorted(data["groups"]["train"] + data["groups"]["val"]) == sorted(f"Tile {i}" for i in range(1, 9))
    assert data["groups_in_several_splits"] == []
    assert load_split(tmp_path / "run") == data
    # reuse a run's split exactly: method list with that file
    reuse = dubai_cfg("dataset.split.method=list", f"dataset.split.list_file={path}",
                      "dataset.split.seed=99")
    assert build_dataset(reuse, "val").ids == data["samples"]["val"]
    # the text list format
    lst = tmp_path / "split.txt"
    lst.write_text("# id split\n" + "\n".join(f"{sid} {'val' if sid.startswith('Tile 1/') else 'train'}"
                                             for sid in data["samples"]["train"] + data["samples"]["val"]))
    ds = build_dataset(dubai_cfg("dataset.split.method=list", f"dataset.split.list_file={lst}"), "val")
    assert len(ds) == 9 and {s.group for s in ds.samples} == {"Tile 1"}
    lst.write_text("Tile 1/image_part_001 train\n")
    with pytest.raises(DataError, match=r"71 sample\(s\) are not listed"):
        build_dataset(dubai_cfg("dataset.split.method=list", f"dataset.split.list_file={lst}"), "train")


def test_max_samples_and_leak_list(tmp_path):
    capped = build_dataset(dubai_cfg("dataset.max_samples=5"), "train")
    assert len(capped) == 5
    leak = tmp_path / "earthvqa_ids.txt"
    leak.write_text("# images that duplicate other data\nTile 1/image_part_002\nimage_part_003.jpg\n")
    ds = build_dataset(dubai_cfg(f"dataset.leak_list={leak}"), "train")
    assert "Tile 1/image_part_002" in ds.excluded and "Tile 1/image_part_002" not in ds.ids
    assert not any(s.image_path.name == "image_part_003.jpg" for s in ds.samples)
    assert len(ds) + len(ds.excluded) == 54
    assert build_dataset(dubai_cfg(f"dataset.leak_list={leak}"), "val").excluded == []    # only training


# -------------------------------------------------------------------------------------------------------------
# LoveDA official layout


def test_loveda_official_splits_domains_and_ids():
    cfg = loveda_cfg()
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "Val")
    assert train.classes == LOVEDA_CLASSES and train.num_classes == 7 and train.ignore_index == 255
    assert train.ids == ["Train/Rural/0", "Train/Rural/1"] and val.ids == ["Val/Rural/2"]
    assert {s.domain for s in train.samples} == {"Rural"} and all(s.split == "train" for s in train.samples)
    item = val[0]
    assert item["domain"] == "Rural" and tuple(item["mask"].shape) == (1024, 1024)
    assert build_dataset(cfg, "train", domain="rural").ids == train.ids
    with pytest.raises(DataError, match="has no samples"):
        build_dataset(cfg, "train", domain="Urban")        # the bundled tiles are Rural only
    with pytest.raises(ConfigError, match="domain 'Suburban' is not in"):
        build_dataset(cfg, "train", domain="Suburban")
    with pytest.raises(DataError, match=r"split 'test' of loveda-samples has no samples \(looked under .*Test\)"):
        build_dataset(cfg, "test")
    with pytest.raises(ConfigError, match="LoveDA uses its official Train/Val/Test folders only"):
        build_dataset(loveda_cfg("dataset.split.method=by_group"), "train")


def test_loveda_test_split_is_predict_only_and_domains_selectable(tmp_path):
    root = copy_loveda(tmp_path)
    (root / "Test/Urban/images_png").mkdir(parents=True)
    (root / "Train/Urban/images_png").mkdir(parents=True)
    (root / "Train/Urban/masks_png").mkdir(parents=True)
    shutil.copy(root / "Val/Rural/images_png/2.png", root / "Test/Urban/images_png/5000.png")
    shutil.copy(root / "Train/Rural/images_png/0.png", root / "Train/Urban/images_png/1400.png")
    shutil.copy(root / "Train/Rural/masks_png/0.png", root / "Train/Urban/masks_png/1400.png")
    cfg = loveda_cfg(f"dataset.root={root}")
    test = build_dataset(cfg, "test")
    assert test.ids == ["Test/Urban/5000"] and not test.has_masks and test.samples[0].mask_path is None
    item = test[0]
    assert "mask" not in item and item["domain"] == "Urban" and tuple(item["image"].shape) == (3, 1024, 1024)
    with pytest.raises(DataError, match="predict-only"):
        build_dataset(cfg, "test", train=True)
    assert build_dataset(cfg, "train", domain="Urban").ids == ["Train/Urban/1400"]
    assert len(build_dataset(cfg, "train")) == 3
    only_rural = loveda_cfg(f"dataset.root={root}", "dataset.domains=[Rural]")
    assert {s.domain for s in build_dataset(only_rural, "train").samples} == {"Rural"}
    # a labelled split without its masks folder is an error naming the folder
    shutil.rmtree(root / "Val/Rural/masks_png")
    with pytest.raises(DataError, match=r"Val/Rural/masks_png: mask folder not found"):
        build_dataset(cfg, "val")


# -------------------------------------------------------------------------------------------------------------
# error paths, each naming the file


def test_corrupt_image_names_the_file(tmp_path):
    root = copy_dubai_tiles(tmp_path, tiles=("Tile 2",), parts=(1, 2))
    bad = root / "Tile 2/images/image_part_002.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])                  # truncated JPEG
    ds = build_dataset(dubai_cfg(f"dataset.root={root}", "dataset.split.ratios={train: 1.0}"), "train")
    ds[0]
    with pytest.raises(DataError) as info:
        ds[1]
    assert str(bad) in str(info.value) and "cannot read image" in str(info.value)
    (root / "Tile 2/images/image_part_001.jpg").write_text("not an image at all")
    with pytest.raises(DataError, match=r"image_part_001.jpg: cannot read image"):
        ds[0]


def test_corrupt_mask_names_the_file(tmp_path):
    root = copy_dubai_tiles(tmp_path, tiles=("Tile 2",), parts=(1,))
    bad = root / "Tile 2/masks/image_part_001.png"
    bad.write_bytes(bad.read_bytes()[:200])
    ds = build_dataset(dubai_cfg(f"dataset.root={root}", "dataset.split.ratios={train: 1.0}"), "train")
    with pytest.raises(DataError, match=r"masks/image_part_001.png: cannot read mask"):
        ds[0]


def test_size_mismatch_names_both_files(tmp_path):
    root = copy_dubai_tiles(tmp_path, tiles=("Tile 2",), parts=(1,))
    mask_path = root / "Tile 2/masks/image_part_001.png"
    img = Image.open(mask_path)
    img.crop((0, 0, img.width - 3, img.height)).save(mask_path)
    ds = build_dataset(dubai_cfg(f"dataset.root={root}", "dataset.split.ratios={train: 1.0}"), "train")
    with pytest.raises(DataError) as info:
        ds[0]
    msg = str(info.value)
    assert str(mask_path) in msg and "image_part_001.jpg" in msg
    assert f"{img.width - 3}x{img.height}" in msg and f"{img.width}x{img.height}" in msg


def test_missing_mask_names_the_image_and_expected_mask(tmp_path):
    root = copy_dubai_tiles(tmp_path, tiles=("Tile 2",), parts=(1, 2))
    (root / "Tile 2/masks/image_part_002.png").unlink()
    with pytest.raises(DataError) as info:
        build_dataset(dubai_cfg(f"dataset.root={root}"), "train")
    msg = str(info.value)
    assert "1 image(s) have no mask" in msg and "images/image_part_002.jpg" in msg
    assert "expected" in msg and "masks/image_part_002.png" in msg
    lv = copy_loveda(tmp_path)
    (lv / "Train/Rural/masks_png/1.png").unlink()
    with pytest.raises(DataError, match=r"Train/Rural/images_png/1.png -> expected .*masks_png/1.png"):
        build_dataset(loveda_cfg(f"dataset.root={lv}"), "train")


def test_missing_root_and_empty_glob_name_the_key(tmp_path):
    with pytest.raises(DataError, match=r"dataset.root: folder .*nowhere not found"):
        build_dataset(dubai_cfg(f"dataset.root={tmp_path / 'nowhere'}"), "train")
    with pytest.raises(DataError, match=r"dataset.image_glob: no file under .* matches '\*\*/\*.tif'"):
        build_dataset(dubai_cfg("dataset.image_glob=**/*.tif"), "train")
    with pytest.raises(ConfigError, match="mask_from_image must be pairs"):
        build_dataset(dubai_cfg("dataset.mask_from_image=[/images/]"), "train")


def test_image_modes_are_converted_to_rgb(tmp_path):
    src = load_image(DUBAI_ROOT / "Tile 2/images/image_part_001.jpg")
    Image.fromarray(src).convert("L").save(tmp_path / "grey.png")
    Image.fromarray(src).convert("RGBA").save(tmp_path / "rgba.png")
    grey, rgba = load_image(tmp_path / "grey.png"), load_image(tmp_path / "rgba.png")
    assert grey.shape == src.shape and np.all(grey[..., 0] == grey[..., 1])
    assert np.array_equal(rgba, src) and rgba.flags.writeable
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(DataError, match="16/32-bit"):
        load_image(tmp_path / "deep.png")
    with pytest.raises(DataError, match="image file not found"):
        load_image(tmp_path / "none.jpg")


# -------------------------------------------------------------------------------------------------------------
# normalisation from the backbone's pretrained configuration


def test_normalization_sources():
    info = normalization_info(dubai_cfg())
    assert info["mean"] == IMAGENET_MEAN and info["std"] == IMAGENET_STD and "mit_b0" in info["source"]
    sat = normalization_info(dubai_cfg("model.encoder=tu-vit_large_patch16_dinov3.sat493m"))
    assert sat["mean"] == pytest.approx((0.430, 0.411, 0.296)) and sat["std"] == pytest.approx((0.213, 0.156, 0.143))
    assert "timm pretrained_cfg" in sat["source"]
    assert get_normalization(dubai_cfg("model.encoder=xception")) == ((0.5,) * 3, (0.5,) * 3)
    own = dubai_cfg("model.mean=[0.3, 0.3, 0.3]", "model.std=[0.2, 0.2, 0.2]")
    assert get_normalization(own) == ((0.3,) * 3, (0.2,) * 3)
    with pytest.raises(ConfigError, match="look like 0..255 values"):
        get_normalization(dubai_cfg("model.mean=[123.7, 116.3, 103.5]", "model.std=[58.4, 57.1, 57.4]"))
    with pytest.raises(ConfigError, match="set both"):
        get_normalization(dubai_cfg("model.mean=[0.3, 0.3, 0.3]"))
    with pytest.raises(ConfigError, match=r"model.encoder: no pretrained normalisation .* set model.mean and "
                                          r"model.std"):
        get_normalization(dubai_cfg("model.encoder=my_own_net"))


def test_normalization_from_a_weights_sidecar(tmp_path):
    weights = tmp_path / "mit_b2_earthvqa.pth"
    weights.write_bytes(b"")
    (tmp_path / "mit_b2_earthvqa.json").write_text(json.dumps({"mean": [0.4, 0.41, 0.3], "std": [0.2, 0.15, 0.14]}))
    info = normalization_info(dubai_cfg(f"model.pretrained={weights}"))
    assert info["mean"] == (0.4, 0.41, 0.3) and "sidecar" in info["source"]


def test_split_table_reports_no_group_in_two_splits():
    table = split_table(dubai_cfg().dataset)
    assert table["groups_in_several_splits"] == []
    assert sum(table["counts"].values()) == 72
