"""Class colours in the app: :class:`~mapsage.palette.ClassPalette` and :func:`~mapsage.palette.palette_from_config`
live in :mod:`mapsage.palette` (the figures of :mod:`mapsage.figures` and the reports use them too) and are
re-exported here, beside the app's HTML swatches.

The palette comes from the run's resolved config (``dataset.classes`` / ``dataset.palette``), given either as a
:class:`mapsage.config.Config` or as the plain mapping stored with a run. A dataset without a palette gets a fixed,
distinguishable fallback so that the same class keeps the same colour across pages."""
from __future__ import annotations

import html

from mapsage.palette import (  # noqa: F401
    FALLBACK,
    HIGH_CONTRAST,
    ClassPalette,
    fallback_color,
    high_contrast,
    normalise_hex,
    palette_from_config,
    text_color_on,
)


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
