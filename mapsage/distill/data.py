"""Tile views for the teacher's feature cache: the training set with, per crop, where its pixels came from.

:class:`TeacherViewDataset` is the training :class:`~mapsage.data.SegDataset` with one more item key,
``teacher_view``: a float32 ``[3, H/4, W/4]`` map sampled every 4 crop pixels (cell centres) holding the source
tile pixel ``x``, ``y`` and a validity flag (0 where the pixel came from padding or a rotation border). The map is
an extra *mask* target of the very same albumentations call that augments image and mask, so it goes through
exactly the random scale, padding, crop, flips and rotation the label went through (nearest-neighbour, like the
mask) and draws no extra randomness: image and mask are identical to the plain dataset's for the same seed, so the
with- and without-teacher arms of an A/B see the same crops.
"""
from __future__ import annotations

import copy

import numpy as np

from ..data.dataset import SegDataset
from .targets import VIEW_KEY, VIEW_STEP

_TARGET = "teacher_xy"


def coordinate_map(h: int, w: int) -> np.ndarray:
    """uint16 ``[H, W, 3]``: x, y and 1 (valid) for every pixel of an ``h x w`` tile."""
    if max(h, w) > 65535:
        raise ValueError(f"tile of {w}x{h} pixels is too large for the teacher's coordinate map (65535 max)")
    out = np.empty((h, w, 3), np.uint16)
    out[..., 0] = np.arange(w, dtype=np.uint16)[None, :]
    out[..., 1] = np.arange(h, dtype=np.uint16)[:, None]
    out[..., 2] = 1
    return out


def view_samples(coords: np.ndarray, step: int = VIEW_STEP) -> np.ndarray:
    """A transformed coordinate map ``[H, W, 3]`` -> float32 ``[3, ~H/step, ~W/step]`` at cell centres,
    with the validity channel 1.0 / 0.0 (fills of padding and rotation borders are not 1)."""
    sub = coords[step // 2::step, step // 2::step]
    out = sub.astype(np.float32).transpose(2, 0, 1).copy()
    out[2] = (sub[..., 2] == 1).astype(np.float32)
    return out


class TeacherViewDataset(SegDataset):
    """The training set ``base`` plus ``teacher_view`` (see the module doc). Shares ``base``'s samples, decoder,
    normalisation and transform settings; its own transform copy carries the extra target."""

    def __init__(self, base: SegDataset):
        if base.transform is None:
            raise ValueError("TeacherViewDataset wraps a training dataset (train=True)")
        self.__dict__.update(base.__dict__)
        self.transform = copy.deepcopy(base.transform)
        self.transform.add_targets({_TARGET: "mask"})
        self._seed_key = None

    def _extra_targets(self, image: np.ndarray) -> dict:
        return {_TARGET: coordinate_map(*image.shape[:2])}

    def _extra_items(self, transformed: dict) -> dict:
        import torch

        return {VIEW_KEY: torch.from_numpy(view_samples(transformed[_TARGET]))}


__all__ = ["TeacherViewDataset", "coordinate_map", "view_samples"]
