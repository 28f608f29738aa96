"""Prediction files of a run: id PNG, colour PNG with the dataset palette, optional fp16 probabilities.

Layout: ``<save_dir>/<variant>/<tile id>.png`` (single-channel class ids, what ``mapsage score`` reads),
``<tile id>_color.png`` (RGB, the dataset's palette) and ``<tile id>_prob.npz`` (``probs``: float16 ``[C,H,W]``).
A tile id with ``/`` (``Tile 1/image_part_001``) keeps its folders. Every file is registered as an ``artifact``
event (kinds ``pred``, ``pred_color``, ``prob``) with the tile id and variant, so the app can find it."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..data.tileids import safe_part, tile_stem  # noqa: F401  (re-exported: prediction file names)
from ..errors import UserError
from ..palette import palette_rgb


def palette_array(palette: Sequence[str], num_classes: int) -> np.ndarray:
    """``[256,3]`` uint8 lookup: the config palette ("#RRGGBB", checked) for class ids, black for the rest
    (ignore); a dataset without a palette gets :func:`mapsage.palette.fallback_color`."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    if palette:
        if len(palette) < num_classes:
            raise UserError(f"dataset.palette has {len(palette)} colours for {num_classes} classes; give one "
                            "'#RRGGBB' colour per class")
        for i, colour in enumerate(palette[:num_classes]):
            c = str(colour).lstrip("#")
            if len(c) != 6:
                raise UserError(f"dataset.palette[{i}] = {colour!r} is not a '#RRGGBB' colour")
            lut[i] = [int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)]
    else:  # the workbench's fallback class colours (mapsage.palette), as in the app and the reports
        lut[:num_classes] = palette_rgb([], num_classes)
    return lut


def colorize(pred: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return lut[np.asarray(pred, dtype=np.uint8)]


class PredictionWriter:
    """Writes prediction files for one variant and registers them as artifacts."""

    def __init__(self, save_dir: str | Path, variant: str, palette: Sequence[str], num_classes: int,
                 events=None, split: str | None = None, save_probabilities: bool = False,
                 save_color: bool = True):
        self.root = Path(save_dir) / safe_part(variant)
        self.variant = variant
        self.lut = palette_array(palette, num_classes)
        self.events = events
        self.split = split
        self.save_probabilities = save_probabilities
        self.save_color = save_color
        self.written: list[Path] = []

    def write(self, tile_id: str, pred: np.ndarray, probs: np.ndarray | None = None) -> dict[str, Path]:
        stem = self.root / tile_stem(tile_id)
        stem.parent.mkdir(parents=True, exist_ok=True)
        out: dict[str, Path] = {}
        pred = np.asarray(pred)
        if pred.max(initial=0) > 255:
            raise UserError(f"prediction for {tile_id} has class ids above 255; an id PNG cannot hold them")
        pred_u8 = pred.astype(np.uint8)
        out["pred"] = stem.with_name(stem.name + ".png")
        Image.fromarray(pred_u8).save(out["pred"], optimize=False, compress_level=1)
        if self.save_color:
            out["pred_color"] = stem.with_name(stem.name + "_color.png")
            Image.fromarray(colorize(pred_u8, self.lut)).save(out["pred_color"], compress_level=1)
        if self.save_probabilities and probs is not None:
            out["prob"] = stem.with_name(stem.name + "_prob.npz")
            np.savez_compressed(out["prob"], probs=np.asarray(probs, dtype=np.float16))
        for kind, path in out.items():
            self.written.append(path)
            if self.events is not None:
                self.events.artifact(kind, path, tile=tile_id, variant=self.variant, split=self.split)
        return out
