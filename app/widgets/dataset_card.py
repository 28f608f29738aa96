"""What the Home page says about a dataset: name, licence, number of image/mask pairs, split, classes and colours.

Everything comes from the dataset config (through :mod:`mapsage.config`) and from the files themselves (the
pairs are discovered by :mod:`mapsage.data` exactly as training discovers them; the licence line is read from the
``LICENSE.md`` kept beside the bundled copy)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mapsage.config import PROJECT_ROOT, load_config, resolve_path

from .palette import ClassPalette, palette_from_config


@dataclass
class DatasetCard:
    name: str
    config: str                        # the dataset config file, relative to the project root
    type: str
    root: str
    palette: ClassPalette
    ignore_index: int
    ignore_colors: list[str] = field(default_factory=list)
    licence: Optional[str] = None      # one line, markdown stripped
    licence_file: Optional[str] = None
    title: Optional[str] = None        # the first heading of the licence file
    n_pairs: Optional[int] = None
    split_counts: dict[str, int] = field(default_factory=dict)
    split_groups: dict[str, list[str]] = field(default_factory=dict)
    domains: list[str] = field(default_factory=list)
    error: Optional[str] = None


def _find_licence(root: Path) -> Optional[Path]:
    probe = root
    for _ in range(4):
        for name in ("LICENSE.md", "LICENCE.md", "LICENSE", "README.md"):
            if (probe / name).is_file():
                return probe / name
        if probe.parent == probe or probe == PROJECT_ROOT:
            break
        probe = probe.parent
    return None


def _licence_line(path: Path) -> tuple[Optional[str], Optional[str]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    title = None
    for line in text.splitlines():
        if line.startswith("# ") and title is None:
            title = line[2:].strip()
        m = re.match(r"^\s*[-*]?\s*Licen[cs]e:\s*(.+)$", line)
        if m:
            return re.sub(r"[*`]", "", m.group(1)).strip(), title
    return None, title


def dataset_card(config_path: str | Path) -> DatasetCard:
    cfg = load_config(config_path)
    ds = cfg.dataset
    path = Path(config_path)
    try:
        rel = str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        rel = str(path)
    card = DatasetCard(name=ds.name, config=rel, type=ds.type, root=ds.root, palette=palette_from_config(cfg),
                       ignore_index=ds.ignore_index, ignore_colors=list(ds.ignore_colors),
                       domains=list(ds.domains))
    root = resolve_path(ds.root)
    lic = _find_licence(root) if root.exists() else None
    if lic is not None:
        card.licence, card.title = _licence_line(lic)
        try:
            card.licence_file = str(lic.relative_to(PROJECT_ROOT))
        except ValueError:
            card.licence_file = str(lic)
    try:
        from mapsage.data import discover_samples, split_table

        samples = discover_samples(ds)
        card.n_pairs = sum(1 for s in samples if s.mask_path is not None)
        table = split_table(ds, samples)
        card.split_counts = dict(table.get("counts") or {})
        card.split_groups = {k: list(v) for k, v in (table.get("groups") or {}).items()}
    except Exception as exc:  # noqa: BLE001 - a missing dataset folder is shown, not fatal for the page
        card.error = f"{type(exc).__name__}: {exc}"
    return card
