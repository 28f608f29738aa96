"""The engine against an independent plain implementation on real masks (LoveDA and Dubai), with predictions made
by eroding, shifting and relabelling the labels; Boundary IoU against the per-class definition and against the
Boundary IoU API's own ``mask_to_boundary``."""
from __future__ import annotations

import numpy as np
import pytest

from mapsage.metrics import SegMetrics, class_bands
from tests.support.metrics import (
    IGN,
    assert_close,
    derived_predictions,
    dubai_colour_map,
    dubai_masks,
    loveda_masks,
    mask_to_boundary_reference,
    plain_band,
    plain_metrics,
)


def _check_against_plain(pairs, C, **kw):
    d = kw.get("boundary_px", 3)
    border = kw.get("border_is_edge", False)
    m = SegMetrics(C, **kw)
    for pred, label in pairs:
        m.update(pred, label)
    r = m.result()
    ref = plain_metrics(pairs, C, d=d, border_is_edge=border)
    assert r.intersect.tolist() == ref["inter"]
    assert r.label_area.tolist() == ref["label"]
    assert r.pred_area.tolist() == ref["pred"]
    assert r.b_intersect.tolist() == ref["b_inter"]
    assert r.b_union.tolist() == ref["b_union"]
    for key in ("iou", "acc", "precision", "f1", "biou"):
        for k in range(C):
            assert_close(getattr(r, key)[k], ref[key][k], what=f"{key}[{k}]")
    for key in ("miou", "macc", "aacc", "mf1", "mbiou", "per_image_miou"):
        assert_close(getattr(r, key), ref[key], what=key)
    return r


@pytest.mark.parametrize("kind", ["eroded", "shifted", "relabelled", "noisy"])
def test_loveda_real_masks_against_plain(kind):
    pairs = []
    for i, (_, lab) in enumerate(loveda_masks()):
        lab = lab.copy()
        if i == 0:
            lab[:64, :512] = IGN                  # a no-data band (raw LoveDA 0): these samples have none
        pairs.append((derived_predictions(lab, 7, seed=i)[kind], lab))
    r = _check_against_plain(pairs, 7)
    absent = [f"class_{k}" for k in range(7)
              if not any((((p == k) | (lab == k)) & (lab != IGN)).any() for p, lab in pairs)]
    assert r.excluded_classes == absent
    if kind == "relabelled":
        assert absent == ["class_4"]              # no barren in these tiles, and this prediction draws none
    assert 0 < r.mbiou < r.miou < 1


def test_dubai_real_masks_against_plain():
    classes, _, _ = dubai_colour_map()
    masks = dubai_masks()
    assert (masks[2][1] == IGN).mean() > 0.1          # Tile 8 part 3: ~17 % black, ignored
    pairs = []
    for i, (_, lab) in enumerate(masks):
        preds = derived_predictions(lab, len(classes), seed=i)
        pairs += [(preds["relabelled"], lab), (preds["eroded"], lab)]
    _check_against_plain(pairs, len(classes), class_names=classes)


def test_border_and_width_variants_against_plain():
    (_, lab), = loveda_masks()[1:2]
    lab = lab[:400, :600].copy()
    lab[150:200, 250:320] = IGN
    pairs = [(derived_predictions(lab, 7)[k], lab) for k in ("shifted", "eroded")]
    _check_against_plain(pairs, 7, boundary_px=2, border_is_edge=True)
    _check_against_plain(pairs, 7, boundary_px=5, border_is_edge=False)
    _check_against_plain(pairs, 7, boundary_px=1, border_is_edge=True)


def test_matches_boundary_iou_api_reference():
    # The reference (Cheng et al.) counts the image border as an edge and sets d from 2 % of the diagonal:
    # border_is_edge=True + boundary_ratio=0.02 must reproduce its per-class bands pixel for pixel (no ignore).
    for i, (_, lab) in enumerate(loveda_masks()[:2]):
        lab = lab[:512, :700]
        pred = derived_predictions(lab, 7, seed=i)["eroded"]
        m = SegMetrics(7, boundary_ratio=0.02, border_is_edge=True)
        m.update(pred, lab)
        r = m.result()
        bi, bu = [], []
        d = int(round(0.02 * np.sqrt(512 ** 2 + 700 ** 2)))
        bands_l = class_bands(lab, 7, d, border_is_edge=True)
        for k in range(7):
            ref_l = mask_to_boundary_reference((lab == k).astype(np.uint8), 0.02).astype(bool)
            ref_p = mask_to_boundary_reference((pred == k).astype(np.uint8), 0.02).astype(bool)
            assert np.array_equal(bands_l[k], ref_l), k
            bi.append(int((ref_l & ref_p).sum()))
            bu.append(int((ref_l | ref_p).sum()))
        assert r.b_intersect.tolist() == bi and r.b_union.tolist() == bu
        assert_close(r.mbiou, np.nanmean([a / b if b else np.nan for a, b in zip(bi, bu)]))


def test_class_bands_equal_the_per_class_definition():
    _, lab = dubai_masks()[2]                         # with ~17 % ignored pixels
    lab = lab[:300, :400]
    valid = lab != IGN
    for d in (1, 3):
        for border in (False, True):
            bands = class_bands(lab, 5, d, border_is_edge=border, valid=valid)
            for k in range(5):
                assert np.array_equal(bands[k], plain_band(lab, k, d, valid, border)), (d, border, k)
