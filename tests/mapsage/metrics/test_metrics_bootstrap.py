"""Dataset-level mIoU from tile rows and the paired bootstrap, on tiles cut from the real LoveDA masks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mapsage.metrics import SegMetrics, miou_from_tile_rows, paired_bootstrap
from tests.support.metrics import IGN, assert_close, loveda_masks


def _tiles(size: int = 256) -> list[tuple[str, np.ndarray]]:
    out = []
    for name, lab in loveda_masks():
        for y in range(0, 1024, size):
            for x in range(0, 1024, size):
                out.append((f"{name}/{y}_{x}", lab[y:y + size, x:x + size]))
    return out


def _noisy(lab: np.ndarray, rate: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = lab.copy()
    flip = rng.random(lab.shape) < rate
    out[flip] = rng.integers(0, 7, int(flip.sum()))
    out[lab == IGN] = 0
    return out


def _rows(rate: float, seed: int, tiles=None) -> tuple[list[dict], SegMetrics]:
    m = SegMetrics(7, keep_tiles=True)
    for i, (tid, lab) in enumerate(tiles or _tiles()):
        m.update(_noisy(lab, rate, seed * 1000 + i), lab, tile=tid, tags="Rural")
    return m.tile_rows(), m


def test_miou_from_tile_rows_equals_accumulating_the_chosen_tiles():
    tiles = _tiles()
    rows, m = _rows(0.2, 1, tiles)
    assert_close(miou_from_tile_rows(rows), m.result().miou)
    assert_close(miou_from_tile_rows(rows, metric="mbiou"), m.result().mbiou)
    idx = [0, 0, 5, 7, 7, 7, 30]                           # a bootstrap draw repeats tiles
    again = SegMetrics(7)
    for i in idx:
        tid, lab = tiles[i]
        again.update(_noisy(lab, 0.2, 1000 + i), lab)
    assert_close(miou_from_tile_rows(rows, idx), again.result().miou)
    assert_close(miou_from_tile_rows(rows, np.asarray(idx), metric="mbiou"), again.result().mbiou)
    assert_close(miou_from_tile_rows(pd.DataFrame(rows), idx), again.result().miou)   # rows from the store
    with pytest.raises(IndexError):
        miou_from_tile_rows(rows, [len(rows)])


def test_paired_bootstrap_finds_a_real_difference_and_no_difference():
    tiles = _tiles()
    good, mg = _rows(0.05, 1, tiles)
    bad, mb = _rows(0.30, 2, tiles)
    res = paired_bootstrap(bad, good, n=500, seed=3)          # B (good) against baseline A (bad)
    assert_close(res["delta"], mg.result().miou - mb.result().miou)
    assert res["significant"] and 0 < res["ci_low"] <= res["delta"] <= res["ci_high"]
    assert res["n_tiles"] == 48 and res["n_boot"] == 500 and res["metric"] == "miou"
    assert res["a"] == pytest.approx(mb.result().miou) and res["b"] == pytest.approx(mg.result().miou)
    assert res["p_value"] < 0.01
    assert res["mbiou"]["significant"] and res["mbiou"]["delta"] > 0
    assert_close(res["mbiou"]["delta"], mg.result().mbiou - mb.result().mbiou)
    flipped = paired_bootstrap(good, bad, n=500, seed=3)
    assert flipped["significant"] and flipped["ci_high"] < 0
    assert_close(flipped["delta"], -res["delta"])
    same = paired_bootstrap(good, list(reversed(good)), n=200, seed=0)  # pairing is by tile id, not order
    assert same["delta"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0 and not same["significant"]
    # the same seed gives the same interval
    assert paired_bootstrap(bad, good, n=500, seed=3)["ci_low"] == res["ci_low"]


def test_paired_bootstrap_replicate_is_the_dataset_miou_of_the_draw():
    tiles = _tiles(512)
    a, _ = _rows(0.1, 4, tiles)
    b, _ = _rows(0.2, 5, tiles)
    res = paired_bootstrap(a, b, n=1, seed=11)
    draw = np.random.default_rng(11).integers(0, len(tiles), size=(1, len(tiles)))[0]
    expected = miou_from_tile_rows(b, draw) - miou_from_tile_rows(a, draw)
    assert_close(res["ci_low"], expected, 1e-12)
    assert_close(res["ci_high"], expected, 1e-12)


def test_paired_bootstrap_refuses_unpaired_rows():
    rows, _ = _rows(0.1, 1, _tiles(512))
    with pytest.raises(ValueError, match="different tiles"):
        paired_bootstrap(rows, rows[:-1])
    with pytest.raises(ValueError, match="duplicate"):
        paired_bootstrap(rows + rows[:1], rows + rows[:1])
    with pytest.raises(ValueError, match="no tile rows"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="n must be"):
        paired_bootstrap(rows, rows, n=0)
