"""SAM prompts from real masks: positive points inside each component at distance-transform maxima, negative points
``neg_offset_px`` outside its boundary, boxes around it (LoveDA test tiles and Dubai masks)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mapsage.config.schema import SAMCfg
from mapsage.refine import component_prompts, positive_points
from tests.support.refine import dubai_pair, loveda_tile

EIGHT = np.ones((3, 3), bool)


def _masks():
    out = []
    for name in ("val2", "train0"):
        _, label = loveda_tile(name)
        out.append((f"loveda-{name}", label, 7))
    for idx in (0, 5):
        tile, _, label = dubai_pair(idx)
        out.append((f"dubai-{tile}", label, 5))
    return out


MASKS = _masks()


def _window(p, label):
    """The prompt's window (it reaches ``hi + 1`` px beyond the component where the tile allows) and its mask."""
    y0, y1, x0, x1 = p.window
    return y0, x0, label[y0:y1, x0:x1], p.mask


@pytest.mark.parametrize("name,label,num_classes", MASKS, ids=[m[0] for m in MASKS])
@pytest.mark.parametrize("offset", [(3, 5), (4, 4)])
def test_points_inside_and_outside_on_real_masks(name, label, num_classes, offset):
    cfg = SAMCfg(neg_offset_px=list(offset), max_points_per_component=3, neg_points_per_component=4,
                 min_component_area=64, use_box=True)
    prompts = component_prompts(label, num_classes, cfg)
    assert prompts, f"{name}: no component prompts"
    # independent component count (8-connectivity, area filter) per class
    expected = 0
    for c in range(num_classes):
        comps, n = ndimage.label(label == c, structure=EIGHT)
        if n:
            areas = np.bincount(comps.ravel())[1:]
            expected += int((areas >= cfg.min_component_area).sum())
    assert len(prompts) == expected
    lo, hi = offset
    n_neg_total = 0
    for p in prompts:
        y0, x0, lab, comp = _window(p, label)
        assert comp.sum() == p.area >= cfg.min_component_area
        assert np.all(lab[comp] == p.class_id)
        # the window holds the whole component: it is one 8-connected piece that touches no window edge
        # unless that edge is the tile's
        _, n_pieces = ndimage.label(comp, structure=EIGHT)
        assert n_pieces == 1
        # positive points: inside the component, at most max_points, distinct
        assert 1 <= len(p.positive) <= cfg.max_points_per_component
        for x, y in p.positive.astype(int):
            assert comp[y - y0, x - x0], (
                f"{name}: positive point ({x},{y}) of class {p.class_id} is outside its component")
        assert len({tuple(v) for v in p.positive.tolist()}) == len(p.positive)
        # negative points: exact Euclidean distance to the component in [lo, hi] px (scipy, not OpenCV)
        dist = ndimage.distance_transform_edt(~comp)
        ring = (dist >= lo) & (dist <= hi)
        assert len(p.negative) <= cfg.neg_points_per_component
        for x, y in p.negative.astype(int):
            assert not comp[y - y0, x - x0]
            assert lo - 1e-6 <= dist[y - y0, x - x0] <= hi + 1e-6, (
                f"{name}: negative point ({x},{y}) is {dist[y - y0, x - x0]:.2f} px from its component, "
                f"not {lo}-{hi}")
            # another component of the same class is avoided where the ring offers other pixels
            if (ring & (lab != p.class_id)).any():
                assert label[y, x] != p.class_id
        n_neg_total += len(p.negative)
        # box: the component's inclusive bounding box in tile coordinates
        ys, xs = np.nonzero(comp)
        assert p.box.tolist() == [xs.min() + x0, ys.min() + y0, xs.max() + x0, ys.max() + y0]
    assert n_neg_total > 0


@pytest.mark.parametrize("name,label,num_classes", MASKS[:2] + MASKS[3:], ids=[m[0] for m in MASKS[:2] + MASKS[3:]])
def test_positive_points_are_distance_transform_maxima(name, label, num_classes):
    h, w = label.shape
    for p in component_prompts(label, num_classes, SAMCfg()):
        y0, x0, _, comp = _window(p, label)
        # depth inside the component; the tile border counts as outside, a window edge inside the tile does not
        pad = [(1 if y0 == 0 else 0, 1 if y0 + comp.shape[0] == h else 0),
               (1 if x0 == 0 else 0, 1 if x0 + comp.shape[1] == w else 0)]
        padded = np.pad(comp, pad)
        depth = ndimage.distance_transform_edt(padded)[pad[0][0]:pad[0][0] + comp.shape[0],
                                                        pad[1][0]:pad[1][0] + comp.shape[1]]
        local_max = depth >= ndimage.maximum_filter(depth, size=3)
        pts = p.positive.astype(int) - [x0, y0]
        x, y = pts[0]
        assert depth[y, x] == pytest.approx(depth.max(), abs=1e-3), "the first point is the deepest pixel"
        for x, y in pts[1:]:
            assert local_max[y, x], "later points lie on the distance transform's ridge (local maxima)"
            assert depth[y, x] >= max(min(2.0, depth.max()), 0.25 * depth.max()) - 1e-3
        for i in range(len(pts)):
            for j in range(i):
                assert np.hypot(*(pts[i] - pts[j])) > max(depth.max(), 2.0) - 1e-6


def test_positive_points_spread_along_a_long_component():
    """On a real road of a Dubai mask the points spread along the road instead of clustering."""
    tile, _, label = dubai_pair(0)
    comps, n = ndimage.label(label == 2, structure=EIGHT)        # class 2: road
    assert n > 0
    areas = np.bincount(comps.ravel())[1:]
    road = comps == (1 + int(np.argmax(areas)))
    pts = positive_points(road, 5)
    assert len(pts) == 5
    spread = max(np.hypot(*(a - b)) for a in pts for b in pts)
    depth = ndimage.distance_transform_edt(np.pad(road, 1))[1:-1, 1:-1]
    assert spread > 10 * depth.max()                             # far apart along the road, not across it
    assert all(road[int(y), int(x)] for x, y in pts)


def test_small_components_and_ignore_are_skipped():
    _, label = loveda_tile("train0")
    big = component_prompts(label, 7, SAMCfg(min_component_area=10_000))
    small = component_prompts(label, 7, SAMCfg(min_component_area=64))
    assert 0 < len(big) < len(small)
    assert all(p.area >= 10_000 for p in big)
    assert all(p.class_id != 255 for p in small)
    no_box = component_prompts(label, 7, SAMCfg(use_box=False))
    assert all(p.box is None for p in no_box)
