"""Prompts for SAM from a semantic label map: one prompt per connected component of each class.

For a component (8-connected pixels of one class, at least ``min_component_area`` pixels):

* positive points lie inside it, at maxima of its distance transform: the deepest interior pixel first, then
  local maxima of the distance transform (its ridge) at least a quarter as deep, spread by farthest-point sampling,
  up to ``max_points_per_component``. On a long road they walk along its centre line; on a blob they stay in
  its core.
* negative points lie outside it, ``neg_offset_px = [lo, hi]`` pixels from its nearest pixel (exact Euclidean
  distance), spread around it by farthest-point sampling; pixels of the same class (another component) are
  avoided where the ring has others, so a negative never says "not this class" on this class.
* optionally the component's bounding box ``[x0, y0, x1, y1]`` (inclusive pixel coordinates).

Coordinates are SAM's: ``(x, y)`` pixel indices of the full tile (SAM adds the half-pixel shift itself).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import cv2
import numpy as np


@dataclass
class ComponentPrompt:
    """The prompt for one connected component of one class."""

    class_id: int
    component: int                     # index of the component within its class (label order of OpenCV)
    area: int
    bbox: tuple[int, int, int, int]    # x0, y0, x1, y1 inclusive
    positive: np.ndarray               # [P, 2] float32 (x, y)
    negative: np.ndarray               # [N, 2] float32 (x, y)
    box: Optional[np.ndarray] = None   # [4] float32 x0, y0, x1, y1
    # the component's pixels within ``window`` (y0, y1, x0, x1 exclusive), to score SAM's answer against it
    window: tuple[int, int, int, int] = (0, 0, 0, 0)
    mask: np.ndarray = field(default=None, repr=False)  # bool [y1-y0, x1-x0]

    @property
    def points(self) -> np.ndarray:
        """Positive then negative points, [P+N, 2] float32."""
        return np.concatenate([self.positive, self.negative], axis=0).astype(np.float32)

    @property
    def labels(self) -> np.ndarray:
        """SAM point labels: 1 for positive, 0 for negative points."""
        return np.concatenate([np.ones(len(self.positive), np.int64),
                               np.zeros(len(self.negative), np.int64)])


def positive_points(component: np.ndarray, max_points: int, min_depth_ratio: float = 0.25,
                    min_depth: float = 2.0) -> np.ndarray:
    """Distance-transform maxima inside a binary component, spread over it.

    The first point is the deepest interior pixel (the centre of the largest inscribed disc). The others are
    chosen among the local maxima of the distance transform (its ridge: the component's medial axis) that are at
    least ``min_depth_ratio`` as deep as the first (and ``min_depth`` px deep), by farthest-point sampling: on a road they walk along its
    centre line, on a blob they stay in its core. The tile border counts as outside. Returns [P, 2] float32
    (x, y), 1 <= P <= max_points for a non-empty component."""
    comp = np.ascontiguousarray(component.astype(np.uint8))
    if not comp.any():
        return np.zeros((0, 2), np.float32)
    padded = cv2.copyMakeBorder(comp, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    w = dist.shape[1]
    y0, x0 = divmod(int(np.argmax(dist)), w)
    depth = float(dist[y0, x0])
    first = np.array([[x0, y0]], np.float32)
    if max_points <= 1:
        return first
    ridge = (dist >= cv2.dilate(dist, np.ones((3, 3), np.uint8))) & (dist >= max(min(min_depth, depth),
                                                                                 min_depth_ratio * depth))
    ys, xs = np.nonzero(ridge)
    cand = np.stack([xs, ys], axis=1).astype(np.float32)
    chosen = [first[0]]
    d = np.linalg.norm(cand - first[0], axis=1)
    for _ in range(1, int(max_points)):
        if not len(cand):
            break
        k = int(np.argmax(d))
        # a new point must lie outside the inscribed disc of every point taken (else it adds nothing)
        if d[k] <= max(depth, 2.0):
            break
        chosen.append(cand[k])
        d = np.minimum(d, np.linalg.norm(cand - cand[k], axis=1))
    return np.asarray(chosen, np.float32).reshape(-1, 2)


def _farthest_points(coords: np.ndarray, k: int) -> np.ndarray:
    """k points of ``coords`` [M, 2] spread by farthest-point sampling (deterministic start: the first row)."""
    if len(coords) <= k:
        return coords
    chosen = [0]
    d = np.linalg.norm(coords - coords[0], axis=1)
    for _ in range(1, k):
        nxt = int(np.argmax(d))
        chosen.append(nxt)
        d = np.minimum(d, np.linalg.norm(coords - coords[nxt], axis=1))
    return coords[chosen]


def negative_points(component: np.ndarray, offset: tuple[int, int], k: int,
                    avoid: Optional[np.ndarray] = None) -> np.ndarray:
    """Up to ``k`` points whose exact distance to the nearest component pixel lies in ``[lo, hi]``.

    ``component`` must be a window that extends at least ``hi`` pixels beyond the component where the tile
    allows. ``avoid`` (same shape, bool): pixels to skip when the ring has other pixels (same-class pixels)."""
    lo, hi = float(offset[0]), float(offset[1])
    if k <= 0:
        return np.zeros((0, 2), np.float32)
    outside = np.ascontiguousarray((~component.astype(bool)).astype(np.uint8))
    dist = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    ring = (dist >= lo) & (dist <= hi)
    if avoid is not None:
        preferred = ring & ~avoid
        if preferred.any():
            ring = preferred
    ys, xs = np.nonzero(ring)
    if len(ys) == 0:
        return np.zeros((0, 2), np.float32)
    # start from the ring pixel nearest the top-left so the choice is deterministic and stable
    order = np.lexsort((xs, ys))
    coords = np.stack([xs[order], ys[order]], axis=1).astype(np.float32)
    return _farthest_points(coords, int(k)).astype(np.float32)


def iter_component_prompts(label_map: np.ndarray, num_classes: int, *, max_points: int = 3,
                           neg_points: int = 4, neg_offset_px=(3, 5), use_box: bool = True,
                           min_area: int = 64, ignore_index: int = 255,
                           classes: Optional[list[int]] = None) -> Iterator[ComponentPrompt]:
    """Prompts for every component (area >= ``min_area``) of every class present in ``label_map``."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"label map must be [H, W], got shape {label_map.shape}")
    h, w = label_map.shape
    lo, hi = int(neg_offset_px[0]), int(neg_offset_px[1])
    pad = hi + 1
    present = [int(c) for c in np.unique(label_map) if c != ignore_index and 0 <= c < num_classes]
    if classes is not None:
        present = [c for c in present if c in set(classes)]
    for cls in present:
        class_mask = label_map == cls
        n, comp_ids, stats, _ = cv2.connectedComponentsWithStats(class_mask.astype(np.uint8), connectivity=8)
        for comp in range(1, n):
            x, y, bw, bh, area = (int(v) for v in stats[comp])
            if area < min_area:
                continue
            y0, y1 = max(0, y - pad), min(h, y + bh + pad)
            x0, x1 = max(0, x - pad), min(w, x + bw + pad)
            window = comp_ids[y0:y1, x0:x1] == comp
            same_class = class_mask[y0:y1, x0:x1]
            pos = positive_points(window, max_points)
            neg = negative_points(window, (lo, hi), neg_points, avoid=same_class)
            offset = np.array([x0, y0], np.float32)
            box = (np.array([x, y, x + bw - 1, y + bh - 1], np.float32) if use_box else None)
            yield ComponentPrompt(class_id=cls, component=comp, area=area,
                                  bbox=(x, y, x + bw - 1, y + bh - 1),
                                  positive=pos + offset, negative=(neg + offset) if len(neg) else neg,
                                  box=box, window=(y0, y1, x0, x1), mask=window)


def component_prompts(label_map: np.ndarray, num_classes: int, sam_cfg, ignore_index: int = 255,
                      classes: Optional[list[int]] = None) -> list[ComponentPrompt]:
    """All prompts of a label map with the settings of ``cfg.refine.sam`` (a :class:`SAMCfg`)."""
    return list(iter_component_prompts(
        label_map, num_classes,
        max_points=sam_cfg.max_points_per_component,
        neg_points=sam_cfg.neg_points_per_component,
        neg_offset_px=tuple(sam_cfg.neg_offset_px),
        use_box=sam_cfg.use_box,
        min_area=sam_cfg.min_component_area,
        ignore_index=ignore_index,
        classes=classes,
    ))
