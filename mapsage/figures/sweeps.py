"""Figures of a hyper-parameter search: the trials' values and the best so far, their learning curves, the
parameter importances, and parallel coordinates of configs (a sweep's trials, or runs picked on the Runs page)."""
from __future__ import annotations

from typing import Collection, Optional, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .base import PCT, SERIES_COLOURS, as_text

STATE_COLORS = {"complete": "#2e7d32", "pruned": "#8e24aa", "fail": "#c62828", "running": "#1565c0"}


def trial_values(trials: pd.DataFrame, metric: str) -> go.Figure:
    """``trials``: trial, state, value (complete trials), last_reported (the others), best_so_far (fractions)."""
    fig = go.Figure()
    for s, part in trials.groupby("state"):
        y = part["value"] if s == "complete" else part["last_reported"]
        fig.add_scatter(x=part["trial"], y=y * PCT, mode="markers", name=as_text(s),
                        marker=dict(color=STATE_COLORS.get(s, "gray"), size=9))
    fig.add_scatter(x=trials["trial"], y=trials["best_so_far"] * PCT, mode="lines", line_shape="hv",
                    name="best so far", line=dict(color="black"))
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="trial",
                      yaxis_title=as_text(f"val {metric} (%)  (pruned: last epoch)"))
    return fig


def trial_curves(curves: Optional[pd.DataFrame], metric: str) -> go.Figure:
    """``curves``: trial, state, epoch, value (fraction): one line per trial in its state's colour, pruned dotted."""
    fig = go.Figure()
    for trial, part in (curves.groupby("trial") if curves is not None and not curves.empty else []):
        s = part["state"].iloc[0]
        fig.add_scatter(x=part["epoch"], y=part["value"] * PCT, mode="lines+markers", name=f"trial {trial}",
                        line=dict(color=STATE_COLORS.get(s, "gray"), dash="dot" if s == "pruned" else "solid"),
                        showlegend=False)
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="epoch",
                      yaxis_title=as_text(f"val {metric} (%)"))
    return fig


def importance_bars(importances: dict) -> go.Figure:
    """Parameter importances (shares), the largest on top."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[as_text(k) for k, _ in items], orientation="h",
                           marker_color=SERIES_COLOURS[0]))
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="importance (share)")
    return fig


def _dimension(name: str, col: pd.Series, log_always: Collection[str], log_ratio: float) -> dict:
    """One parallel-coordinates axis: numbers (log10 when they span more than ``log_ratio``), or categories."""
    coerced = pd.to_numeric(col, errors="coerce")
    if pd.api.types.is_numeric_dtype(col) or coerced.notna().all():
        vals = coerced.astype(float)
        if name in log_always or ((vals > 0).all() and vals.max() / max(vals.min(), 1e-300) > log_ratio):
            return dict(label=as_text(f"log10 {name}"), values=np.log10(vals))
        return dict(label=as_text(name), values=vals)
    cats = sorted(col.astype(str).unique())
    return dict(label=as_text(name), values=[cats.index(v) for v in col.astype(str)],
                tickvals=list(range(len(cats))), ticktext=[as_text(c) for c in cats])


def parallel_coordinates(frame: pd.DataFrame, value: Optional[Sequence[float]] = None, value_label: str = "",
                         log_always: Collection[str] = (), log_ratio: float = 100.0,
                         height: int = 340) -> go.Figure:
    """One axis per column of ``frame`` (one row per trial or run), plus ``value`` (in the units drawn) as the last
    axis and the line colour; without it the lines take the first series colour."""
    dims = [_dimension(str(c), frame[c], log_always, log_ratio) for c in frame.columns]
    if value is not None:
        dims.append(dict(label=as_text(value_label), values=list(value)))
        line = dict(color=list(value), colorscale="Viridis", showscale=True)
    else:
        line = dict(color=SERIES_COLOURS[0])
    fig = go.Figure(go.Parcoords(line=line, dimensions=dims))
    fig.update_layout(height=height, margin=dict(l=60, r=40, t=40, b=20))
    return fig
