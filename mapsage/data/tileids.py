"""Tile ids as file names: a tile id may hold ``/`` (``Tile 1/image_part_001``); its parts become folders, each
made file-system safe. Prediction files, label versions and review exports name their files this way."""
from __future__ import annotations

import re
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+@-]+")


def safe_part(text: str) -> str:
    """A file-system-safe name for a variant or tile id part (no separators, no spaces)."""
    out = _UNSAFE.sub("_", str(text)).strip("._")
    return out or "_"


def tile_stem(tile_id: str) -> Path:
    """Relative path (without suffix) for a tile id: its ``/`` parts become folders, each part made safe."""
    parts = [safe_part(p) for p in str(tile_id).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return Path(*parts) if parts else Path("_")
