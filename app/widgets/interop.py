"""Run detail pieces for the scalars mmsegmentation users read, and for runs imported from other tools.

``iteration_figure(scalars)``: the sampled training steps against the global step, one panel each for training
pixel accuracy (``acc_seg``, mmseg's ``decode.acc_seg``), time and data-loading time per iteration (``time``,
``data_time``), GPU utilisation (NVML) and memory (``memory``: peak allocated by tensors; ``gpu_mem_mb``: device
memory in use). ``iteration_curves(scalars)`` draws it; ``imported_note(run)`` says where an imported run came from
and what it cannot offer (no per-tile areas, so no paired bootstrap)."""
from __future__ import annotations

import math
from typing import Optional

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

PANELS = [
    ("Training pixel accuracy (%)", {"acc_seg": "acc_seg"}, 100.0),
    ("Time per iteration (s)", {"time": "time", "data_time": "data_time"}, 1.0),
    ("GPU utilisation (%)", {"gpu_util": "mean", "gpu_util_max": "max"}, 1.0),
    ("GPU memory (MB)", {"memory": "peak allocated", "gpu_mem_mb": "in use (NVML)"}, 1.0),
]


def iteration_figure(scalars: pd.DataFrame, title: str = "Per-iteration scalars (train, sampled steps)"
                     ) -> Optional[go.Figure]:
    """The figure, or None when the run logged none of these scalars."""
    if scalars is None or scalars.empty:
        return None
    df = scalars[(scalars["split"] == "train") & scalars["step"].notna()]
    panels = [(label, names, f) for label, names, f in PANELS if df["name"].isin(list(names)).any()]
    if not panels:
        return None
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p[0] for p in panels], horizontal_spacing=0.08,
                        vertical_spacing=0.18)
    for i, (label, names, factor) in enumerate(panels):
        r, c = i // cols + 1, i % cols + 1
        for name, legend in names.items():
            s = df[df["name"] == name].sort_values("step")
            if s.empty:
                continue
            fig.add_trace(go.Scatter(x=s["step"], y=s["value"] * factor, mode="lines+markers", name=legend,
                                     marker=dict(size=3), legendgroup=label), row=r, col=c)
        fig.update_xaxes(title_text="global step", row=r, col=c)
    fig.update_layout(title=title, height=300 * rows, margin=dict(l=50, r=160, t=60, b=40),
                      legend=dict(orientation="v", x=1.02, y=1.0, font=dict(size=11)))
    return fig


def iteration_curves(scalars: pd.DataFrame, key: str = "c_iter") -> None:
    fig = iteration_figure(scalars)
    if fig is None:
        st.caption("No per-iteration accuracy / timing scalars: runs from before they were logged, or stages that "
                   "do not train.")
        return
    st.plotly_chart(fig, width="stretch", key=key)
    names = set(scalars.loc[scalars["split"] == "train", "name"])
    if "gpu_util" not in names:
        st.caption("GPU utilisation: not sampled (a CPU run, or NVML / the nvidia-ml-py package unavailable).")


def imported_note(run: dict) -> None:
    """An info box on a run imported from another tool (nothing for native runs)."""
    if run.get("kind") != "imported":
        return
    info = run.get("info") or {}
    period = info.get("period") or "epoch"
    every = info.get("val_interval")
    st.info(f"**Imported** from {info.get('import_source', 'another tool')} `{info.get('import_path', '?')}`: "
            f"training curves and validation figures only. Its epochs are the source's "
            f"{period}s" + (f" ({every} iterations)" if every and period != 'epoch' else "") + ". The source kept no "
            f"per-tile areas, so this run has no paired-bootstrap intervals in Compare and no tiles to review; "
            f"it ranks beside native runs on dataset `{run.get('dataset')}`, split `{run.get('split')}`.",
            icon=":material/input:")
