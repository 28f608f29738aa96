"""Side-by-side thumbnails of the tiles an A/B variant changed most: image, label, baseline prediction, variant
prediction and a change map, each inlined as a ``data:`` URI (the report stays one self-contained file).

The pictures come from the runs' artifacts (``image``, ``label``, ``pred`` / ``refined`` id PNGs registered by the
inference and refinement stages). Where a run registered its predictions but not the tile's image or label (a TTA
A/B run saves predictions only), they are read from the dataset the run's resolved config names.

Colours: the dataset's ``palette`` per class id; ignored label pixels black. Change map: the image in grey, pixels
the variant changed in green where it now agrees with the label (fixed), red where the baseline agreed and the
variant does not (broken), orange where both are wrong, cyan where the label is ignored (not scored).
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from ..palette import class_lut
from .data import ReportData, is_missing

FIXED_RGB, BROKEN_RGB, BOTH_WRONG_RGB, UNSCORED_RGB = (40, 200, 60), (230, 30, 30), (255, 160, 0), (0, 190, 255)
PRED_KINDS = ("pred", "refined")


@dataclass
class Panel:
    caption: str
    uri: Optional[str] = None          # data: URI, or None when the picture is not available
    note: Optional[str] = None         # why it is missing, or a short fact under the picture


@dataclass
class TileThumbs:
    run_id: str
    tile: str
    split: str
    baseline: str
    variant: str
    criterion: str
    rank: int
    baseline_score: float
    variant_score: float
    delta: float
    panels: list[Panel] = field(default_factory=list)


def data_uri(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB").save(buf, format="JPEG", quality=82, optimize=True)
        mime = "image/jpeg"
    else:
        img.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _target_size(shape: tuple[int, int], max_px: int) -> tuple[int, int]:
    h, w = shape
    s = min(1.0, max_px / max(h, w))
    return max(1, round(w * s)), max(1, round(h * s))


def _resize_ids(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(ids.astype(np.uint8)).resize(size, Image.NEAREST))


def _read_ids(path: Path) -> Optional[np.ndarray]:
    """A single-channel class-id PNG as uint8 ``[H, W]`` (None for an RGB picture). A palette-mode PNG's indices
    are taken as the ids (the stages write ``L`` PNGs; the palette of a ``P`` one is only its display)."""
    with Image.open(path) as im:
        if im.mode in ("L", "P"):
            return np.asarray(im).astype(np.uint8)
        return None


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class _DatasetIndex:
    """Tile id -> (image path, mask path) from a run's resolved config (read once per config)."""

    def __init__(self):
        self._cache: dict[str, Any] = {}

    def lookup(self, cfg: dict, tile: str) -> tuple[Optional[Any], Optional[str]]:
        """``((sample, dataset_cfg) or None, why-not)``."""
        key = repr(sorted((cfg.get("dataset") or {}).items(), key=lambda kv: kv[0]))
        if key not in self._cache:
            try:
                from ..config import config_from_dict
                from ..data import discover_samples

                full = config_from_dict({k: v for k, v in cfg.items() if k != "meta"})
                self._cache[key] = ({s.id: s for s in discover_samples(full.dataset)}, full.dataset, None)
            except Exception as exc:  # noqa: BLE001 - a report shows what it can and says why
                self._cache[key] = ({}, None, f"dataset of the run's config unavailable ({exc})")
        index, ds_cfg, why = self._cache[key]
        if why:
            return None, why
        sample = index.get(tile)
        if sample is None:
            return None, f"tile {tile} not found in dataset.root"
        return (sample, ds_cfg), None


def _artifact_path(row: pd.Series, data: ReportData) -> Optional[Path]:
    p = row.get("abs_path")
    if is_missing(p) or not p:
        p = row.get("path")
        if is_missing(p) or not p or not Path(str(p)).is_absolute():
            return None
    return Path(str(p))


def _find(arts: pd.DataFrame, kinds: Sequence[str], variant: Optional[str] = None) -> Optional[pd.Series]:
    df = arts[arts["kind"].isin(list(kinds))]
    if variant is not None:
        df = df[df["variant"] == variant]
    if df.empty:
        return None
    return df.sort_values("seq").iloc[-1]


