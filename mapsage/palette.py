"""Class colours: one module for every place a class is drawn (the app's charts and tables, the review map, saved
prediction PNGs, health-check overlays and reports), so a class keeps one colour everywhere.

A class takes its dataset's colour (``dataset.palette``, ``#RRGGBB``); a dataset without a palette, or a class the
palette does not reach, takes :func:`fallback_color` of its id: Okabe-Ito plus extra distinguishable colours, then
golden-ratio hues. :data:`HIGH_CONTRAST` is the optional mask palette for aerial imagery the review map offers.
:class:`ClassPalette` (names and colours of one dataset's classes, :func:`palette_from_config`) is what the figures of
:mod:`mapsage.figures` colour classes by, in the app and in the reports."""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")

# Okabe-Ito plus extra distinguishable colours: used only where a dataset names no palette.
FALLBACK = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
            "#8C564B", "#7F7F7F", "#BCBD22", "#17BECF"]

# A high-contrast choice for masks over aerial imagery: saturated, mutually distinct colours (Sasha Trubetskoy's
# "20 simple, distinct colours", the most distinct first); the Review page offers it beside the dataset's colours.
HIGH_CONTRAST = ["#E6194B", "#3CB44B", "#FFE119", "#4363D8", "#F58231", "#911EB4", "#42D4F4", "#F032E6",
                 "#BFEF45", "#FABED4", "#469990", "#DCBEFF", "#9A6324", "#FFFAC8", "#800000", "#AAFFC3",
                 "#808000", "#FFD8B1", "#000075", "#A9A9A9"]

IGNORE_RGB = (0, 0, 0)      # ignored / unknown ids in colour masks


def normalise_hex(text: Any) -> str:
    """``#RRGGBB`` in upper case; ValueError for anything else."""
    m = _HEX.match(str(text).strip())
    if not m:
        raise ValueError(f"not a #RRGGBB colour: {text!r}")
    return "#" + m.group(1).upper()


def hex_rgb(colour: Any) -> tuple[int, int, int]:
    c = normalise_hex(colour)
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


def fallback_color(i: int) -> str:
    """The colour of class id ``i`` when its dataset names none."""
    if i < len(FALLBACK):
        return FALLBACK[i]
    h = (i * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.65, 0.85)
    return "#{:02X}{:02X}{:02X}".format(int(r * 255), int(g * 255), int(b * 255))


def high_contrast(n: int) -> list[str]:
    """``n`` high-contrast class colours (:data:`HIGH_CONTRAST`, then :func:`fallback_color` beyond 20)."""
    return [HIGH_CONTRAST[i] if i < len(HIGH_CONTRAST) else fallback_color(i) for i in range(max(0, int(n)))]


def class_colours(palette: Sequence[Any] | None, num_classes: int) -> list[str]:
    """One ``#RRGGBB`` per class: the dataset's colour where it is valid, :func:`fallback_color` otherwise."""
    palette = list(palette or [])
    out = []
    for i in range(max(0, int(num_classes))):
        try:
            out.append(normalise_hex(palette[i]))
        except (IndexError, ValueError, TypeError):
            out.append(fallback_color(i))
    return out


def palette_rgb(palette: Sequence[Any] | None, num_classes: int) -> np.ndarray:
    """``[num_classes, 3]`` uint8 class colours (:func:`class_colours`)."""
    out = np.zeros((max(0, int(num_classes)), 3), np.uint8)
    for i, c in enumerate(class_colours(palette, num_classes)):
        out[i] = hex_rgb(c)
    return out


def class_lut(palette: Sequence[Any] | None, num_classes: int) -> np.ndarray:
    """``[256, 3]`` uint8 lookup from class id to colour; ids past the classes (the ignore index) are
    :data:`IGNORE_RGB`."""
    table = np.zeros((256, 3), np.uint8)
    table[:] = IGNORE_RGB
    n = min(int(num_classes), 256)
    table[:n] = palette_rgb(palette, n)
    return table


@dataclass(frozen=True)
class ClassPalette:
    """The classes of a dataset, each with its ``#RRGGBB`` colour."""
    names: tuple[str, ...]
    colors: tuple[str, ...]

    def color_of(self, name_or_id: Any) -> str:
        """The colour of a class name, or of a class id (:func:`fallback_color` past the palette); grey for an
        unknown name."""
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
