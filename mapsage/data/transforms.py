"""Joint image/mask training transforms (albumentations), configured by the ``augment`` section.

Order: random multi-scale resize (``augment.scale_range`` relative to the tile's own size) -> pad to the crop size
(image filled with 0, mask with the ignore index) -> random crop (``augment.crop_size``; re-drawn up to 10 times
while one class fills more than ``augment.cat_max_ratio`` of the crop's labelled pixels, as mmsegmentation does)
-> flips -> rotation (``augment.rotate_deg``; borders: image 0, mask ignore) -> colour jitter (image only).

Masks are only ever resampled with nearest neighbour, so no value appears that was not in the mask (or the ignore
index from borders). ``augment.enabled: false`` keeps only pad + crop (batches still need one size).
"""
from __future__ import annotations

from typing import Any, Optional

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop

from ..config import ConfigError
from ..config.schema import Config


class CatMaxRatioCrop(BaseCrop):
    """Random crop of ``height x width`` that avoids crops dominated by one class (mmseg's ``cat_max_ratio``).

    Up to ``attempts`` crops are drawn; the first whose largest class share (ignore index excluded) is below
    ``cat_max_ratio`` is taken, else the last one. ``cat_max_ratio >= 1`` is a plain random crop."""

    def __init__(self, height: int, width: int, cat_max_ratio: float = 1.0, ignore_index: int = 255,
                 attempts: int = 10, p: float = 1.0):
        super().__init__(p=p)
        self.height = int(height)
        self.width = int(width)
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_index = int(ignore_index)
        self.attempts = int(attempts)

    def _draw(self, h: int, w: int) -> tuple[int, int, int, int]:
        y = self.py_random.randint(0, h - self.height)
        x = self.py_random.randint(0, w - self.width)
        return x, y, x + self.width, y + self.height

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        if h < self.height or w < self.width:
            raise ValueError(f"crop {self.height}x{self.width} is larger than the padded input {h}x{w}")
        coords = self._draw(h, w)
        mask = data.get("mask")
        if self.cat_max_ratio < 1.0 and mask is not None:
            for _ in range(self.attempts):
                x0, y0, x1, y1 = coords
                counts = np.bincount(np.asarray(mask[y0:y1, x0:x1]).ravel(), minlength=256)
                counts[self.ignore_index] = 0
                labelled = counts.sum()
                if labelled and (np.count_nonzero(counts) > 1 and counts.max() / labelled < self.cat_max_ratio):
                    break
                coords = self._draw(h, w)
        return {"crop_coords": coords}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "cat_max_ratio", "ignore_index", "attempts")


def crop_pair(size, key: str) -> tuple[int, int]:
    """``[height, width]`` in pixels from a size given as one side or two (ConfigError names ``key``)."""
    vals = [int(v) for v in (size if isinstance(size, (list, tuple)) else [size])]
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) <= 0:
        raise ConfigError(f"{key} must be [height, width] in pixels (or one side), got {size}")
    return vals[0], vals[1]


def max_crop(aug) -> Optional[tuple[int, int]]:
    """The crop the dataset takes when sizes change in training (None: no schedule, ``augment.crop_size``)."""
    sizes = [crop_pair(p.size, "augment.crop_schedule.size") for p in aug.crop_schedule] + \
        [(int(s), int(s)) for s in aug.crop_sizes]
    if not sizes:
        return None
    return max(h for h, _ in sizes), max(w for _, w in sizes)


def _crop_size(cfg: Config) -> tuple[int, int]:
    biggest = max_crop(cfg.augment)          # crop_schedule / crop_sizes: the batch is cut to size later
    if biggest is not None:
        return biggest
    size = list(cfg.augment.crop_size)
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) <= 0:
        raise ConfigError(f"augment.crop_size must be [height, width] in pixels, got {cfg.augment.crop_size}")
    return int(size[0]), int(size[1])


def build_train_transform(cfg: Config, image_interpolation: int = cv2.INTER_LINEAR, seed: int | None = None
                          ) -> A.Compose:
    """The training pipeline for ``cfg.augment`` (see the module docstring).

    ``image_interpolation`` exists for tests (nearest makes image and mask resampling identical)."""
    aug = cfg.augment
    if getattr(aug, "backend", "albumentations") == "kornia":      # the rest runs batch-wise on the device
        from .gpu_augment import build_loader_transform
        return build_loader_transform(cfg, seed=seed)
    ignore = int(cfg.dataset.ignore_index)
    ch, cw = _crop_size(cfg)
    ops: list = []
    if aug.enabled:
        if len(aug.scale_range) != 2 or not 0 < aug.scale_range[0] <= aug.scale_range[1]:
            raise ConfigError(f"augment.scale_range must be [min, max] with 0 < min <= max, got {aug.scale_range}")
        lo, hi = float(aug.scale_range[0]), float(aug.scale_range[1])
        if (lo, hi) != (1.0, 1.0):
            ops.append(A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), interpolation=image_interpolation,
                                     mask_interpolation=cv2.INTER_NEAREST, p=1.0))
    ops.append(A.PadIfNeeded(min_height=ch, min_width=cw, position="center", border_mode=cv2.BORDER_CONSTANT,
                             fill=0, fill_mask=ignore, p=1.0))
    ops.append(CatMaxRatioCrop(ch, cw, cat_max_ratio=aug.cat_max_ratio if aug.enabled else 1.0,
                               ignore_index=ignore))
    if aug.enabled:
        if aug.hflip > 0:
            ops.append(A.HorizontalFlip(p=aug.hflip))
        if aug.vflip > 0:
            ops.append(A.VerticalFlip(p=aug.vflip))
        if aug.rotate_deg > 0 and aug.rotate_p > 0:
            ops.append(A.Rotate(limit=(-aug.rotate_deg, aug.rotate_deg), interpolation=image_interpolation,
                                mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT, fill=0,
                                fill_mask=ignore, crop_border=False, p=aug.rotate_p))
        if aug.elastic_p > 0:
            ops.append(A.ElasticTransform(alpha=float(aug.elastic_alpha), sigma=float(aug.elastic_sigma),
                                          interpolation=image_interpolation, mask_interpolation=cv2.INTER_NEAREST,
                                          border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore,
                                          p=aug.elastic_p))
        cj = list(aug.color_jitter)
        if len(cj) != 4:
            raise ConfigError(f"augment.color_jitter must be [brightness, contrast, saturation, hue], got {cj}")
        if aug.color_jitter_p > 0 and any(v > 0 for v in cj):
            b, c, s, h = (float(v) for v in cj)
            if not 0 <= h <= 0.5:
                raise ConfigError(f"augment.color_jitter: hue must be in 0..0.5, got {h}")
            ops.append(A.ColorJitter(brightness=(max(0.0, 1 - b), 1 + b), contrast=(max(0.0, 1 - c), 1 + c),
                                     saturation=(max(0.0, 1 - s), 1 + s), hue=(-h, h), p=aug.color_jitter_p))
        if aug.random_erasing_p > 0:
            lo, hi = (float(v) for v in aug.random_erasing_scale)
            if not 0 < lo <= hi < 1:
                raise ConfigError(f"augment.random_erasing_scale must be [min, max] area shares with 0 < min <= max "
                                  f"< 1, got {aug.random_erasing_scale}")
            ops.append(A.Erasing(scale=(lo, hi), fill=0, fill_mask=None, p=aug.random_erasing_p))  # image only
    return A.Compose(ops, seed=seed)