def _grey(image: Optional[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    if image is None:
        return np.full((size[1], size[0], 3), 60, np.uint8)
    g = np.asarray(Image.fromarray(image).convert("L").resize(size, Image.BILINEAR), np.float32) * 0.55
    return np.repeat(g[..., None], 3, axis=2).astype(np.uint8)


def change_map(base: np.ndarray, var: np.ndarray, label: Optional[np.ndarray], grey: np.ndarray,
               ignore_index: int = 255) -> tuple[np.ndarray, dict[str, int]]:
    """RGB change map and pixel counts (changed, fixed, broken, both_wrong, unscored), at the arrays' size."""
    out = grey.copy()
    changed = base != var
    counts = {"changed": int(changed.sum())}
    if label is None:
        out[changed] = BOTH_WRONG_RGB
        return out, counts
    scored = label != ignore_index
    fixed = changed & scored & (var == label)
    broken = changed & scored & (base == label)
    both = changed & scored & ~fixed & ~broken
    unscored = changed & ~scored
    out[fixed], out[broken], out[both], out[unscored] = FIXED_RGB, BROKEN_RGB, BOTH_WRONG_RGB, UNSCORED_RGB
    counts.update(fixed=int(fixed.sum()), broken=int(broken.sum()), both_wrong=int(both.sum()),
                  unscored=int(unscored.sum()))
    return out, counts


def tile_thumbnails(data: ReportData, changed: pd.DataFrame) -> list[TileThumbs]:
    """Thumbnails for each row of the ``changed_tiles`` table."""
    out: list[TileThumbs] = []
    if changed is None or changed.empty:
        return out
    index = _DatasetIndex()
    arts_all = data.artifacts
    for _, c in changed.iterrows():
        rid, tile = c["run_id"], str(c["tile"])
        cfg = data.config(rid)
        ds = cfg.get("dataset") or {}
        ignore = int(ds.get("ignore_index", 255) if ds.get("ignore_index") is not None else 255)
        names = data.class_names(rid)
        table = class_lut(data.palette(rid), max(1, len(names)))
        arts = arts_all[(arts_all["run_id"] == rid) & (arts_all["tile"] == tile)] if not arts_all.empty \
            else arts_all
        thumbs = TileThumbs(run_id=rid, tile=tile, split=str(c["split"]), baseline=str(c["baseline"]),
                            variant=str(c["variant"]), criterion=str(c["criterion"]), rank=int(c["rank"]),
                            baseline_score=float(c["baseline_score"]), variant_score=float(c["variant_score"]),
                            delta=float(c["delta"]))
        # --- sources
        image = label = None
        image_note = label_note = None
        row = _find(arts, ["image"])
        path = _artifact_path(row, data) if row is not None else None
        if path is not None and path.exists():
            image = _read_rgb(path)
        row = _find(arts, ["label"])
        path = _artifact_path(row, data) if row is not None else None
        if path is not None and path.exists():
            label = _read_ids(path)
        if image is None or label is None:
            found, why = index.lookup(cfg, tile)
            if found is not None:
                sample, ds_cfg = found
                if image is None:
                    try:
                        from ..data import load_image
                        image = load_image(sample.image_path)
                    except Exception as exc:  # noqa: BLE001
                        image_note = f"image unreadable: {exc}"
                if label is None and sample.mask_path is not None:
                    try:
                        from ..data import load_mask
                        label = load_mask(sample.mask_path, ds_cfg)
                    except Exception as exc:  # noqa: BLE001
                        label_note = f"label unreadable: {exc}"
            else:
                image_note = image_note or why
                label_note = label_note or why
        preds: dict[str, Optional[np.ndarray]] = {}
        pred_notes: dict[str, str] = {}
        for v in (thumbs.baseline, thumbs.variant):
            row = _find(arts, PRED_KINDS, v)
            path = _artifact_path(row, data) if row is not None else None
            if path is None or not path.exists():
                preds[v] = None
                pred_notes[v] = ("prediction not saved (eval.save_predictions off?)" if row is None
                                 else f"prediction file missing: {path}")
                continue
            preds[v] = _read_ids(path)
            if preds[v] is None:
                pred_notes[v] = f"{path.name} is not a class-id PNG"
        # --- a common size
        shape = next((a.shape[:2] for a in (label, preds.get(thumbs.baseline), preds.get(thumbs.variant), image)
                      if a is not None), None)
        if shape is None:
            thumbs.panels.append(Panel("tile", None, image_note or "no picture of this tile was stored"))
            out.append(thumbs)
            continue
        size = _target_size(shape, data.thumb_px)

        def fit(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
            if a is None or a.shape[:2] != shape:
                return None if a is None else _resize_ids(a, (shape[1], shape[0]))
            return a

        label_f, base_f, var_f = fit(label), fit(preds.get(thumbs.baseline)), fit(preds.get(thumbs.variant))
        if image is not None:
            thumbs.panels.append(Panel("image", data_uri(Image.fromarray(image).resize(size, Image.BILINEAR),
                                                         "JPEG")))
        else:
            thumbs.panels.append(Panel("image", None, image_note or "image not available"))
        if label_f is not None:
            thumbs.panels.append(Panel("label", data_uri(Image.fromarray(table[_resize_ids(label_f, size)]))))
        else:
            thumbs.panels.append(Panel("label", None, label_note or "label not available"))
        for role, v, arr in (("baseline", thumbs.baseline, base_f), ("variant", thumbs.variant, var_f)):
            if arr is not None:
                thumbs.panels.append(Panel(f"{role}: {v}", data_uri(Image.fromarray(table[_resize_ids(arr, size)]))))
            else:
                thumbs.panels.append(Panel(f"{role}: {v}", None, pred_notes.get(v, "not available")))
        if base_f is not None and var_f is not None:
            cmap, counts = change_map(base_f, var_f, label_f, _grey(image, (shape[1], shape[0])), ignore)
            note = f"{counts['changed']:,} px changed"
            if "fixed" in counts:
                note += f": {counts['fixed']:,} fixed, {counts['broken']:,} broken, {counts['both_wrong']:,} " \
                        f"still wrong, {counts['unscored']:,} unscored"
            small = np.asarray(Image.fromarray(cmap).resize(size, Image.NEAREST))
            thumbs.panels.append(Panel("change", data_uri(Image.fromarray(small)), note))
        out.append(thumbs)
    return out
