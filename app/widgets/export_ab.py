"""The export A/B figures (parity and speed of each deployment build), from the ``details`` of ``ab`` rows of
kind ``export``: a pure table builder (:func:`export_table`, testable without Streamlit) and its view."""
from __future__ import annotations

import json
from typing import Any

import pandas as pd

from mapsage.config import ConfigError
from mapsage.errors import UserError
from runners.commands.export_cmd import launch_export


def _details(text: Any) -> dict:
    if isinstance(text, dict):
        return text
    try:
        return json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}


def export_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per exported variant (the PyTorch baseline left out): parity against PyTorch, file size, CPU
    images/s and speed-up over PyTorch eager (threads stated), GPU images/s where measured, decision."""
    out = []
    for _, r in rows.iterrows():
        if r.get("decision") == "baseline":
            continue
        d = _details(r.get("details_json"))
        cpu, gpu = d.get("cpu") or {}, d.get("gpu") or {}
        agree = d.get("argmax_agreement")
        out.append({
            "variant": r["variant"],
            "argmax agreement %": 100.0 * agree if isinstance(agree, (int, float)) else None,
            "max |Δ logit|": d.get("max_abs_logit"),
            "ΔmIoU (points)": r.get("gain"),
            "ΔBoundary IoU (points)": d.get("gain_mbiou"),
            "file MB": d.get("file_mb"),
            "CPU images/s": cpu.get("images_per_s"),
            "CPU × PyTorch eager": cpu.get("speedup_vs_pytorch"),
            "CPU threads": d.get("cpu_threads"),
            "GPU images/s": gpu.get("images_per_s"),
            "GPU × PyTorch": gpu.get("speedup_vs_pytorch"),
            "INT8": ((d.get("export") or {}).get("int8") or {}).get("mode"),
            "decision": r.get("decision"),
        })
    return pd.DataFrame(out)


def show_export_figures(rows: pd.DataFrame) -> None:
    """The export table under a run's A/B rows (Streamlit)."""
    import streamlit as st

    table = export_table(rows)
    if table.empty:
        return
    st.markdown("**Deployment builds against the PyTorch model** (parity on the scored tiles; speed on one "
                "input in the same process)")
    fmt = {c: st.column_config.NumberColumn(c, format="%.3f") for c in table.columns
           if c not in ("variant", "decision", "INT8", "CPU threads", "max |Δ logit|")}
    fmt["max |Δ logit|"] = st.column_config.NumberColumn("max |Δ logit|", format="%.2e")
    fmt["ΔmIoU (points)"] = st.column_config.NumberColumn("ΔmIoU (points)", format="%+.3f")
    fmt["ΔBoundary IoU (points)"] = st.column_config.NumberColumn("ΔBoundary IoU (points)", format="%+.3f")
    st.dataframe(table, hide_index=True, width="stretch", column_config=fmt, placeholder="–")


def export_action(run_id: str) -> None:
    """Run detail's Export action: choose builds, queue an ``export`` job of this run (Streamlit)."""
    import streamlit as st


    with st.popover("Export", icon=":material/deployed_code:",
                    help="ONNX / TorchScript builds of this run's best checkpoint, with parity and speed measured"):
        targets = st.multiselect("Builds", ["onnx:fp32", "onnx:int8", "onnx:fp16", "torchscript:fp32",
                                            "torchscript:fp16"], default=["onnx:fp32", "onnx:int8"],
                                 key="detail_export_targets")
        if st.button("Queue export", key="detail_export", disabled=not targets):
            try:
                new = launch_export(run_id, targets)
            except (ConfigError, UserError) as exc:
                st.error(f"Cannot export {run_id}: {exc}")
                return
            st.success(f"Export queued as `{new}`.")
