"""Step curves with the tracker controls users expect: smoothing (TensorBoard's debiased exponential moving
average; the raw points stay, faint) and the x axis as global step, epoch or wall-clock minutes since the run's
first sample. ``live_log_tail``: the run's stdout tail, refreshed every few seconds while it runs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

AXES = {"step": "global step", "epoch": "epoch (fractional)", "wall-clock": "minutes since the first sample"}


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
    fig = go.Figure()
    if scalars is None or scalars.empty:
        fig.update_layout(title=title + " — no step samples yet", height=320)
        return fig
    df = scalars[(scalars["split"] == "train") & scalars["step"].notna()]
    df = df[df["name"].str.contains(names_like, regex=False)]
    palette = ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037", "#ad1457"]
    for i, (name, s) in enumerate(df.groupby("name", sort=True)):
        s = s.sort_values("step")
        x = x_values(s, axis)
        color = palette[i % len(palette)]
        if smoothing > 0:
            fig.add_trace(go.Scatter(x=x, y=s["value"], mode="lines", name=f"{name} (raw)", showlegend=False,
                                     line=dict(color=color, width=1), opacity=0.25, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=ema_smooth(s["value"], smoothing), mode="lines", name=name,
                                 line=dict(color=color, width=2)))
    fig.update_layout(title=title, height=320, xaxis_title=AXES[axis],
                      yaxis_title="loss" + (f" (EMA smoothing {smoothing:.2f})" if smoothing else ""),
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def step_curves_panel(scalars: pd.DataFrame, key: str) -> None:
    """Controls + the smoothed step-loss figure (Run detail's Curves tab)."""
    c1, c2 = st.columns([2, 1])
    smoothing = c1.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key=f"{key}_smooth",
                          help="exponential moving average, debiased (TensorBoard's slider); raw points stay faint")
    axis = c2.radio("x axis", list(AXES), horizontal=True, key=f"{key}_axis")
    st.plotly_chart(step_curves(scalars, smoothing=smoothing, axis=axis), width="stretch", key=f"{key}_fig")


def live_log_tail(run_id: str, lines: int, active: bool) -> None:
    """The run's stdout tail; while the run is active it refreshes itself every 3 s (only this fragment
    reruns)."""
    from runners import api

    from .common import guard

    @st.fragment(run_every=3.0 if active else None)
    def _tail():
        tail = guard(api.logs, run_id, lines, default="")
        if active:
            st.caption(":material/autorenew: live — refreshed every 3 s while the run is active")
        st.code(tail or "(stdout.log is empty)", language="text")

    _tail()
