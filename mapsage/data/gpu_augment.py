"""Batch-wise training augmentation with kornia on the training device (``augment.backend: kornia``).

With ``augment.backend: albumentations`` (the default) every tile is augmented on the CPU in the loader
(:mod:`mapsage.data.transforms`). With ``kornia`` the loader only cuts a *window* per tile (pad with the ignore index,
random crop with ``augment.cat_max_ratio``), and :class:`KorniaAugment` does the rest on the device the model trains
on, one batch at a time, after the batch was moved there:

1. multi-scale (``augment.scale_range``): a random window of ``crop / s`` pixels is taken from the loader's window and
   resized to the crop size -- the same picture as resizing the tile by ``s`` and cropping ``crop`` pixels, which is
   what the CPU path does. The loader's window is therefore ``crop / min(scale_range)`` pixels (``crop`` when
   ``min >= 1``). The window's area share is drawn uniformly (kornia ``RandomResizedCrop``); the CPU path draws
   ``s`` uniformly.
2. flips, rotation (``augment.rotate_deg`` / ``rotate_p``), elastic transform (``augment.elastic_*``; alpha and sigma
   in pixels as in albumentations): the same sampled parameters move image and mask; the mask is resampled with
   nearest neighbour only, and every pixel that comes from outside the picture is the ignore index in the mask and
   black in the image (as on the CPU path).
3. colour jitter (``augment.color_jitter`` / ``color_jitter_p``, torchvision's definition like albumentations') and
   random erasing (``augment.random_erasing_*``), image only.

Images arrive normalised; they are taken back to 0..1 for the augmentation and normalised again after, so borders
are black and colour jitter sees real colours. Randomness comes from a generator of this object (``seed(s)`` per
epoch, one draw per batch), never from the global torch RNG, so a seed gives the same augmentation on any machine
and the training loop's other random draws do not move.

Without a GPU ``kornia`` still runs, on the CPU, with one log line saying so: a config written for a GPU server stays
usable on a laptop for a smoke run, with the same augmentation, only slower than albumentations' worker processes
(``bench/augment.py`` prints both).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import torch

from ..config import ConfigError
from ..config.schema import Config


def window_size(cfg: Config) -> tuple[int, int]:
    """The loader's window ``(h, w)`` for the kornia backend: the crop divided by the smallest scale (see above)."""
    from .transforms import _crop_size
    ch, cw = _crop_size(cfg)
    aug = cfg.augment
    lo = _scale_range(cfg)[0] if aug.enabled else 1.0
    f = 1.0 / lo if lo < 1.0 else 1.0
    return int(math.ceil(ch * f)), int(math.ceil(cw * f))


def _scale_range(cfg: Config) -> tuple[float, float]:
    sr = cfg.augment.scale_range
    if len(sr) != 2 or not 0 < sr[0] <= sr[1]:
        raise ConfigError(f"augment.scale_range must be [min, max] with 0 < min <= max, got {sr}")
    return float(sr[0]), float(sr[1])


def build_loader_transform(cfg: Config, seed: int | None = None):
    """The loader's part of the kornia backend: pad (image 0, mask ignore) and a ``cat_max_ratio`` crop of
    :func:`window_size`, in albumentations (one CPU op per tile, no resampling)."""
    import albumentations as A
    import cv2

    from .transforms import CatMaxRatioCrop
    wh, ww = window_size(cfg)
    ignore = int(cfg.dataset.ignore_index)
    aug = cfg.augment
    return A.Compose([
        A.PadIfNeeded(min_height=wh, min_width=ww, position="center", border_mode=cv2.BORDER_CONSTANT, fill=0,
                      fill_mask=ignore, p=1.0),
        CatMaxRatioCrop(wh, ww, cat_max_ratio=aug.cat_max_ratio if aug.enabled else 1.0, ignore_index=ignore),
    ], seed=seed)


