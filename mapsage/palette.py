"""Class colours: one module for every place a class is drawn (the app's charts and tables, the review map, saved
prediction PNGs, health-check overlays and reports), so a class keeps one colour everywhere.

A class takes its dataset's colour (``dataset.palette``, ``#RRGGBB``); a dataset without a palette, or a class the
palette does not reach, takes :func:`fallback_color` of its id: Okabe-Ito plus extra distinguishable colours, then
golden-ratio hues. :data:`HIGH_CONTRAST` is the optional mask palette for aerial imagery the review map offers."""

from __future__ import annotations

import colorsys
import re
from typing import Any, Sequence

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
