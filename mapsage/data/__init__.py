"""Datasets: LoveDA's official layout, colour-coded and index mask folders, splits, transforms, statistics.

Public API (see docs/INTERFACES.md, "Data"):

* ``build_dataset(cfg, split, train=False, *, domain=None) -> SegDataset``; ``SegDataset.samples`` lists
  ``Sample(id, image_path, mask_path|None, domain|None, group, split)``; ``dataset[i]`` -> dict with ``image``
  (float32 [3,H,W] normalised), ``mask`` (int64 [H,W]; absent for predict-only splits), ``id``, ``domain``, ``path``.
* ``load_image(path) -> uint8 [H,W,3]``; ``load_mask(path, dataset_cfg) -> uint8 [H,W]`` (class ids / ignore).
* ``get_normalization(cfg) -> (mean, std)``, ``normalization_info(cfg)``, ``denormalize(tensor, cfg)``.
* ``build_train_transform(cfg)``; ``discover_samples``, ``assign_splits``, ``save_split(dataset_cfg, run_dir)``.
* ``class_pixel_counts(dataset)``, ``sample_class_counts(dataset)``, ``inspect_config(cfg)``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset import SegDataset, available_splits, build_dataset
from .decode import (
    ColorMaskDecoder,
    IndexMaskDecoder,
    MaskDecoder,
    MaskStats,
    build_decoder,
    color_hex,
    decoder_for,
    pack_rgb,
    parse_color,
)
from .io import image_size, load_image, read_color_mask, read_index_mask
from .normalization import denormalize, get_normalization, normalization_info, normalize_image
from .samples import Sample, discover_samples
from .splits import SPLIT_FILE, assign_splits, load_split, save_split, split_names, split_table
from .stats import class_pixel_counts, format_report, inspect_config, sample_class_counts, scan_dataset, summarize

__all__ = [
    "SegDataset", "Sample", "build_dataset", "available_splits", "discover_samples",
    "load_image", "load_mask", "load_mask_with_stats", "image_size", "read_color_mask", "read_index_mask",
    "MaskDecoder", "ColorMaskDecoder", "IndexMaskDecoder", "MaskStats", "build_decoder", "decoder_for",
    "parse_color", "color_hex", "pack_rgb",
    "get_normalization", "normalization_info", "denormalize", "normalize_image",
    "build_train_transform",
    "assign_splits", "split_names", "split_table", "save_split", "load_split", "SPLIT_FILE",
    "class_pixel_counts", "sample_class_counts", "scan_dataset", "summarize", "inspect_config", "format_report",
]


def __getattr__(name):  # albumentations is imported only when transforms are asked for
    if name == "build_train_transform":
        from .transforms import build_train_transform
        return build_train_transform
    raise AttributeError(name)


def load_mask(path: str | Path, dataset_cfg) -> np.ndarray:
    """Read and decode one mask file: ``uint8 [H, W]`` with class ids ``0..C-1`` and the ignore index.

    Raises :class:`~mapsage.errors.DataError` naming the file when it cannot be read or holds a colour/value the
    config does not name."""
    mask, _ = decoder_for(dataset_cfg).load(path, strict=True)
    return mask


def load_mask_with_stats(path: str | Path, dataset_cfg, strict: bool = True) -> tuple[np.ndarray, MaskStats]:
    return decoder_for(dataset_cfg).load(path, strict=strict)
