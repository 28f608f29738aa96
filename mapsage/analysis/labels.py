"""Corrections as label versions: a reviewer's corrected masks never overwrite the dataset's own labels.

Layout (``<workspace>/labels/<dataset name>/``, or ``dataset.labels_root``)::

    v1/manifest.json  v1/masks/<tile id>.png      (class ids 0..C-1, the ignore index elsewhere)
    v2/manifest.json  v2/masks/...

Each save makes a new, immutable version ``vN`` holding the tiles corrected in it; the manifest records the
reviewer, the time, the parent version and per tile where the mask came from (``refined`` / ``raw`` mask of a run,
or an ``edit``) and how many pixels differ from the label it replaced. The label of a tile in "original +
corrections vN" is the tile's mask in the newest version ``<= N`` that holds it, else the dataset's own label:
:func:`resolve` gives that view, :class:`mapsage.data.SegDataset` reads it when ``dataset.label_version`` is set,
and :func:`export_version` writes it as a dataset folder in the dataset's own mask format (colour codes, LoveDA
values, index values).

Versions are numbered under a lock (an exclusive ``mkdir`` of the version folder), so two reviewers saving at the
same time get two versions, never one half-written folder.
"""
from __future__ import annotations

import getpass
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
from PIL import Image

from ..config import resolve_path
from ..data.decode import build_decoder
from ..data.label_versions import (  # noqa: F401  (the reading side lives next to the datasets; re-exported)
    MANIFEST,
    LabelVersionError,
    history,
    labels_root,
    latest_version,
    read_correction,
    resolve,
    safe_name,
    versions,
)
from ..data.samples import discover_samples
from ..data.tileids import tile_stem

SOURCES = ("refined", "raw", "edit", "import")


def _tile_file(tile: str) -> Path:
    stem = tile_stem(tile)
    return stem.with_name(stem.name + ".png")


def _check_mask(tile: str, mask: np.ndarray, num_classes: Optional[int], ignore_index: int) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[..., 0]
    if m.ndim != 2 or m.size == 0:
        raise LabelVersionError(f"correction of tile {tile!r}: expected a 2-D class-id mask, got shape {m.shape}")
    if m.dtype.kind not in "uib":
        raise LabelVersionError(f"correction of tile {tile!r}: class ids must be integers, got {m.dtype}")
    if num_classes is not None:
        bad = np.unique(m[(m != ignore_index) & ((m < 0) | (m >= num_classes))])
        if bad.size:
            raise LabelVersionError(f"correction of tile {tile!r}: values {bad[:8].tolist()} are neither class ids "
                                    f"0..{num_classes - 1} nor the ignore index {ignore_index}")
    return m.astype(np.uint8)


