"""Boundary IoU on labels whose class borders are ignore strips (ISPRS Potsdam/Vaihingen "eroded" labels).

The labels are real bundled Dubai masks with a 4 px ignore strip carved along every class border. The engine's
strip rule (fast path, exact path and torch path) is checked against an independent per-class implementation of
the same rule (scipy: one boolean mask and one binary dilation per class, no shared code with the engine)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from mapsage.metrics import MetricResult, SegMetrics
from tests.support.formats import carve_strips, fill_ignored
from tests.support.metrics import IGN, dubai_colour_map, dubai_masks

STRIP_PX = 7


@pytest.fixture(autouse=True)
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def strip_pixels(label: np.ndarray, s: int) -> np.ndarray:
    """Ignored pixels with valid pixels of two different classes within Chebyshev distance s."""
    valid = label != IGN
    n_classes_near = np.zeros(label.shape, np.int32)
    for k in np.unique(label[valid]):
        n_classes_near += ndimage.maximum_filter((label == k) & valid, size=2 * s + 1, mode="constant", cval=False)
    return ~valid & (n_classes_near >= 2)


def pred_strip(pred: np.ndarray, strip: np.ndarray, d: int) -> np.ndarray:
    """Strip pixels with two different predicted classes within d px (the prediction everywhere)."""
    n_near = np.zeros(pred.shape, np.int32)
    for k in np.unique(pred):
        n_near += ndimage.maximum_filter(pred == k, size=2 * d + 1, mode="constant", cval=False)
    return strip & (n_near >= 2)


def rule_band(class_map: np.ndarray, k: int, d: int, valid: np.ndarray, strip: np.ndarray) -> np.ndarray:
    """Valid pixels of class k within d px of a valid pixel of another class or of a strip pixel."""
    source = (valid & (class_map != k)) | strip
    near = ndimage.binary_dilation(source, structure=np.ones((2 * d + 1, 2 * d + 1), bool))
    return (class_map == k) & valid & near


def rule_areas(pairs, C: int, d: int, s: int):
    bi, bu, bl = np.zeros(C, np.int64), np.zeros(C, np.int64), np.zeros(C, np.int64)
    for pred, label in pairs:
        valid = label != IGN
        strip = strip_pixels(label, s) if s else np.zeros(label.shape, bool)
        for k in range(C):
            bp = rule_band(pred, k, d, valid, pred_strip(pred, strip, d))
            blk = rule_band(label, k, d, valid, strip)
            bi[k] += np.count_nonzero(bp & blk)
            bu[k] += np.count_nonzero(bp | blk)
            bl[k] += np.count_nonzero(blk)
    return bi, bu, bl


def _pairs():
    """(original label, eroded label) pairs: 600×600 crops of three real Dubai masks. Their few ignored
    (unlabelled) pixels are first given the nearest class, so that, as in ISPRS labels, the strips are the only
    ignored pixels."""
    out = []
    for _, lab in dubai_masks():
        lab = lab[:600, :600].copy()
        lab = fill_ignored(lab)
        out.append((lab, carve_strips(lab)))
    return out


def _metrics(pairs, backend="auto", **kw):
    classes, _, _ = dubai_colour_map()
    m = SegMetrics(len(classes), class_names=classes, backend=backend, **kw)
    for pred, label in pairs:
        m.update(pred, label)
    return m.result()


def test_carved_labels_have_thin_strips():
    for orig, eroded in _pairs():
        added = (eroded == IGN) & (orig != IGN)
        assert 0.02 < added.mean() < 0.5                       # a real strip along the borders
        widths = ndimage.distance_transform_cdt(eroded == IGN, metric="chessboard")
        assert np.median(widths[added]) <= 2                   # mostly 4-5 px across, as in ISPRS eroded labels


def test_perfect_prediction_scores_100_with_the_strip_rule_and_warns_without():
    pairs = []
    rng = np.random.default_rng(0)
    for orig, eroded in _pairs():
        pred = orig.copy()
        pred[eroded == IGN] = rng.integers(0, 5, int((eroded == IGN).sum()))   # anything inside the strips
        pairs.append((pred, eroded))
    plain = _metrics(pairs)                                    # Cheng et al. with ignored pixels as unknown
    assert plain.miou == 1.0
    assert int(plain.b_label.sum()) == 0 and math.isnan(plain.mbiou)
    present = [n for k, n in enumerate(plain.class_names) if plain.label_area[k] > 0]
    assert len(plain.boundary_warnings) == len(present) >= 4
    assert all("eval.boundary_strip_px" in w for w in plain.boundary_warnings)
    assert plain.to_event("val")["boundary_warnings"] == plain.boundary_warnings
    assert "WARNING Boundary IoU: class" in plain.table()

    strips = _metrics(pairs, boundary_strip_px=STRIP_PX)
    assert strips.mbiou == 1.0 and strips.miou == 1.0
    truth = _metrics([(orig, eroded) for orig, eroded in _pairs()], boundary_strip_px=STRIP_PX)
    assert truth.mbiou == 1.0                                  # the uneroded label as the prediction
    assert strips.boundary_warnings == []
    assert (strips.b_label[strips.label_area > 0] > 0).all()
    assert "ignore strips up to 7 px count as borders" in strips.boundary_setting


@pytest.mark.parametrize("shift", [(3, 0), (0, -3), (5, 4)])
def test_shifted_prediction_equals_the_independent_rule(shift):
    pairs = [(np.roll(orig, shift, axis=(0, 1)), eroded) for orig, eroded in _pairs()]
    r = _metrics(pairs, boundary_strip_px=STRIP_PX)
    bi, bu, bl = rule_areas(pairs, 5, d=3, s=STRIP_PX)
    assert r.b_intersect.tolist() == bi.tolist()
    assert r.b_union.tolist() == bu.tolist()
    assert r.b_label.tolist() == bl.tolist()
    assert [c["boundary_pixels"] for c in r.per_class] == bl.tolist()
    assert 0.05 < r.mbiou < 0.95                               # meaningful, neither 0 nor NaN
    # the torch backend and the exact two-histogram path (C >= 128 classes) agree with the fast path
    t = _metrics(pairs, backend="torch", boundary_strip_px=STRIP_PX)
    assert t.b_intersect.tolist() == bi.tolist() and t.b_union.tolist() == bu.tolist()
    m = SegMetrics(130, boundary_strip_px=STRIP_PX)
    for pred, label in pairs:
        m.update(pred, label)
    assert m.result().b_intersect[:5].tolist() == bi.tolist() and m.result().b_union[:5].tolist() == bu.tolist()


def test_strip_rule_other_widths_and_image_border():
    (orig, eroded), = _pairs()[:1]
    eroded = eroded.copy()
    eroded[:40] = IGN                                          # a no-data rim along the image edge
    pred = np.roll(orig, (2, 2), axis=(0, 1))
    for d, s in ((1, 5), (2, 9), (4, 7)):
        r = _metrics([(pred, eroded)], boundary_px=d, boundary_strip_px=s)
        bi, bu, _ = rule_areas([(pred, eroded)], 5, d=d, s=s)
        assert r.b_intersect.tolist() == bi.tolist() and r.b_union.tolist() == bu.tolist(), (d, s)


def test_strip_rule_leaves_labels_without_strips_unchanged():
    # a no-data rim touching a single class holds no strip pixel: the figures equal the plain rule's
    orig, _ = _pairs()[0]
    lab = orig.copy()
    k = int(np.bincount(lab[lab != IGN]).argmax())
    lab[:30] = k
    lab[:20] = IGN
    pred = np.roll(orig, (3, 1), axis=(0, 1))
    a, b = _metrics([(pred, lab)]), _metrics([(pred, lab)], boundary_strip_px=STRIP_PX)
    assert a.b_intersect.tolist() == b.b_intersect.tolist() and a.b_union.tolist() == b.b_union.tolist()


def test_result_round_trip_keeps_boundary_counts_and_strip_setting():
    pairs = [(np.roll(o, (3, 0), axis=(0, 1)), e) for o, e in _pairs()[:1]]
    r = _metrics(pairs, boundary_strip_px=STRIP_PX)
    back = MetricResult.from_dict(r.to_dict())
    assert back.b_label.tolist() == r.b_label.tolist() and back.boundary_strip_px == STRIP_PX
    assert back.mbiou == r.mbiou
