"""Class colours: each class is drawn in its dataset's own colour everywhere (charts, tables, swatches).

The palette comes from the run's resolved config (``dataset.classes`` / ``dataset.palette``), given either as a
:class:`mapsage.config.Config` or as the plain mapping stored with a run. A dataset without a palette gets a fixed,
distinguishable fallback so that the same class keeps the same colour across pages."""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Mapping

from mapsage.palette import FALLBACK, HIGH_CONTRAST, fallback_color, high_contrast, normalise_hex  # noqa: F401


@dataclass(frozen=True)
class ClassPalette:
    names: tuple[str, ...]
    colors: tuple[str, ...]

    def color_of(self, name_or_id: Any) -> str:
        if isinstance(name_or_id, (int,)) and not isinstance(name_or_id, bool):
            i = int(name_or_id)
            return self.colors[i] if 0 <= i < len(self.colors) else fallback_color(i)
        try:
            return self.colors[self.names.index(str(name_or_id))]
        except ValueError:
            return "#888888"

    def __len__(self) -> int:
        return len(self.names)


def _dataset_section(cfg: Any) -> tuple[list[str], list[str]]:
    if cfg is None:
        return [], []
    ds = getattr(cfg, "dataset", None)
    if ds is not None and not isinstance(cfg, Mapping):
        return list(ds.classes), list(ds.palette)
    if isinstance(cfg, Mapping):
        ds = cfg.get("dataset", cfg)
        if isinstance(ds, Mapping):
            return list(ds.get("classes") or []), list(ds.get("palette") or [])
    return [], []


def palette_from_config(cfg: Any, class_names: list[str] | None = None) -> ClassPalette:
    """The class palette of a config (a Config, a resolved-config mapping or its ``dataset`` section).

    ``class_names`` (e.g. from a metrics row) wins when the config names no classes; colours missing from the
    config fall back to a fixed sequence."""
    names, colors = _dataset_section(cfg)
    if not names:
        names = list(class_names or [])
    out = []
    for i, _ in enumerate(names):
        try:
            out.append(normalise_hex(colors[i]))
        except (IndexError, ValueError):
            out.append(fallback_color(i))
    return ClassPalette(tuple(str(n) for n in names), tuple(out))


def text_color_on(bg_hex: str) -> str:
    """Black or white, whichever reads better on ``bg_hex`` (WCAG relative luminance)."""
    h = normalise_hex(bg_hex)[1:]
    rgb = [int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "#000000" if lum > 0.179 else "#FFFFFF"


def swatches_html(palette: ClassPalette, ids: bool = True) -> str:
    """Inline HTML chips, one per class, in the class's own colour."""
    chips = []
    for i, (name, color) in enumerate(zip(palette.names, palette.colors)):
        label = f"{i} · {name}" if ids else name
        chips.append(
            f'<span style="display:inline-block;margin:2px 6px 2px 0;padding:2px 10px;border-radius:10px;'
            f'background:{color};color:{text_color_on(color)};font-size:0.85em;border:1px solid #0002">'
            f'{html.escape(label)} <code style="background:transparent;color:inherit">{color}</code></span>')
    return "".join(chips)
