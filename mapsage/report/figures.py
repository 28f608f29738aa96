"""The report's HTML helpers for figures. The figures themselves are the app's (:mod:`mapsage.figures`, drawn from
the report's tables by :mod:`mapsage.report.plots`), which escape every piece of user text that reaches them;
:func:`figure_html` gives one the report's page style (the app's is Streamlit's theme) and turns it into a
``<div>`` that needs plotly.js loaded once on the page (the report inlines it a single time)."""
from __future__ import annotations

import html

import plotly.io as pio

from mapsage.figures import Figure

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True,
                 "toImageButtonOptions": {"format": "png", "scale": 2},
                 "modeBarButtonsToRemove": ["sendDataToCloud"]}


def esc(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def report_style(fig: Figure) -> Figure:
    """The page style of the report: white background, the page's font, titles left-aligned."""
    return fig.update_layout(template="plotly_white", font={"family": FONT, "size": 12},
                             title={"x": 0.01, "xanchor": "left", "font": {"size": 15}})


def figure_html(fig: Figure, div_id: str) -> str:
    """A ``<div>`` with the figure in the report's style (plotly.js itself is not included)."""
    return pio.to_html(report_style(fig), full_html=False, include_plotlyjs=False, div_id=div_id,
                       config=PLOTLY_CONFIG, validate=True)
