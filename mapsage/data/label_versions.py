"""Reading label versions (a reviewer's corrections, ``<workspace>/labels/<dataset>/vN/``): which versions
exist, the mask file of each tile in "original + corrections vN", and reading a corrected mask. Datasets read
them here (``dataset.label_version``); writing and exporting versions is :mod:`mapsage.analysis.labels`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
from PIL import Image

from ..config import resolve_path
from ..errors import DataError, UserError
from ..workspace import workspace_root
from .tileids import safe_part

MANIFEST = "manifest.json"


class LabelVersionError(UserError):
    """A label version that does not exist, or a correction that cannot be stored."""


def safe_name(name: str) -> str:
    """A dataset name as one safe folder name."""
    return safe_part(name)


def labels_root(dataset_cfg: Any = None, root: Optional[str | Path] = None) -> Path:
    """The label-version folder of a dataset: ``root`` / ``dataset.labels_root`` / ``<workspace>/labels``, then
    the dataset's name."""
    name = getattr(dataset_cfg, "name", None) or (dataset_cfg.get("name") if isinstance(dataset_cfg, Mapping)
                                                  else None) or "dataset"
    base = root or getattr(dataset_cfg, "labels_root", None) or (
        dataset_cfg.get("labels_root") if isinstance(dataset_cfg, Mapping) else None)
    if base:
        base_path = resolve_path(str(base))
    else:
        base_path = workspace_root() / "labels"
    return base_path / safe_name(str(name))


def versions(folder: Path) -> list[dict]:
    """The manifests of every complete version, oldest first (a folder without a manifest is skipped)."""
    folder = Path(folder)
    out = []
    if not folder.is_dir():
        return out
    for d in folder.iterdir():
        if d.is_dir() and d.name.startswith("v") and d.name[1:].isdigit() and (d / MANIFEST).is_file():
            try:
                out.append(json.loads((d / MANIFEST).read_text(encoding="utf-8")))
            except ValueError as exc:
                raise DataError(f"{d / MANIFEST}: unreadable label-version manifest ({exc})") from exc
    return sorted(out, key=lambda m: int(m["version"]))


def latest_version(folder: Path) -> int:
    vs = versions(folder)
    return int(vs[-1]["version"]) if vs else 0


def resolve(folder: Path, version: Optional[int]) -> dict[str, Path]:
    """``{tile id: mask file}`` of "original + corrections v``version``" (newest version wins per tile);
    ``{}`` for version None / 0 (the original labels)."""
    if not version:
        return {}
    folder = Path(folder)
    vs = versions(folder)
    known = [int(m["version"]) for m in vs]
    if int(version) not in known:
        raise LabelVersionError(
            f"dataset.label_version: v{int(version)} does not exist under {folder} (versions: "
            f"{', '.join(f'v{k}' for k in known) or 'none yet'}); save a correction on the Review page first or "
            f"set dataset.label_version: null for the original labels")
    out: dict[str, Path] = {}
    for m in vs:
        if int(m["version"]) > int(version):
            break
        for tile, info in m["tiles"].items():
            out[tile] = folder / f"v{m['version']}" / info["file"]
    return out


def read_correction(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            a = np.asarray(im)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the corrected mask ({exc})") from exc
    return a[..., 0] if a.ndim == 3 else a


def history(folder: Path, tile: str) -> list[dict]:
    """Every version that corrected ``tile``: ``version, reviewer, created_at, source, run, variant,
    changed_pixels``, oldest first."""
    out = []
    for m in versions(folder):
        info = m["tiles"].get(tile)
        if info:
            out.append({"version": m["version"], "reviewer": m.get("reviewer"), "created_at": m.get("created_at"),
                        "note": m.get("note"), **{k: info.get(k) for k in ("source", "run", "variant",
                                                                            "changed_pixels")}})
    return out
