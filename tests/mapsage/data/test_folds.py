"""Grouped k-fold CV on the demo data: whole tiles per fold, near-duplicates kept together, class presence
balanced, and each fold's run sees the folds through the ordinary split machinery."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "configs/stage1_baselines/demo_segformer_mit-b0_dubai.yaml"


@pytest.fixture(scope="module")
def demo():
    from mapsage.config import load_config
    from mapsage.data.samples import discover_samples

    cfg = load_config(DEMO, ["dataset.split.folds=3"])
    return cfg, discover_samples(cfg.dataset)


def test_three_folds_never_split_a_tile(demo):
    from mapsage.config import load_config
    from mapsage.data.splits import assign_splits

    cfg, samples = demo
    val_of = {}
    for fold in range(3):
        c = load_config(DEMO, ["dataset.split.folds=3", f"dataset.split.fold={fold}"])
        a = assign_splits(samples, c.dataset)
        assert set(a.values()) == {"train", "val"}
        for s in samples:
            if a[s.id] == "val":
                assert s.id not in val_of, f"{s.id} validated in folds {val_of[s.id]} and {fold}"
                val_of[s.id] = fold
    assert len(val_of) == len(samples)                 # every image is validated exactly once
    tile_folds = {}
    for s in samples:
        tile_folds.setdefault(s.group, set()).add(val_of[s.id])
    assert all(len(f) == 1 for f in tile_folds.values()), tile_folds     # no tile in two folds
    assert len(tile_folds) == 8 and len({next(iter(f)) for f in tile_folds.values()}) == 3
    sizes = sorted(sum(1 for v in val_of.values() if v == f) for f in range(3))
    assert sizes == [18, 27, 27]                       # 9-image tiles: the most even cut there is


def test_near_duplicates_share_a_fold(demo, tmp_path):
    from mapsage.data.folds import assign_folds, near_duplicate_links
    from mapsage.data.samples import Sample

    cfg, samples = demo
    a, b, c = samples[0], samples[9], samples[18]
    assert len({a.group, b.group, c.group}) == 3
    # a flipped copy of tile a's image filed under another group is found by the perceptual hashes
    img = cv2.imread(str(a.image_path))
    copy = tmp_path / "copy.jpg"
    cv2.imwrite(str(copy), cv2.flip(img, 1), [cv2.IMWRITE_JPEG_QUALITY, 85])
    dup = Sample(id="Tile 99/images/copy.jpg", image_path=copy, mask_path=a.mask_path, domain=None, group="Tile 99")
    links = near_duplicate_links([a, b, c, dup], 6)
    assert [(x, y) for x, y, _ in links] == [(a.id, dup.id)]
    # forced apart by class presence otherwise, the link keeps them together
    pres = np.array([[1, 0], [0, 1], [1, 0], [1, 0]], dtype=bool)
    folds = assign_folds([a, b, c, dup], cfg.dataset, 2, presence=pres, links=links)
    assert folds[a.id] == folds[dup.id]
    assert len(set(folds.values())) == 2


def test_stratified_by_class_presence(demo):
    from mapsage.data.folds import assign_folds
    from mapsage.data.samples import Sample

    cfg, samples = demo
    # six one-image groups; class 1 appears in two of them: with two folds each fold gets one
    ss = [Sample(id=f"g{i}/x.jpg", image_path=samples[0].image_path, mask_path=None, domain=None, group=f"g{i}")
          for i in range(6)]
    pres = np.zeros((6, 2), dtype=bool)
    pres[:, 0] = True
    pres[[0, 1], 1] = True
    folds = assign_folds(ss, cfg.dataset, 2, presence=pres, links=[])
    assert folds["g0/x.jpg"] != folds["g1/x.jpg"]
    assert sorted(list(folds.values()).count(f) for f in (0, 1)) == [3, 3]


def test_too_many_folds_is_a_config_error(demo):
    from mapsage.config import ConfigError
    from mapsage.data.folds import assign_folds

    cfg, samples = demo
    with pytest.raises(ConfigError, match="dataset.split.folds=9: the data has only 8 independent group"):
        assign_folds(samples, cfg.dataset, 9, presence=np.ones((len(samples), 5), bool), links=[])