def add_version(folder: Path, corrections: Mapping[str, np.ndarray], *, reviewer: Optional[str] = None,
                sources: Optional[Mapping[str, Mapping[str, Any]]] = None, originals: Optional[Mapping[str, Any]]
                = None, note: str = "", num_classes: Optional[int] = None, ignore_index: int = 255,
                dataset: Optional[str] = None) -> dict:
    """Store ``{tile id: class-id mask}`` as a new version; returns its manifest.

    ``sources``: per tile ``{"source": refined|raw|edit, "run": ..., "variant": ...}``; ``originals``: per tile
    the label the correction replaces (array), for the changed-pixel count."""
    if not corrections:
        raise LabelVersionError("a label version needs at least one corrected tile")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if reviewer is None:
        try:
            reviewer = getpass.getuser()
        except (KeyError, OSError):
            reviewer = "unknown"
    checked = {str(t): _check_mask(str(t), m, num_classes, ignore_index) for t, m in corrections.items()}
    for _ in range(1000):                     # claim the next number with an exclusive mkdir
        n = latest_version(folder) + 1
        while (folder / f"v{n}").exists():
            n += 1
        vdir = folder / f"v{n}"
        try:
            vdir.mkdir()
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - a thousand collisions
        raise LabelVersionError(f"{folder}: could not claim a new label version")
    tiles: dict[str, dict] = {}
    for tile, mask in checked.items():
        rel = Path("masks") / _tile_file(tile)
        (vdir / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(vdir / rel)
        info = {"file": rel.as_posix(), "height": int(mask.shape[0]), "width": int(mask.shape[1]),
                **dict((sources or {}).get(tile) or {})}
        src = info.get("source", "edit")
        if src not in SOURCES:
            raise LabelVersionError(f"correction of tile {tile!r}: source must be one of {list(SOURCES)}, got {src!r}")
        info["source"] = src
        orig = (originals or {}).get(tile)
        if orig is not None:
            o = np.asarray(orig)
            if o.shape == mask.shape:
                info["changed_pixels"] = int((o != mask).sum())
        tiles[tile] = info
    manifest = {"version": n, "parent": n - 1 if n > 1 else 0, "dataset": dataset, "reviewer": reviewer,
                "created_at": time.time(), "note": note or "", "tiles": tiles}
    tmp = vdir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(tmp, vdir / MANIFEST)          # the manifest last: a version without it does not exist
    return manifest


# ------------------------------------------------------------------------------------------------ export
def _encoder(ds) -> tuple[str, Any]:
    """How class ids go back to the dataset's stored form: (``"index"``, uint8 LUT) or (``"colour"``, [256,3])."""

    dec = build_decoder(ds)
    C, ign = ds.num_classes, int(ds.ignore_index)
    if ds.type == "color_mask":
        lut = np.zeros((256, 3), np.uint8)
        codes = list(dec._code_class[: len(dec.colours)])
        for k in range(C):
            lut[k] = dec.colours[codes.index(k)]
        if dec.n_ignore_codes:
            lut[ign] = dec.colours[len(ds.color_map)]
        return "colour", (lut, bool(dec.n_ignore_codes))
    if ds.type in ("loveda", "index_mask"):
        lut = np.zeros(256, np.uint8)
        inv: dict[int, int] = {}
        for raw, cls in sorted(dec.value_map.items()):
            inv.setdefault(cls, raw)
        for k in range(C):
            if inv[k] > 255:
                raise LabelVersionError(f"dataset.value_map stores class {k} as {inv[k]}, which an 8-bit PNG cannot "
                                        f"hold")
            lut[k] = inv[k]
        lut[ign] = dec.ignore_values[0] if dec.ignore_values else ign
        return "index", (lut, bool(dec.ignore_values))
    raise LabelVersionError(f"dataset.type {ds.type!r}: exporting corrections in that format is not supported "
                            f"(part masks would need one file per part); use a color_mask or index_mask dataset")


def encode_mask(ids: np.ndarray, ds) -> np.ndarray:
    """Class ids (ignore index elsewhere) in the dataset's stored form: RGB colours for ``color_mask``, raw values
    for ``loveda`` / ``index_mask``. Raises when ignored pixels have no stored form (no ``ignore_colors``)."""
    kind, (lut, has_ignore) = _encoder(ds)
    ids = np.asarray(ids, np.uint8)
    ign = int(ds.ignore_index)
    if not has_ignore and (ids == ign).any():
        key = "dataset.ignore_colors" if kind == "colour" else "dataset.ignore_values"
        raise LabelVersionError(f"the corrected mask has ignored pixels but {key} is empty, so the dataset's format "
                                f"has no value for them; add one to {key} or label those pixels")
    return lut[ids]


def export_version(cfg, version: int, out_dir: str | Path, *, only_corrected: bool = False,
                   folder: Optional[Path] = None, link: bool = True) -> dict:
    """Write "original + corrections v``version``" as a dataset folder in the dataset's own format.

    Every sample of every split keeps its path relative to ``dataset.root``: images and untouched masks are
    hard-linked (copied across file systems), corrected masks are encoded (:func:`encode_mask`) and written in
    place of the original ones. ``only_corrected``: write only the corrected tiles (image + mask). The same
    config with ``dataset.root`` set to ``out_dir`` reads the export. Returns counts and the paths written."""

    ds = cfg.dataset
    folder = Path(folder) if folder is not None else labels_root(ds)
    corrected = resolve(folder, version)
    if not corrected:
        raise LabelVersionError(f"label version v{version} under {folder} holds no corrections")
    _encoder(ds)                                 # unsupported formats fail before anything is written
    root = resolve_path(ds.root)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise LabelVersionError(f"{out}: the export folder exists and is not empty; pick a new folder")
    samples = discover_samples(ds)
    by_id = {s.id: s for s in samples}
    missing = sorted(t for t in corrected if t not in by_id)
    if missing:
        raise LabelVersionError(f"label version v{version} corrects tile(s) {missing[:5]} that dataset "
                                f"{ds.name} (root {root}) does not have")
    n_img = n_mask = n_corr = 0

    def place(src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if link:
            try:
                os.link(src, dst)
                return
            except OSError:
                pass
        shutil.copy2(src, dst)

    def rel(p: Path) -> Path:
        try:
            return Path(p).resolve().relative_to(root.resolve())
        except ValueError:
            raise LabelVersionError(f"{p} is outside dataset.root {root}; the export keeps paths relative to "
                                    f"the root") from None

    for s in samples:
        is_corr = s.id in corrected
        if only_corrected and not is_corr:
            continue
        place(Path(s.image_path), out / rel(Path(s.image_path)))
        n_img += 1
        if is_corr:
            if s.mask_path is None:
                raise LabelVersionError(f"tile {s.id} has no mask file in {ds.name} to put the correction in place "
                                        f"of (a predict-only split)")
            dst = out / rel(Path(s.mask_path))
            if dst.suffix.lower() in (".jpg", ".jpeg"):
                raise LabelVersionError(f"{s.mask_path}: JPEG masks are lossy; the corrected mask cannot be stored "
                                        f"in that format")
            dst.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(encode_mask(read_correction(corrected[s.id]), ds)).save(dst)
            n_corr += 1
        elif s.mask_path is not None:
            place(Path(s.mask_path), out / rel(Path(s.mask_path)))
            n_mask += 1
    # extra files the dataset reads beside the samples (a classes.json) travel too
    for extra in root.glob("*.json"):
        place(extra, out / extra.name)
    info = {"version": int(version), "dataset": ds.name, "source_root": str(root), "images": n_img,
            "masks_linked": n_mask, "masks_corrected": n_corr, "only_corrected": only_corrected,
            "created_at": time.time()}
    (out / "mapsage_label_version.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return info


__all__ = ["LabelVersionError", "labels_root", "versions", "latest_version", "add_version", "resolve",
           "read_correction", "history", "encode_mask", "export_version"]
