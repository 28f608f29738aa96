"""Property tests of the metrics engine (hypothesis): perfect prediction, ignore-only images, absent classes,
class-id permutations, backend agreement, and Boundary IoU against a pixel-loop brute force."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapsage.metrics import SegMetrics
from tests.support.metrics import IGN, plain_metrics

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def label_maps(draw, max_classes=5, max_side=14, ignore=True):
    C = draw(st.integers(1, max_classes))
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    # blocky maps (real masks are regions, not salt noise), then some noise and some ignored pixels
    bh, bw = rng.integers(1, 5), rng.integers(1, 5)
    small = rng.integers(0, C, (-(-h // bh), -(-w // bw)))
    lab = np.kron(small, np.ones((bh, bw), np.int64))[:h, :w]
    noise = rng.random((h, w)) < 0.1
    lab[noise] = rng.integers(0, C, int(noise.sum()))
    if ignore and draw(st.booleans()):
        lab[rng.random((h, w)) < 0.15] = IGN
    pred = lab.copy()
    flip = rng.random((h, w)) < draw(st.sampled_from([0.0, 0.1, 0.4]))
    pred[flip] = rng.integers(0, C, int(flip.sum()))
    pred[lab == IGN] = rng.integers(0, C, int((lab == IGN).sum()))
    return C, pred.astype(np.uint8), lab.astype(np.uint8)


def _same(a: float, b: float, tol: float = 1e-12) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def _all_figures(r):
    return [r.miou, r.macc, r.aacc, r.mf1, r.mbiou, r.per_image_miou, *r.iou, *r.biou, *r.acc, *r.f1]


@SETTINGS
@given(label_maps(), st.integers(1, 3), st.booleans())
def test_perfect_prediction_scores_one(case, d, border):
    C, _, lab = case
    m = SegMetrics(C, boundary_px=d, border_is_edge=border)
    m.update(lab, lab)
    r = m.result()
    if r.n_pixels == 0:
        assert math.isnan(r.miou) and r.excluded_classes == r.class_names
        return
    assert r.miou == 1.0 and r.macc == 1.0 and r.aacc == 1.0 and r.mf1 == 1.0 and r.per_image_miou == 1.0
    assert math.isnan(r.mbiou) or r.mbiou == 1.0     # NaN only when no class has a boundary at all
    present = {int(v) for v in np.unique(lab) if v != IGN}
    assert r.excluded_classes == [f"class_{k}" for k in range(C) if k not in present]


@SETTINGS
@given(label_maps(), st.integers(1, 3))
def test_ignore_only_images_change_nothing(case, d):
    C, pred, lab = case
    a = SegMetrics(C, boundary_px=d)
    a.update(pred, lab)
    b = SegMetrics(C, boundary_px=d)
    b.update(np.random.default_rng(0).integers(0, C, (5, 9)), np.full((5, 9), IGN))
    b.update(pred, lab)
    b.update(np.zeros((3, 3), np.int64), np.full((3, 3), IGN))
    ra, rb = a.result(), b.result()
    assert all(_same(x, y) for x, y in zip(_all_figures(ra), _all_figures(rb)))
    assert np.array_equal(ra.confusion, rb.confusion)


@SETTINGS
@given(label_maps(max_classes=4), st.integers(0, 4))
def test_a_class_absent_everywhere_is_excluded(case, slot):
    # insert an unused class id at position `slot`: every figure of the other classes and every mean is unchanged
    C, pred, lab = case
    slot = min(slot, C)
    shift = lambda x: np.where((x >= slot) & (x != IGN), x + 1, x).astype(np.uint8)  # noqa: E731
    a = SegMetrics(C)
    a.update(pred, lab)
    b = SegMetrics(C + 1)
    b.update(shift(pred), shift(lab))
    ra, rb = a.result(), b.result()
    assert f"class_{slot}" in rb.excluded_classes
    assert math.isnan(rb.iou[slot]) and math.isnan(rb.biou[slot]) and math.isnan(rb.f1[slot])
    for key in ("miou", "macc", "aacc", "mf1", "mbiou", "per_image_miou"):
        assert _same(getattr(ra, key), getattr(rb, key)), key
    keep = [k for k in range(C + 1) if k != slot]
    assert all(_same(x, y) for x, y in zip(ra.iou, rb.iou[keep]))


@SETTINGS
@given(label_maps(), st.integers(0, 2 ** 31), st.integers(1, 3), st.booleans())
def test_permuting_class_ids_permutes_results(case, seed, d, border):
    C, pred, lab = case
    perm = np.random.default_rng(seed).permutation(C)
    lut = np.arange(256, dtype=np.uint8)
    lut[:C] = perm
    a = SegMetrics(C, boundary_px=d, border_is_edge=border)
    a.update(pred, lab)
    b = SegMetrics(C, boundary_px=d, border_is_edge=border)
    b.update(lut[pred], lut[lab])
    ra, rb = a.result(), b.result()
    for key in ("iou", "acc", "precision", "f1", "biou"):
        assert all(_same(getattr(ra, key)[k], getattr(rb, key)[perm[k]]) for k in range(C)), key
    assert np.array_equal(rb.confusion[np.ix_(perm, perm)], ra.confusion)
    for key in ("miou", "macc", "aacc", "mf1", "mbiou", "per_image_miou"):
        assert _same(getattr(ra, key), getattr(rb, key), 1e-12), key


def _brute_band(m: np.ndarray, valid: np.ndarray, k: int, d: int, border: bool) -> np.ndarray:
    """Pixel loops: a valid pixel of class k whose (2d+1) window holds a valid pixel of another class (or leaves
    the image, with border)."""
    h, w = m.shape
    out = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            if not valid[y, x] or m[y, x] != k:
                continue
            for yy in range(y - d, y + d + 1):
                for xx in range(x - d, x + d + 1):
                    if not (0 <= yy < h and 0 <= xx < w):
                        if border:
                            out[y, x] = True
                    elif valid[yy, xx] and m[yy, xx] != k:
                        out[y, x] = True
    return out


@settings(max_examples=40, deadline=None)
@given(label_maps(max_side=10), st.integers(1, 3), st.booleans())
def test_boundary_iou_equals_pixel_loop_definition(case, d, border):
    C, pred, lab = case
    valid = lab != IGN
    bi, bu = [], []
    for k in range(C):
        bp = _brute_band(pred, valid, k, d, border)
        bl = _brute_band(lab, valid, k, d, border)
        bi.append(int((bp & bl).sum()))
        bu.append(int((bp | bl).sum()))
    m = SegMetrics(C, boundary_px=d, border_is_edge=border)
    m.update(pred, lab)
    r = m.result()
    assert r.b_intersect.tolist() == bi and r.b_union.tolist() == bu
    # the engine's two-histogram path (taken when predictions under ignored pixels are out of range)
    wild = pred.copy()
    wild[~valid] = 250
    m = SegMetrics(C, boundary_px=d, border_is_edge=border)
    m.update(wild, lab)
    r = m.result()
    assert r.b_intersect.tolist() == bi and r.b_union.tolist() == bu


@settings(max_examples=30, deadline=None)
@given(st.lists(label_maps(max_classes=4, max_side=12), min_size=1, max_size=3), st.integers(1, 2))
def test_engine_equals_plain_implementation_on_random_sets(cases, d):
    C = max(c[0] for c in cases)
    pairs = [(p, lab) for _, p, lab in cases]
    m = SegMetrics(C, boundary_px=d)
    for p, lab in pairs:
        m.update(p, lab)
    r = m.result()
    ref = plain_metrics(pairs, C, d=d)
    for key in ("miou", "macc", "aacc", "mf1", "mbiou", "per_image_miou"):
        assert _same(getattr(r, key), ref[key]), key
    assert r.b_union.tolist() == ref["b_union"]


@settings(max_examples=25, deadline=None)
@given(label_maps(max_side=24), st.integers(1, 3), st.booleans())
def test_numpy_and_torch_backends_agree(case, d, border):
    torch = pytest.importorskip("torch")
    C, pred, lab = case
    a = SegMetrics(C, boundary_px=d, border_is_edge=border)
    a.update(pred, lab)
    b = SegMetrics(C, boundary_px=d, border_is_edge=border, backend="torch")
    b.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(lab.astype(np.int64)))
    ra, rb = a.result(), b.result()
    assert np.array_equal(ra.confusion, rb.confusion)
    assert np.array_equal(ra.b_intersect, rb.b_intersect) and np.array_equal(ra.b_union, rb.b_union)
    assert _same(ra.per_image_miou, rb.per_image_miou, 1e-12)
