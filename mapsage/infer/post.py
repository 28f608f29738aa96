"""Post-processing of predicted id masks: a per-class small-object filter and a minimum road width.

* **Small objects** (``post.min_area``: class name -> minimum component area in pixels): connected components
  (8-connectivity) of a class smaller than its minimum are removed.
* **Road width** (``post.road_class``, ``post.road_min_width`` px): the road mask is opened with a
  ``road_min_width`` × ``road_min_width`` square; road pixels the opening removes (spurs and strips narrower than
  the width) are removed.

Removed pixels are given to the **surrounding majority class**: each connected region of removed pixels takes the
most frequent class among the kept pixels touching it (its 8-neighbour ring). A region with no kept neighbour (it
fills the image) keeps its class. The road opening runs first, so road fragments it leaves are then subject to the
area filter."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from ..errors import UserError

_RING = np.ones((3, 3), np.uint8)


def fill_from_surroundings(pred: np.ndarray, remove: np.ndarray) -> np.ndarray:
    """A copy of ``pred`` where each 8-connected region of ``remove`` takes its ring's majority kept class."""
    out = pred.copy()
    if not remove.any():
        return out
    n, labels, stats, _ = cv2.connectedComponentsWithStats(remove.astype(np.uint8), connectivity=8)
    h, w = pred.shape
    keep = ~remove
    for i in range(1, n):
        x, y, bw, bh, _ = stats[i]
        y0, y1 = max(y - 1, 0), min(y + bh + 1, h)
        x0, x1 = max(x - 1, 0), min(x + bw + 1, w)
        comp = labels[y0:y1, x0:x1] == i
        ring = cv2.dilate(comp.astype(np.uint8), _RING).astype(bool) & keep[y0:y1, x0:x1]
        votes = pred[y0:y1, x0:x1][ring]
        if votes.size == 0:
            continue
        counts = np.bincount(votes.astype(np.int64))
        out[y0:y1, x0:x1][comp] = np.argmax(counts)
    return out


def small_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Pixels of 8-connected components of ``mask`` whose area is below ``min_area``."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < min_area)
    small = small[small != 0]
    if small.size == 0:
        return np.zeros(mask.shape, bool)
    lut = np.zeros(n, bool)
    lut[small] = True
    return lut[labels]


def thin_parts(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of ``mask`` removed by a morphological opening with a ``width`` × ``width`` square."""
    if width <= 1:
        return np.zeros(mask.shape, bool)
    kernel = np.ones((width, width), np.uint8)
    opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_REPLICATE)
    return mask & ~opened.astype(bool)


@dataclass
class PostProcessor:
    """Callable id-mask -> id-mask built from ``cfg.post`` and the class names."""
    min_area: dict[int, int] = field(default_factory=dict)     # class id -> minimum area
    road_class: int | None = None
    road_min_width: int = 0

    @classmethod
    def from_config(cls, post_cfg, class_names: Sequence[str]) -> "PostProcessor":
        names = list(class_names)
        min_area = {}
        for name, area in (post_cfg.min_area or {}).items():
            if name not in names:
                raise UserError(f"post.min_area names class {name!r}, which is not in dataset.classes {names}")
            if int(area) < 0:
                raise UserError(f"post.min_area.{name} must be >= 0, got {area}")
            if int(area) > 0:
                min_area[names.index(name)] = int(area)
        road = None
        if post_cfg.road_min_width:
            if post_cfg.road_min_width < 0:
                raise UserError(f"post.road_min_width must be >= 0, got {post_cfg.road_min_width}")
            if not post_cfg.road_class:
                raise UserError("post.road_min_width is set but post.road_class is empty; name the road class "
                                f"(one of {names})")
            if post_cfg.road_class not in names:
                raise UserError(f"post.road_class {post_cfg.road_class!r} is not in dataset.classes {names}")
            road = names.index(post_cfg.road_class)
        return cls(min_area=min_area, road_class=road, road_min_width=int(post_cfg.road_min_width or 0))

    @property
    def active(self) -> bool:
        return bool(self.min_area) or (self.road_class is not None and self.road_min_width > 1)

    def describe(self, class_names: Sequence[str]) -> dict:
        return {"min_area": {class_names[k]: v for k, v in self.min_area.items()},
                "road_class": class_names[self.road_class] if self.road_class is not None else None,
                "road_min_width": self.road_min_width}

    def __call__(self, pred: np.ndarray) -> np.ndarray:
        out = np.asarray(pred)
        if self.road_class is not None and self.road_min_width > 1:
            out = fill_from_surroundings(out, thin_parts(out == self.road_class, self.road_min_width))
        if self.min_area:
            remove = np.zeros(out.shape, bool)
            for cls_id, area in self.min_area.items():
                remove |= small_components(out == cls_id, area)
            out = fill_from_surroundings(out, remove)
        return out
