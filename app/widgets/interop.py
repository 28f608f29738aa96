"""Run detail pieces for the scalars mmsegmentation users read, and for runs imported from other tools.

``iteration_curves(scalars)`` draws :func:`mapsage.figures.iteration_figure`: the sampled training steps against the
global step, one panel each for training pixel accuracy (``acc_seg``, mmseg's ``decode.acc_seg``), time and
data-loading time per iteration (``time``, ``data_time``), GPU utilisation (NVML) and memory (``memory``: peak
allocated by tensors; ``gpu_mem_mb``: device memory in use). ``imported_note(run)`` says where an imported run came
from and what it cannot offer (no per-tile areas, so no paired bootstrap)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from mapsage.figures import iteration_figure


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
