"""Step curves with the tracker controls users expect: smoothing (TensorBoard's debiased exponential moving
average; the raw points stay, faint) and the x axis as global step, epoch or wall-clock minutes since the run's
first sample (the figure: :func:`mapsage.figures.step_curves`). ``live_log_tail``: the run's stdout tail,
refreshed every few seconds while it runs."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from mapsage.figures import AXES, step_curves
from runners import api

from .common import guard


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


    @st.fragment(run_every=3.0 if active else None)
    def _tail():
        tail = guard(api.logs, run_id, lines, default="")
        if active:
            st.caption(":material/autorenew: live — refreshed every 3 s while the run is active")
        st.code(tail or "(stdout.log is empty)", language="text")

    _tail()
