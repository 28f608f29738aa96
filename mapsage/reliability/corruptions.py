"""Remote-sensing image corruptions for robustness validation (evaluation only, never training).

Each corruption maps an RGB ``uint8 [H,W,3]`` image and a severity ``1..5`` to a corrupted image of the same size,
deterministically: the random parts (noise, blur direction, cloud shapes, shift signs) come from a generator seeded
by :func:`corruption_seed` of the tile id, the corruption and the severity, so the same tile is corrupted the same
way in every run, every epoch and on every machine (a comparison of two checkpoints sees the same inputs).

Built on albumentations where it has the transform (Gaussian noise, defocus blur, motion blur, JPEG, brightness /
contrast, colour/band shift, down-then-up resampling), each at a fixed strength per severity (the range of the
albumentations transform is pinned to one value; only positions, directions and signs are drawn). Haze and cloud
occlusion are written here:

* ``haze``: the atmospheric scattering model ``I = J·t + A·(1 − t)`` with airlight ``A`` (bright grey-blue) and a
  transmission ``t`` that varies smoothly over the image around its severity's mean.
* ``cloud``: opaque clouds from thresholded smooth fractal noise covering about the severity's share of the image,
  soft-edged, plus a thin veil around them. :func:`corrupt` returns the pixels the clouds hide (opacity > 0.5) as
  an occlusion mask: they are scored apart, since no model can see the ground under a cloud.

Severity levels are the columns of :data:`LEVELS`; the workbench evaluates three of them by default
(``reliability.severities: [1, 3, 5]``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Optional

import cv2
import numpy as np

from ..corruption_levels import CORRUPTIONS, LABELS, LEVELS, MAX_SEVERITY  # noqa: F401  (the registry, re-exported)
from ..data.normalization import normalize_image
from ..errors import UserError


def describe_level(name: str, severity: int) -> str:
    """The strength of ``name`` at ``severity`` in words (for tables)."""
    v = LEVELS[name][severity - 1]
    return {
        "gaussian_noise": lambda: f"σ = {v * 255:.0f} grey levels",
        "defocus_blur": lambda: f"radius {v} px",
        "motion_blur": lambda: f"{v} px streak",
        "jpeg": lambda: f"quality {v}",
        "brightness_contrast": lambda: f"brightness ±{v[0]:.2f}, contrast {v[1]:+.2f}",
        "haze": lambda: f"veil {v:.2f}",
        "cloud": lambda: f"{v:.0%} cover",
        "color_shift": lambda: f"band offsets up to {v}",
        "resample": lambda: f"×{v:g} then back",
    }[name]()


def corruption_seed(tile: str, name: str, severity: int) -> int:
    """A 63-bit seed from the tile id, corruption and severity (stable across processes and machines)."""
    digest = hashlib.sha256(f"{tile}\x00{name}\x00{int(severity)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def check(name: str, severity: int, key: str = "reliability.corruptions") -> None:
    if name not in LEVELS:
        raise UserError(f"{key}: unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if not 1 <= int(severity) <= MAX_SEVERITY:
        raise UserError(f"reliability.severities: severity {severity} is outside 1..{MAX_SEVERITY}")


# --------------------------------------------------------------------------------------------- albumentations
def _album(transform, image: np.ndarray, seed: int) -> np.ndarray:
    import albumentations as A

    return A.Compose([transform], seed=int(seed % (2 ** 32)))(image=image)["image"]


def _gaussian_noise(img, v, seed, rng):
    import albumentations as A
    return _album(A.GaussNoise(std_range=(v, v), per_channel=True, p=1.0), img, seed)


def _defocus(img, v, seed, rng):
    import albumentations as A
    return _album(A.Defocus(radius=(v, v), alias_blur=(0.1, 0.1), p=1.0), img, seed)


def _motion(img, v, seed, rng):
    import albumentations as A
    return _album(A.MotionBlur(blur_limit=(v, v), allow_shifted=False, p=1.0), img, seed)


def _jpeg(img, v, seed, rng):
    import albumentations as A
    return _album(A.ImageCompression(compression_type="jpeg", quality_range=(v, v), p=1.0), img, seed)


def _brightness_contrast(img, v, seed, rng):
    import albumentations as A
    b = float(v[0]) * (1.0 if rng.random() < 0.5 else -1.0)     # brighter or darker, by tile
    return _album(A.RandomBrightnessContrast(brightness_limit=(b, b), contrast_limit=(v[1], v[1]), p=1.0),
                  img, seed)


def _color_shift(img, v, seed, rng):
    import albumentations as A
    s = [float(v) * sign * f for sign, f in zip(rng.choice([-1.0, 1.0], 3), (1.0, 0.6, 0.8))]
    return _album(A.RGBShift(r_shift_limit=(s[0], s[0]), g_shift_limit=(s[1], s[1]), b_shift_limit=(s[2], s[2]),
                             p=1.0), img, seed)


def _resample(img, v, seed, rng):
    import albumentations as A
    return _album(A.Downscale(scale_range=(v, v), interpolation_pair={"downscale": cv2.INTER_AREA,
                                                                      "upscale": cv2.INTER_LINEAR}, p=1.0),
                  img, seed)


# ------------------------------------------------------------------------------------------------- written here
def smooth_noise(shape: tuple[int, int], rng: np.random.Generator, octaves: int = 5, base: int = 4) -> np.ndarray:
    """Fractal value noise in [0, 1] (sum of bilinearly upsampled random grids, halving amplitude per octave)."""
    h, w = shape
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = base * 2 ** o
        gh, gw = max(2, int(round(cells * h / max(h, w))) + 1), max(2, int(round(cells * w / max(h, w))) + 1)
        grid = rng.random((gh, gw)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)


AIRLIGHT = np.array([225.0, 228.0, 235.0], np.float32)      # RGB of the haze / cloud colour


def _haze(img, v, seed, rng):
    veil = float(v) * (0.75 + 0.5 * smooth_noise(img.shape[:2], rng, octaves=3, base=2))   # 0.75v .. 1.25v
    veil = np.clip(veil, 0.0, 0.95)[..., None]
    out = img.astype(np.float32) * (1.0 - veil) + AIRLIGHT * veil
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def cloud_opacity(shape: tuple[int, int], cover: float, rng: np.random.Generator) -> np.ndarray:
    """Opacity in [0, 1]: 1 under opaque cloud (about ``cover`` of the pixels), soft edges, thin veil beyond."""
    n = smooth_noise(shape, rng, octaves=5, base=3)
    thr = float(np.quantile(n, 1.0 - cover))
    edge = 0.06
    core = np.clip((n - (thr - edge)) / (2 * edge), 0.0, 1.0)           # 0.5 at the threshold
    veil = 0.25 * np.clip((n - (thr - 0.25)) / 0.25, 0.0, 1.0)
    return np.maximum(core, veil).astype(np.float32)


def _cloud(img, v, seed, rng, want_mask: bool = False):
    alpha = cloud_opacity(img.shape[:2], float(v), rng)
    out = img.astype(np.float32) * (1.0 - alpha[..., None]) + AIRLIGHT * alpha[..., None]
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return out, alpha > 0.5


_FUNCS: dict[str, Callable] = {
    "gaussian_noise": _gaussian_noise, "defocus_blur": _defocus, "motion_blur": _motion, "jpeg": _jpeg,
    "brightness_contrast": _brightness_contrast, "haze": _haze, "cloud": _cloud, "color_shift": _color_shift,
    "resample": _resample,
}


@dataclass
class Corrupted:
    image: np.ndarray                     # uint8 [H,W,3]
    occluded: Optional[np.ndarray]        # bool [H,W] (cloud only): pixels whose ground is hidden


def corrupt(image: np.ndarray, name: str, severity: int, tile: str) -> Corrupted:
    """Corrupt one RGB ``uint8 [H,W,3]`` image; deterministic in ``(tile, name, severity)``."""
    check(name, severity)
    img = np.ascontiguousarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise UserError(f"tile {tile}: corruptions need an RGB uint8 [H,W,3] image, got {img.dtype} {img.shape}")
    seed = corruption_seed(tile, name, severity)
    rng = np.random.default_rng(seed)
    if name in ("brightness_contrast", "color_shift"):
        # signs (brighter or darker, which bands move up) belong to the tile, not the severity, so a higher
        # severity is the same shift, stronger
        rng = np.random.default_rng(corruption_seed(tile, name, 0))
    v = LEVELS[name][int(severity) - 1]
    if name == "cloud":
        out, occ = _cloud(img, v, seed, rng)
        return Corrupted(out, occ)
    out = _FUNCS[name](img, v, seed, rng)
    return Corrupted(np.ascontiguousarray(out, dtype=np.uint8), None)


class CorruptedView:
    """A dataset view that serves ``dataset``'s full tiles corrupted by ``name`` at ``severity``.

    Items are the dataset's (``image`` normalised as the dataset does, ``mask``, ``id``, ``domain``, ``path``) plus
    ``occluded`` (bool tensor, cloud only). Needs a :class:`mapsage.data.SegDataset` evaluated whole
    (``train=False``)."""

    def __init__(self, dataset, name: str, severity: int):
        check(name, severity)
        if getattr(dataset, "transform", None) is not None:
            raise UserError("corruptions are applied at evaluation only: build the dataset with train=False")
        self.dataset, self.name, self.severity = dataset, name, int(severity)
        self.split = getattr(dataset, "split", None)
        self.samples = dataset.samples

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        import torch


        ds = self.dataset
        s = ds.samples[i]
        image, mask = ds.load_pair(i)
        c = corrupt(image, self.name, self.severity, s.id)
        item = {"image": normalize_image(c.image, ds.mean, ds.std), "id": s.id, "domain": s.domain or "",
                "path": str(s.image_path)}
        if mask is not None:
            item["mask"] = torch.from_numpy(mask.astype(np.int64))
        if c.occluded is not None:
            item["occluded"] = torch.from_numpy(c.occluded)
        return item
