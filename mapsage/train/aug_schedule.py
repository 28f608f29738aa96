"""Augmentation that changes during training: progressive resolution, per-batch multi-size crops and mixing by
epoch.

* ``augment.crop_schedule`` (``[{from_epoch, size: [h, w]}]``): the training crop size by epoch (progressive
  resolution, e.g. 224 → 320 → 448). ``augment.crop_sizes`` (``[512, 640, 768]``): one square size drawn per batch
  (the server plan's random crops). The dataset crops every tile at the largest size any phase or draw needs
  (:func:`max_crop`, read by :mod:`mapsage.data.transforms`); :class:`BatchResizer` then cuts each sample of the
  batch to the size of the moment at a random position (a random crop of a random crop is a random crop), or with
  ``augment.crop_resize`` resizes the batch to it (image bilinear, mask nearest) so the field of view stays.
* ``augment.phases`` (``[{from_epoch, cutmix_p, mixup_p, mixup_alpha, cutmix_alpha}]``, unset values keep the
  section's) and ``augment.mix_off_last_epochs`` (CutMix and MixUp off for the last N epochs):
  :func:`mix_params` gives the mixing settings of an epoch.

Draws come from a generator seeded per epoch by the engine, so a resumed run sees the same sizes.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..data.transforms import crop_pair, max_crop  # noqa: F401  (max_crop: part of this module's API)


def validate(aug) -> None:
    if aug.crop_schedule and aug.crop_sizes:
        raise ConfigError("augment.crop_schedule and augment.crop_sizes both set the batch size of crops; keep one "
                          "(a schedule by epoch, or sizes drawn per batch)")
    starts = [int(p.from_epoch) for p in aug.crop_schedule]
    if len(set(starts)) != len(starts) or any(s < 0 for s in starts):
        raise ConfigError(f"augment.crop_schedule from_epoch values must be distinct and >= 0, got {starts}")
    for i, p in enumerate(aug.crop_schedule):
        crop_pair(p.size, f"augment.crop_schedule[{i}].size")
    if any(int(s) <= 0 for s in aug.crop_sizes):
        raise ConfigError(f"augment.crop_sizes must be positive pixel sizes, got {aug.crop_sizes}")


def scheduled_size(aug, epoch: int) -> Optional[tuple[int, int]]:
    phases = sorted(aug.crop_schedule, key=lambda p: int(p.from_epoch))
    size = None
    for p in phases:
        if epoch >= int(p.from_epoch) or size is None:
            size = crop_pair(p.size, "augment.crop_schedule.size")
    return size


class BatchResizer:
    def __init__(self, aug):
        validate(aug)
        self.aug = aug
        self.active = bool(aug.crop_schedule or aug.crop_sizes)
        self.resize = bool(aug.crop_resize)
        self.generator = torch.Generator()
        self.generator.manual_seed(0)
        self.epoch = 0

    def start_epoch(self, epoch: int, seed: int) -> None:
        self.epoch = int(epoch)
        self.generator.manual_seed(int(seed))

    def size(self) -> Optional[tuple[int, int]]:
        if self.aug.crop_sizes:
            k = int(torch.randint(len(self.aug.crop_sizes), (1,), generator=self.generator))
            s = int(self.aug.crop_sizes[k])
            return s, s
        return scheduled_size(self.aug, self.epoch)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.size()
        if size is None:
            return images, masks
        h, w = images.shape[-2:]
        th, tw = min(size[0], h), min(size[1], w)
        if (th, tw) == (h, w):
            return images, masks
        if self.resize:
            imgs = F.interpolate(images, size=(th, tw), mode="bilinear", align_corners=False)
            ms = F.interpolate(masks[:, None].float(), size=(th, tw), mode="nearest")[:, 0].to(masks.dtype)
            return imgs, ms
        out_i, out_m = [], []
        for i in range(images.shape[0]):
            y = int(torch.randint(h - th + 1, (1,), generator=self.generator))
            x = int(torch.randint(w - tw + 1, (1,), generator=self.generator))
            out_i.append(images[i, :, y:y + th, x:x + tw])
            out_m.append(masks[i, y:y + th, x:x + tw])
        return torch.stack(out_i), torch.stack(out_m)


def mix_params(aug, epoch: int, epochs: int) -> dict:
    """CutMix / MixUp settings for ``epoch`` (of ``epochs``) after ``augment.phases`` and ``mix_off_last_epochs``."""
    out = {"cutmix_p": float(aug.cutmix_p), "mixup_p": float(aug.mixup_p), "mixup_alpha": float(aug.mixup_alpha),
           "cutmix_alpha": float(aug.cutmix_alpha)}
    for p in sorted(aug.phases, key=lambda p: int(p.from_epoch)):
        if epoch >= int(p.from_epoch):
            for k in out:
                v = getattr(p, k)
                if v is not None:
                    out[k] = float(v)
    n = int(aug.mix_off_last_epochs or 0)
    if n > 0 and epoch >= int(epochs) - n:
        out["cutmix_p"] = out["mixup_p"] = 0.0
    if not aug.enabled:
        out["cutmix_p"] = out["mixup_p"] = 0.0
    return out


def schedules_mixing(aug) -> bool:
    return bool(aug.phases) or int(aug.mix_off_last_epochs or 0) > 0
