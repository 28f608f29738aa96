"""Figures over training steps: sampled step losses with the tracker controls users expect (smoothing: TensorBoard's
debiased exponential moving average, the raw points faint; x as global step, epoch or wall-clock minutes), the
per-iteration scalars mmsegmentation users read, the LR range test and the learning-rate schedule."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .base import SERIES_COLOURS, as_text

AXES = {"step": "global step", "epoch": "epoch (fractional)", "wall-clock": "minutes since the first sample"}
ITERATION_PANELS = [
    ("Training pixel accuracy (%)", {"acc_seg": "acc_seg"}, 100.0),
    ("Time per iteration (s)", {"time": "time", "data_time": "data_time"}, 1.0),
    ("GPU utilisation (%)", {"gpu_util": "mean", "gpu_util_max": "max"}, 1.0),
    ("GPU memory (MB)", {"memory": "peak allocated", "gpu_mem_mb": "in use (NVML)"}, 1.0),
]


def ema_smooth(values, weight: float) -> np.ndarray:
    """Debiased EMA (as TensorBoard's smoothing slider): ``weight`` 0 = raw, 0.99 = very smooth; NaNs are
    skipped."""
    v = np.asarray(values, dtype=np.float64)
    if weight <= 0 or len(v) == 0:
        return v
    out = np.full_like(v, np.nan)
    last, n = 0.0, 0
    for i, x in enumerate(v):
        if not np.isfinite(x):
            continue
        last = last * weight + (1 - weight) * x
        n += 1
        out[i] = last / (1 - weight ** n)
    return out


def x_values(df: pd.DataFrame, axis: str) -> pd.Series:
    """The x of step samples: global step, fractional 1-based epoch, or minutes since the first sample."""
    if axis == "wall-clock":
        return (df["ts"] - df["ts"].min()) / 60.0
    if axis == "epoch":
        steps = df["step"].astype(float)
        ep = df["epoch"].astype(float)
        # within an epoch: the share of that epoch's steps seen so far (1-based epochs, as the other curves)
        span = steps.groupby(ep).transform(lambda s: (s.max() - s.min()) or 1.0)
        first = steps.groupby(ep).transform("min")
        return ep + (steps - first) / span * 0.999 + 1.0
    return df["step"]


def step_curves(scalars: pd.DataFrame, names_like: str = "loss", smoothing: float = 0.6, axis: str = "step",
                title: str = "Sampled step losses (train)") -> go.Figure:
    """The sampled training scalars whose name contains ``names_like``, smoothed, against ``axis``."""
    fig = go.Figure()
    if scalars is None or scalars.empty:
        fig.update_layout(title=as_text(title + " — no step samples yet"), height=320)
        return fig
    df = scalars[(scalars["split"] == "train") & scalars["step"].notna()]
    df = df[df["name"].str.contains(names_like, regex=False)]
    for i, (name, s) in enumerate(df.groupby("name", sort=True)):
        s = s.sort_values("step")
        x = x_values(s, axis)
        color = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        if smoothing > 0:
            fig.add_trace(go.Scatter(x=x, y=s["value"], mode="lines", name=as_text(f"{name} (raw)"),
                                     showlegend=False, line=dict(color=color, width=1), opacity=0.25,
                                     hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=ema_smooth(s["value"], smoothing), mode="lines", name=as_text(name),
                                 line=dict(color=color, width=2)))
    fig.update_layout(title=as_text(title), height=320, xaxis_title=AXES[axis],
                      yaxis_title="loss" + (f" (EMA smoothing {smoothing:.2f})" if smoothing else ""),
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def iteration_figure(scalars: pd.DataFrame, title: str = "Per-iteration scalars (train, sampled steps)"
                     ) -> Optional[go.Figure]:
    """Training pixel accuracy, time per iteration, GPU utilisation and memory against the global step, one panel
    each; None when the run logged none of these scalars."""
    if scalars is None or scalars.empty:
        return None
    df = scalars[(scalars["split"] == "train") & scalars["step"].notna()]
    panels = [(name, names, f) for name, names, f in ITERATION_PANELS if df["name"].isin(list(names)).any()]
    if not panels:
        return None
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p[0] for p in panels], horizontal_spacing=0.08,
                        vertical_spacing=0.18)
    for i, (panel, names, factor) in enumerate(panels):
        r, c = i // cols + 1, i % cols + 1
        for name, legend in names.items():
            s = df[df["name"] == name].sort_values("step")
            if s.empty:
                continue
            fig.add_trace(go.Scatter(x=s["step"], y=s["value"] * factor, mode="lines+markers", name=legend,
                                     marker=dict(size=3), legendgroup=panel), row=r, col=c)
        fig.update_xaxes(title_text="global step", row=r, col=c)
    fig.update_layout(title=as_text(title), height=300 * rows, margin=dict(l=50, r=160, t=60, b=40),
                      legend=dict(orientation="v", x=1.02, y=1.0, font=dict(size=11)))
    return fig


def lr_find_figure(lrs: Sequence[float], loss: Sequence[float], smoothed: Sequence[float],
                   suggested: Optional[float] = None, scale: float = 1.0) -> go.Figure:
    """The LR range test: loss (points) and its smoothed curve against the learning rate (log axis), the suggestion
    (``suggested`` × ``scale``, the LR as applied) marked."""
    fig = go.Figure()
    fig.add_scatter(x=lrs, y=loss, mode="markers", name="loss", marker=dict(size=4, color="#90a4ae"))
    fig.add_scatter(x=lrs, y=smoothed, mode="lines", name="smoothed", line=dict(color=SERIES_COLOURS[0]))
    if suggested:
        fig.add_vline(x=suggested * scale, line_dash="dash", line_color=SERIES_COLOURS[2],
                      annotation_text=f"suggested {suggested:.2e}", annotation_position="top left")
    fig.update_layout(title="LR range test: loss against learning rate", xaxis_type="log", height=360,
                      xaxis_title="learning rate (as applied)", yaxis_title="training loss",
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def lr_schedule_figure(epochs: Sequence[float], lrs: Sequence[float], title: str) -> go.Figure:
    """The per-iteration learning rate against (fractional) epochs."""
    fig = go.Figure(go.Scatter(x=list(epochs), y=list(lrs), mode="lines", name="lr", line={"width": 2},
                               hovertemplate="epoch %{x:.2f}<br>lr %{y:.3g}<extra></extra>"))
    fig.update_layout(title=as_text(title), height=260, margin={"l": 50, "r": 10, "t": 40, "b": 40},
                      xaxis_title="epoch", yaxis_title="learning rate", yaxis={"exponentformat": "e"})
    return fig