class KorniaAugment:
    """``(images [B,3,H,W] normalised, masks [B,H,W] int64) -> (images, masks)`` at the crop size, on their device.

    ``mean`` / ``std`` are the dataset's normalisation (0..1 scale). ``image_resample`` exists for tests (nearest makes
    image and mask resampling identical)."""

    def __init__(self, cfg: Config, mean, std, seed: int = 0, image_resample: str = "bilinear"):
        import kornia.augmentation as K
        from kornia.constants import DataKey, Resample

        from .transforms import _crop_size
        aug = cfg.augment
        self.ignore = int(cfg.dataset.ignore_index)
        self.crop = _crop_size(cfg)
        self.window = window_size(cfg)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        ch, cw = self.crop
        geo: list = []
        if aug.enabled:
            lo, hi = _scale_range(cfg)
            wh, ww = self.window
            if (lo, hi) != (1.0, 1.0) or self.window != self.crop:
                # a window of crop/s pixels out of the loader's window, s in [lo, hi]: area share (crop/(s*win))^2
                a_lo = min(1.0, (ch * cw) / (hi * hi * wh * ww))
                a_hi = min(1.0, (ch * cw) / (lo * lo * wh * ww))
                geo.append(K.RandomResizedCrop((ch, cw), scale=(a_lo, a_hi), ratio=(cw / ch, cw / ch), p=1.0,
                                               resample=image_resample))
            if aug.hflip > 0:
                geo.append(K.RandomHorizontalFlip(p=float(aug.hflip)))
            if aug.vflip > 0:
                geo.append(K.RandomVerticalFlip(p=float(aug.vflip)))
            if aug.rotate_deg > 0 and aug.rotate_p > 0:
                geo.append(K.RandomAffine(degrees=float(aug.rotate_deg), p=float(aug.rotate_p),
                                          resample=image_resample, padding_mode="zeros"))
            if aug.elastic_p > 0:
                sigma = float(aug.elastic_sigma)
                k = min(2 * int(4 * sigma) + 1, 2 * (min(ch, cw) // 2) - 1)
                # kornia displaces in grid units (-1..1 across the image); albumentations' alpha is in pixels
                geo.append(K.RandomElasticTransform(kernel_size=(k, k), sigma=(sigma, sigma),
                                                    alpha=(2 * float(aug.elastic_alpha) / cw,
                                                           2 * float(aug.elastic_alpha) / ch),
                                                    p=float(aug.elastic_p), resample=image_resample,
                                                    padding_mode="zeros"))
        self.geometric = K.AugmentationSequential(
            *geo, data_keys=["input", "mask"],
            extra_args={DataKey.MASK: {"resample": Resample.NEAREST, "align_corners": None}}) if geo else None
        colour: list = []
        if aug.enabled:
            cj = list(aug.color_jitter)
            if len(cj) != 4:
                raise ConfigError(f"augment.color_jitter must be [brightness, contrast, saturation, hue], got {cj}")
            if aug.color_jitter_p > 0 and any(v > 0 for v in cj):
                b, c, s, h = (float(v) for v in cj)
                if not 0 <= h <= 0.5:
                    raise ConfigError(f"augment.color_jitter: hue must be in 0..0.5, got {h}")
                colour.append(K.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h,
                                            p=float(aug.color_jitter_p)))
            if aug.random_erasing_p > 0:
                lo_e, hi_e = (float(v) for v in aug.random_erasing_scale)
                if not 0 < lo_e <= hi_e < 1:
                    raise ConfigError(f"augment.random_erasing_scale must be [min, max] area shares with 0 < min <= "
                                      f"max < 1, got {aug.random_erasing_scale}")
                colour.append(K.RandomErasing(scale=(lo_e, hi_e), value=0.0, p=float(aug.random_erasing_p)))
        self.colour = K.AugmentationSequential(*colour, data_keys=["input"]) if colour else None
        self.generator = torch.Generator()
        self.seed(seed)

    @property
    def active(self) -> bool:
        return self.geometric is not None or self.colour is not None or self.window != self.crop

    def seed(self, seed: int, start_batch: int = 0) -> None:
        """Start an epoch's draws; ``start_batch`` skips the draws of batches already trained (mid-epoch resume)."""
        self.generator.manual_seed(int(seed) % (2 ** 63 - 1))
        for _ in range(int(start_batch)):
            self._next_seed()

    def _next_seed(self) -> int:
        return int(torch.randint(0, 2 ** 62, (1,), generator=self.generator).item())

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dev = images.device
        devices = [dev] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=dev.type if devices else "cuda"), \
                warnings.catch_warnings():
            # masks go through kornia's nearest resampling with align_corners left unset (grid_sample's default,
            # False, is what is wanted); torch warns about the unset flag on every call
            warnings.filterwarnings("ignore", message="Default grid_sample and affine_grid behavior")
            torch.manual_seed(self._next_seed())
            mean, std = self.mean.to(dev), self.std.to(dev)
            x = (images.float() * std + mean).clamp_(0.0, 1.0)
            # masks travel as (id + 1) floats: whatever a warp brings in from outside is 0, i.e. the ignore index
            m = (masks.to(torch.float32) + 1.0).unsqueeze(1)
            m[m == self.ignore + 1] = 0.0
            if self.geometric is not None:
                x, m = self.geometric(x, m)
            elif x.shape[-2:] != self.crop:                     # loader window larger than the crop: centre cut
                x, m = _centre(x, self.crop), _centre(m, self.crop)
            if self.colour is not None:
                x = self.colour(x)
            out = ((x.clamp(0.0, 1.0) - mean) / std).to(images.dtype)
            ids = m.squeeze(1).round().to(torch.int64) - 1
            ids[ids < 0] = self.ignore
        return out.contiguous(), ids.contiguous()


def _centre(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = t.shape[-2:]
    y, x = (h - size[0]) // 2, (w - size[1]) // 2
    return t[..., y:y + size[0], x:x + size[1]]


def build_batch_augment(cfg: Config, device: torch.device, mean, std, log=None, seed: int = 0
                        ) -> Optional[KorniaAugment]:
    """The device-side augmenter for ``augment.backend: kornia`` (None for albumentations). ``log(text)`` gets one
    line saying where it runs."""
    if getattr(cfg.augment, "backend", "albumentations") != "kornia":
        return None
    try:
        import kornia  # noqa: F401
    except ImportError as e:              # a declared dependency; only a broken install lands here
        raise ConfigError("augment.backend: kornia needs the kornia package (pip install kornia), or set "
                          "augment.backend: albumentations") from e
    aug = KorniaAugment(cfg, mean, std, seed=seed)
    if log is not None:
        if device.type == "cuda":
            log(f"augmentation: kornia on {device} (batch-wise; the loader only cuts {aug.window[0]}x{aug.window[1]} "
                f"windows)")
        else:
            log("augmentation: augment.backend is kornia but there is no GPU: kornia runs on the CPU in the "
                "training process (slower than albumentations' loader workers; set augment.backend: albumentations "
                "for CPU runs)")
    return aug
