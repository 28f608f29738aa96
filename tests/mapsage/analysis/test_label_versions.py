"""Corrections as label versions on real data: a correction becomes a new, immutable version; a data loader on
"original + corrections vN" reads the corrected pixels (compared with the original); the export writes the
dataset's own mask format, and the same config reads it back."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from tests.support.data import dubai_cfg, loveda_cfg


def _corrupt(mask: np.ndarray, cls: int, box: tuple[int, int, int, int]) -> np.ndarray:
    y0, y1, x0, x1 = box
    out = mask.copy()
    out[y0:y1, x0:x1] = cls
    return out


def test_correction_is_a_new_version_and_the_loader_reads_it(tmp_workspace):
    import torch

    from mapsage.analysis import labels as lv
    from mapsage.data import build_dataset

    cfg = dubai_cfg("dataset.max_samples=3")
    ds = build_dataset(cfg, "train")
    a, b = ds.samples[0].id, ds.samples[1].id
    orig_a, orig_b = ds.load_mask(0).copy(), ds.load_mask(1).copy()
    folder = lv.labels_root(cfg.dataset)
    assert folder == tmp_workspace / "labels" / cfg.dataset.name and lv.latest_version(folder) == 0

    water = cfg.dataset.classes.index("water")
    fix_a = _corrupt(orig_a, water, (10, 60, 20, 90))
    changed = int((fix_a != orig_a).sum())
    assert changed > 0
    v1 = lv.add_version(folder, {a: fix_a}, reviewer="ana", num_classes=cfg.dataset.num_classes,
                        sources={a: {"source": "edit", "run": "r1", "variant": "raw"}}, originals={a: orig_a},
                        dataset=cfg.dataset.name, note="water edge")
    assert v1["version"] == 1 and v1["reviewer"] == "ana" and v1["tiles"][a]["changed_pixels"] == changed
    assert v1["tiles"][a]["source"] == "edit" and v1["created_at"] > 0
    fix_b = _corrupt(orig_b, 0, (0, 30, 0, 30))
    v2 = lv.add_version(folder, {b: fix_b}, reviewer="bo", num_classes=cfg.dataset.num_classes)
    fix_a2 = _corrupt(orig_a, water, (100, 120, 100, 140))
    v3 = lv.add_version(folder, {a: fix_a2}, reviewer="ana", num_classes=cfg.dataset.num_classes)
    assert (v2["version"], v2["parent"], v3["version"]) == (2, 1, 3)
    # the originals on disk are untouched, and each version keeps its own file
    assert np.array_equal(build_dataset(cfg, "train").load_mask(0), orig_a)
    assert np.array_equal(lv.read_correction(folder / "v1" / v1["tiles"][a]["file"]), fix_a)
    assert [h["version"] for h in lv.history(folder, a)] == [1, 3]

    def loader_masks(version):
        c = dubai_cfg("dataset.max_samples=3", f"dataset.label_version={version}")
        d = build_dataset(c, "train", train=False)
        dl = torch.utils.data.DataLoader(d, batch_size=1, shuffle=False, num_workers=0)
        return {batch["id"][0]: batch["mask"][0].numpy() for batch in dl}

    m1 = loader_masks(1)
    assert np.array_equal(m1[a], fix_a) and not np.array_equal(m1[a], orig_a)
    assert int((m1[a] != orig_a).sum()) == changed and (m1[a][10:60, 20:90] == water).all()
    assert np.array_equal(m1[b], orig_b)                                 # v1 does not touch b
    m2 = loader_masks(2)
    assert np.array_equal(m2[a], fix_a) and np.array_equal(m2[b], fix_b)
    m3 = loader_masks(3)
    assert np.array_equal(m3[a], fix_a2) and np.array_equal(m3[b], fix_b)  # the newest correction wins
    # the training transform crops the corrected label too (same loader path)
    tr = build_dataset(dubai_cfg("dataset.max_samples=3", "dataset.label_version=1"), "train", train=True)
    assert tr.load_mask(0) is not None and np.array_equal(tr.load_mask(0), fix_a)

    with pytest.raises(lv.LabelVersionError, match=r"dataset.label_version: v9 does not exist.*v1, v2, v3"):
        build_dataset(dubai_cfg("dataset.label_version=9"), "train")
    with pytest.raises(lv.LabelVersionError, match="neither class ids"):
        lv.add_version(folder, {a: np.full((4, 4), 7, np.uint8)}, num_classes=cfg.dataset.num_classes)


@pytest.mark.parametrize("which", ["dubai", "loveda"])
def test_export_writes_the_datasets_own_format_and_reads_back(tmp_workspace, tmp_path, which):
    from mapsage.analysis import labels as lv
    from mapsage.data import build_dataset

    cfg = dubai_cfg("dataset.max_samples=2") if which == "dubai" else loveda_cfg()
    split = "train"
    ds = build_dataset(cfg, split)
    tile = ds.samples[0].id
    orig = ds.load_mask(0).copy()
    fix = _corrupt(orig, 1, (5, 50, 5, 50))
    fix[60:70, 60:70] = 255                                          # ignored pixels have a stored form too
    folder = lv.labels_root(cfg.dataset)
    lv.add_version(folder, {tile: fix}, reviewer="t", num_classes=cfg.dataset.num_classes)
    out = tmp_path / "export"
    info = lv.export_version(cfg, 1, out)
    assert info["masks_corrected"] == 1 and info["images"] >= 2
    again = copy.deepcopy(cfg)
    again.dataset.root = str(out)
    back = build_dataset(again, split)
    i = back.index_of(tile)
    assert np.array_equal(back.load_mask(i), fix)                        # decoded by the dataset's own decoder
    j = next(k for k, s in enumerate(back.samples) if s.id != tile)
    assert np.array_equal(back.load_mask(j), ds.load_mask(ds.index_of(back.samples[j].id)))
    raw = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(back.samples[i].mask_path))
    if which == "dubai":
        assert raw.ndim == 3 and raw.shape[2] == 3                       # RGB colour codes
    else:
        assert raw.ndim == 2 and raw.min() == 0 and raw.max() <= 7       # LoveDA raw ids, 0 = no-data
    with pytest.raises(lv.LabelVersionError, match="not empty"):
        lv.export_version(cfg, 1, out)
