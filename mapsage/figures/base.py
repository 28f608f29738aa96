"""What every figure of :mod:`mapsage.figures` shares: the layout, the series colours of runs, the empty figure, the
epoch ticks and the escaping of user text.

No plotly template is set: Streamlit's chart theme styles the figures in the app (a named template also costs
~0.1 s per figure to build, most of a page's render time) and the report styles them itself
(:func:`mapsage.report.figures.figure_html`). Every piece of user text that reaches a figure (class, run, variant and
split names, titles) goes through :func:`label`: plotly renders a subset of HTML in its labels, and a name must show
as the text it is."""
from __future__ import annotations

import html
import math
from typing import Any

import plotly.graph_objects as go
from plotly.graph_objects import Figure

from mapsage.palette import fallback_color

__all__ = ["Figure", "PCT", "LAYOUT", "SERIES_COLOURS", "GOOD", "BAD", "NEUTRAL", "run_colors", "as_text", "empty",
           "epoch_ticks", "short_count", "signed_count"]

PCT = 100.0
LAYOUT = dict(margin=dict(l=50, r=20, t=50, b=40), legend=dict(orientation="h", y=-0.2))
# the series colours of runs (and of any other series that is not a class): one list, drawn by :func:`run_colors`
SERIES_COLOURS = ["#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2", "#7F7F7F"]
GOOD, BAD, NEUTRAL = "#2CA02C", "#D62728", "#888888"     # a real gain, a real loss, inside the noise


def run_colors(n: int) -> list[str]:
    """The colours of ``n`` series (runs, evaluations): :data:`SERIES_COLOURS`, then class fallback colours."""
    return [SERIES_COLOURS[i] if i < len(SERIES_COLOURS) else fallback_color(i) for i in range(n)]


def as_text(value: Any) -> str:
    """``value`` as text plotly shows verbatim (``<``, ``>`` and ``&`` escaped)."""
    return html.escape("" if value is None else str(value), quote=False)


def empty(title: str, note: str) -> go.Figure:
    """A figure with no data, saying why."""
    fig = go.Figure()
    fig.update_layout(title=as_text(title), **LAYOUT, height=260,
                      annotations=[dict(text=as_text(note), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                                        font=dict(size=14, color="#666"))])
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def epoch_ticks(fig: go.Figure, n_epochs: int, **where) -> None:
    """Integer epoch ticks (no 1.2, 1.4 … on short runs)."""
    fig.update_xaxes(tickmode="linear", tick0=1, dtick=max(1, math.ceil(max(1, n_epochs) / 12)), **where)


def short_count(v: float) -> str:
    """``1234567`` -> ``1.2M``."""
    v = float(v)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.1f}{unit}"
    return f"{v:.0f}"


def signed_count(v: float) -> str:
    """``-1234`` -> ``-1.2k``; ``0`` -> ``0``."""
    v = int(v)
    if v == 0:
        return "0"
    for unit, div in (("M", 1_000_000), ("k", 1_000)):
        if abs(v) >= div:
            return f"{v / div:+.1f}{unit}"
    return f"{v:+d}"
