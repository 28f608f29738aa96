"""Part-mask datasets: face parsing in the CelebAMask-HQ layout.

On disk, each image has one binary PNG per part it shows (``<key>_<part>.png``, white = the part), anywhere below
``dataset.part_masks.dir``; parts a face does not show have no file. CelebAMask-HQ, for example:

    CelebA-HQ-img/12.jpg
    CelebAMask-HQ-mask-anno/0/00012_skin.png, 00012_hair.png, 00012_l_eye.png, ...

The parts are painted into one label map in the order of ``dataset.part_masks.parts`` (part file suffix -> class
name): where two parts overlap, the later one wins (CelebAMask-HQ's own conversion paints skin first and cloth
last); pixels no part covers are ``dataset.part_masks.background`` (default: the first class). With
``numeric_ids`` (default) the key ``00012`` matches the image ``12.jpg``. A merged label smaller than its image by
a whole factor (CelebAMask-HQ: 512² masks for 1024² images) is scaled up to the image with nearest neighbour by
the dataset (:meth:`SegDataset.load_pair`).

A sample's ``mask_path`` is ``<folder>/<key>``: the stem its part files share (no file of that exact name exists).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..config.schema import DatasetCfg
from ..errors import DataError
from .decode import MaskDecoder, MaskStats
from .io import _open

_MASK_SUFFIXES = (".png",)


def _norm_key(key: str, numeric: bool) -> str:
    return str(int(key)) if numeric and key.isdigit() else key


def index_part_files(ds: DatasetCfg, root: Path) -> dict[str, Path]:
    """``{normalised key: <folder>/<key>}`` for every part file below ``part_masks.dir``."""
    pm = ds.part_masks
    pdir = root / pm.dir
    if not pdir.is_dir():
        raise DataError(f"dataset.part_masks.dir: folder {pdir} not found; point it at the folder holding the "
                        f"<image>_<part>.png files (relative to dataset.root)")
    parts = sorted(pm.parts, key=len, reverse=True)            # longest suffix first: "l_brow" before "brow"
    pattern = re.compile(r"^(?P<key>.+)_(?P<part>" + "|".join(re.escape(p) for p in parts) + r")$")
    out: dict[str, Path] = {}
    for f in pdir.rglob("*"):
        if f.suffix.lower() not in _MASK_SUFFIXES or not f.is_file():
            continue
        m = pattern.match(f.stem)
        if not m:
            continue
        key = _norm_key(m.group("key"), pm.numeric_ids)
        stem = f.parent / m.group("key")
        prev = out.get(key)
        if prev is not None and prev != stem:
            raise DataError(f"dataset.part_masks.dir: part files of {key!r} lie in two places ({prev} and {stem}); "
                            f"keep one copy")
        out[key] = stem
    if not out:
        raise DataError(f"dataset.part_masks.dir: no file under {pdir} is named <image>_<part>.png with a part of "
                        f"dataset.part_masks.parts ({', '.join(pm.parts)})")
    return out


def mask_stem_for(image: Path, index: dict[str, Path], ds: DatasetCfg) -> Path | None:
    return index.get(_norm_key(image.stem, ds.part_masks.numeric_ids))


class PartMaskDecoder(MaskDecoder):
    """Binary part PNGs -> one label map (class ids; no ignored pixels unless a part is mapped to none)."""

    kind = "part"

    def __init__(self, ds: DatasetCfg):
        self.num_classes = ds.num_classes
        self.ignore_index = int(ds.ignore_index)
        pm = ds.part_masks
        if not pm.parts:
            raise ConfigError("dataset.part_masks.parts is empty: name each part file suffix and its class in paint "
                              "order (e.g. {skin: skin, hair: hair})")
        classes = list(ds.classes)
        missing = sorted({c for c in pm.parts.values() if c not in classes})
        if missing:
            raise ConfigError(f"dataset.part_masks.parts names class(es) {missing} that are not in dataset.classes")
        bg = pm.background if pm.background is not None else classes[0]
        if bg not in classes:
            raise ConfigError(f"dataset.part_masks.background {bg!r} is not in dataset.classes")
        self.background = classes.index(bg)
        self.order = [(part, classes.index(name)) for part, name in pm.parts.items()]

    def read(self, path):
        """``{part: bool [H, W]}`` of the part files that exist for the stem ``path``."""
        stem = Path(path)
        out = {}
        for part, _ in self.order:
            f = stem.parent / f"{stem.name}_{part}.png"
            if f.is_file():
                img = _open(f, "part mask")
                arr = np.asarray(img.convert("L") if img.mode not in ("L", "1") else img)
                out[part] = arr > 0
        if not out:
            raise DataError(f"{stem}: no part file {stem.name}_<part>.png found (parts: "
                            f"{', '.join(p for p, _ in self.order)})")
        return out

    def decode(self, raw, path="<parts>", strict=True):
        shapes = {k: v.shape for k, v in raw.items()}
        if len(set(shapes.values())) != 1:
            raise DataError(f"{path}: part masks differ in size ({shapes}); all parts of one image must have the "
                            f"same size")
        shape = next(iter(shapes.values()))
        mask = np.full(shape, self.background, np.uint8)
        for part, cls in self.order:
            if part in raw:
                mask[raw[part]] = cls
        counts = np.bincount(mask.ravel(), minlength=256)[: self.num_classes].astype(np.int64)
        return mask, MaskStats(class_counts=counts, total=int(mask.size))


def fit_to_image(mask: np.ndarray, image_hw: tuple[int, int], path) -> np.ndarray:
    """Scale a merged part label up to its image by a whole factor (nearest neighbour): CelebAMask-HQ ships
    512² part masks for 1024² images. Any other size difference is left for the caller's size check."""
    h, w = mask.shape
    H, W = image_hw
    if H % h or W % w or H // h != W // w:
        return mask
    f = H // h
    return np.ascontiguousarray(np.repeat(np.repeat(mask, f, axis=0), f, axis=1))
