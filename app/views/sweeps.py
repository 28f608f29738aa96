"""Sweeps: start one from a template ("sweep these knobs over ..."), follow its trials, see the best so far,
parallel coordinates and parameter importances, and promote the best trial to a template. ``?sweep=<id>``."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.widgets.common import guard, open_run
from app.widgets.nav import ensure_routed
from app.widgets.sweep_form import PRUNERS, SAMPLERS, TYPES, rows_to_parameters, sweep_overrides
from mapsage import figures
from mapsage.errors import UserError
from mapsage.metric_names import SWEEP_METRICS
from mapsage.registries import TRAINING_KINDS
from runners.api import list_templates

ensure_routed()
from runners import sweep as sweeps  # noqa: E402

st.title(":material/tune: Sweeps")

def _start_form() -> None:
    templates = [t for t in guard(list_templates, default=[]) or [] if t.get("kind") in TRAINING_KINDS
                 and not t.get("error")]
    if not templates:
        st.info("No training template to sweep.")
        return
    labels = {f"{t['title']} ({t['path']})": t for t in templates}
    pick = st.selectbox("Template", list(labels), key="sweep_template")
    tpl = labels[pick]
    st.caption("Sweep these knobs over … (dotted config keys; a float/int range or a comma-separated choice). "
               "The Plan page's knob form of every training template starts one too, with the knobs set there.")
    classify = tpl.get("kind") == "classify"
    if classify:        # image classification: the plan's knobs
        default = pd.DataFrame([
            {"key": "train.lr", "type": "float", "low": 5e-6, "high": 5e-4, "log": True, "values": ""},
            {"key": "classify.label_smoothing", "type": "float", "low": 0.0, "high": 0.2, "log": False,
             "values": ""},
            {"key": "classify.loss", "type": "choice", "low": None, "high": None, "log": False,
             "values": "ce, lsce, focal"},
        ])
    else:
        default = pd.DataFrame([
            {"key": "train.lr", "type": "float", "low": 1e-5, "high": 1e-2, "log": True, "values": ""},
            {"key": "loss.schedule.0.terms.dice", "type": "float", "low": 0.0, "high": 2.5, "log": False,
             "values": ""},
            {"key": "augment.crop_size", "type": "choice", "low": None, "high": None, "log": False,
             "values": "128, 192, 256"},
        ])
    space = st.data_editor(default, num_rows="dynamic", key=f"sweep_space_{'cls' if classify else 'seg'}",
                           width="stretch",
                           column_config={"type": st.column_config.SelectboxColumn(options=TYPES)})
    c1, c2, c3, c4, c5 = st.columns(5)
    n_trials = c1.number_input("Trials", 1, 1000, 12, key="sweep_n")
    sampler = c2.selectbox("Sampler", SAMPLERS, key="sweep_sampler")
    pruner = c3.selectbox("Pruner", PRUNERS, key="sweep_pruner")
    min_epochs = c4.number_input("Min. epochs before pruning", 0, 1000, 1, key="sweep_min_ep")
    wall = c5.number_input("Wall-clock budget (h, 0 = none)", 0.0, 1000.0, 0.0, key="sweep_wall")
    metric = st.selectbox("Metric (validation, per epoch)",
                          list(SWEEP_METRICS["classification" if classify else "segmentation"]),
                          key=f"sweep_metric_{'cls' if classify else 'seg'}")
    if not st.button("Start the sweep", type="primary", key="sweep_start"):
        return

    try:        # the same sweep: block the Plan's knob form and `mapsage sweep start --set` build
        overrides = sweep_overrides(rows_to_parameters(space.to_dict("records")), n_trials, sampler, pruner,
                                    min_epochs, metric, wall or None)
    except UserError as exc:
        st.error(str(exc))
        return
    sid = guard(sweeps.start, tpl["abs_path"], overrides, what="Starting the sweep")
    if sid:
        st.query_params["sweep"] = sid
        st.rerun()


rows = guard(sweeps.list_sweeps, default=[]) or []
with st.expander("Start a sweep", expanded=not rows, icon=":material/add:"):
    _start_form()
if not rows:
    st.info("No sweeps yet: start one above, or `mapsage sweep start configs/sweeps/...yaml`.")
    st.stop()

ids = [r["sweep_id"] for r in rows]
wanted = st.query_params.get("sweep")
sid = st.selectbox("Sweep", ids, index=ids.index(wanted) if wanted in ids else 0, key="sweep_pick")
if st.query_params.get("sweep") != sid:
    st.query_params["sweep"] = sid
state = guard(sweeps.read_state, sid)
if not state:
    st.stop()
df = guard(sweeps.trials_frame, sid, default=pd.DataFrame())
counts = df["state"].value_counts().to_dict() if not df.empty else {}
top = None
if counts.get("complete"):
    top = guard(sweeps.best, sid)
m = st.columns(6)
m[0].metric("Status", state["status"])
m[1].metric("Trials", f"{len(state['trials'])}/{state['n_trials']}")
m[2].metric("Complete", counts.get("complete", 0))
m[3].metric("Pruned", counts.get("pruned", 0))
m[4].metric("Failed", counts.get("fail", 0))
m[5].metric(f"Best {state['metric']}", f"{100 * top['value']:.2f}" if top else "–")
st.caption(f"{state['sampler']} sampler · {state['pruner']} pruner · {state['direction']} val {state['metric']} "
           f"(a trial's value: its best epoch) · from `{state['config_source']}`"
           + (f" · {state['message']}" if state.get("message") else ""))
if state["status"] == "running" and st.button("Cancel the sweep", icon=":material/cancel:", key="sweep_cancel"):
    guard(sweeps.cancel, sid)
    st.rerun()

if df.empty:
    st.info("No trial has started yet.")
    st.stop()

pcols = [c for c in df.columns if c.startswith("p:")]
show = df.rename(columns={c: c[2:] for c in pcols})
show["value"] = show["value"] * 100
show["best_so_far"] = show["best_so_far"] * 100
show["last_reported"] = show["last_reported"] * 100
st.subheader("Trials")
order = ["trial", "state", "value", "epochs", "last_reported", *[c[2:] for c in pcols], "best_so_far", "status",
         "run_id"]
ev = st.dataframe(show, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                  key="sweep_trials", placeholder="–", column_order=order, height=min(38 + 35 * len(show), 700),
                  column_config={
                      "value": st.column_config.NumberColumn(f"{state['metric']} (%)", format="%.2f",
                                                             help="the trial's best epoch (complete trials)"),
                      "best_so_far": st.column_config.NumberColumn("best so far (%)", format="%.2f"),
                      "last_reported": st.column_config.NumberColumn("last epoch (%)", format="%.2f"),
                      "epochs": st.column_config.NumberColumn("epochs reported"),
                      "train.lr": st.column_config.NumberColumn(format="%.2e"),
                      **{c[2:]: st.column_config.NumberColumn(format="%.3f") for c in pcols
                         if c != "p:train.lr" and pd.api.types.is_float_dtype(df[c])}})
sel = list(ev.selection.rows) if ev is not None and hasattr(ev, "selection") else []
if sel and st.button("Open the selected trial's run", key="sweep_open"):
    open_run(show.iloc[sel[0]]["run_id"])

left, right = st.columns(2)
with left:
    st.markdown("**Trial values and best so far**")
    fig = figures.trial_values(df, state["metric"])
    st.plotly_chart(fig, width="stretch")
with right:
    st.markdown("**Learning curves (reported epochs)**")
    curves = guard(sweeps.intermediate_frame, sid, default=pd.DataFrame())
    fig = figures.trial_curves(curves, state["metric"])
    st.plotly_chart(fig, width="stretch")

left, right = st.columns([3, 2])
with left:
    st.markdown("**Parallel coordinates** (complete trials; colour = value)")
    done = df[df["state"] == "complete"]
    if len(done) >= 1:
        params = done[pcols].rename(columns=lambda c: c[2:])
        fig = figures.parallel_coordinates(params, done["value"] * 100, f"{state['metric']} (%)",
                                           log_always={"train.lr"})
        st.plotly_chart(fig, width="stretch")
    else:
        st.caption("No complete trial yet.")
with right:
    st.markdown("**Parameter importances** (Optuna fANOVA over complete trials)")
    imp = guard(sweeps.importances, sid, default={}) or {}
    if imp:
        fig = figures.importance_bars(imp)
        st.plotly_chart(fig, width="stretch")
    else:
        st.caption("Needs at least two complete trials with different values.")

st.subheader("Promote the best")
if top:
    st.write(f"Trial **{top['number']}** (run `{top['run_id']}`): val {state['metric']} "
             f"**{100 * top['value']:.2f}** with " + ", ".join(f"`{k}` = {v:.4g}" if isinstance(v, float)
                                                            else f"`{k}` = {v}" for k, v in top["params"].items()))
    if st.button("Promote best → template", type="primary", icon=":material/upgrade:", key="sweep_promote"):
        path = guard(sweeps.promote, sid, what="Writing the template")
        if path:
            st.success(f"Wrote `{path}` (it validates; it is on the Plan board's template list when saved under "
                       f"`configs/stage*`).")
else:
    st.caption("No complete trial yet.")
