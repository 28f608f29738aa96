"""Run detail of an LR range test (stage kind ``lr_find``): loss against LR (log axis), the suggestion, and one
click to launch the same recipe as a training run with that learning rate."""
from __future__ import annotations

import json

import streamlit as st

from mapsage import figures
from mapsage.workspace import run_dir
from runners import api

from .common import guard, open_run


def lr_find_section(run: dict, scalars) -> None:
    if run.get("kind") != "lr_find":
        return
    sc = scalars[scalars["split"] == "lr_find"] if scalars is not None and not scalars.empty else None
    if sc is None or sc.empty:
        st.info("The LR range test has not reported a step yet.")
        return
    wide = sc.pivot_table(index="step", columns="name", values="value").sort_index()
    info = json.loads(run.get("info_json") or "{}")
    lr = info.get("lr_suggested")
    scale = float(info.get("lr_find_scale") or 1.0)
    fig = figures.lr_find_figure(wide["lr"], wide["loss"], wide["loss_smooth"], lr, scale)
    st.plotly_chart(fig, width="stretch", key="lr_find_fig")
    if not lr:
        st.caption("Too few steps for a suggestion.")
        return
    st.markdown(f"Suggested **train.lr = {lr:.2e}** (steepest descent of the smoothed loss"
                + (f"; the loss minimum is at {info['lr_min_loss']:.2e}" if info.get("lr_min_loss") else "")
                + (f"; the test stopped: {info['lr_find_stopped']}" if info.get("lr_find_stopped") else "") + ").")
    if st.button(f"Train with train.lr = {lr:.2e}", type="primary", icon=":material/rocket_launch:",
                 key="lr_find_use"):

        new = guard(api.launch, str(run_dir(run["run_id"]) / "config.yaml"),
                    ["stage.kind=train", f"train.lr={lr:.3g}"], what="Launching the training run")
        if new:
            open_run(new)
