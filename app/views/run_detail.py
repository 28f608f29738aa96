"""Run detail: curves, plateau note, per-class IoU with the weakest classes marked, confusion matrix, Boundary IoU
per class, the Urban/Rural breakdown, health checks, the resolved config and the log tail of one run.

The page lays the sections out; each one is a function of :mod:`app.widgets.run_detail_header` (picker, headline,
facts and actions) or :mod:`app.widgets.run_detail_tabs` (one per tab)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.widgets import data, evals
from app.widgets import run_detail_tabs as tab
from app.widgets.common import PAGE_FILES, guard
from app.widgets.lr_find_view import lr_find_section
from app.widgets.nav import ensure_routed
from app.widgets.run_detail_header import facts_and_actions, header, pick_run

ensure_routed()
st.title(":material/query_stats: Run detail")

runs = guard(data.runs, default=pd.DataFrame(), what="Reading the run list")
if runs is None or runs.empty:
    st.info("No runs yet. Launch one from the Plan board.", icon=":material/arrow_forward:")
    st.page_link(PAGE_FILES["plan"], label="Open the Plan board", icon=":material/map:")
    st.stop()

rid = pick_run(runs)
run = guard(data.run_row, rid, what=f"Reading run {rid}")
if not run:
    st.stop()

# ---------------------------------------------------------------------------------------------------------- header
header(rid, run)                     # a classification run draws its own figures and stops there
facts_and_actions(rid, run)

# ---------------------------------------------------------------------------------------------------------- data
b = data.bundle(rid, run.get("n_events"))
metrics, per_class, scalars = b["metrics"], b["per_class"], b["scalars"]
lr_find_section(run, scalars)
palette = data.palette_of(run)
overall = evals.overall(metrics)

TABS = ["Curves", "Per class", "Confusion", "Domains", "Health", "A/B", "Config", "Log", "Reliability"]
first = {"health": "Health", "tta_ab": "A/B", "refine": "A/B", "ensemble": "A/B", "evaluate": "Per class",
         "reliability": "Reliability"}
# lazy tabs, bound to the URL (?tab=Per+class): only the open tab's content is computed and drawn
tabs = st.tabs(TABS, default=first.get(run.get("kind"), "Curves"), key="tab", bind="query-params")


def shown(i: int) -> bool:
    return tabs[i].open is not False


with tabs[0]:
    if shown(0):
        tab.curves(rid, run, metrics, per_class, scalars, palette)

chosen = tab.pick_evaluation(run, overall)       # in the sidebar: the evaluation of the next three tabs

with tabs[1]:
    if shown(1):
        tab.per_class(chosen, per_class, palette)
with tabs[2]:
    if shown(2):
        tab.confusion(rid, run, chosen, palette)
with tabs[3]:
    if shown(3):
        tab.domains(run, chosen, metrics, per_class, palette)
with tabs[4]:
    if shown(4):
        tab.health(rid, run, runs)
with tabs[5]:
    if shown(5):
        tab.ab(rid, run)
with tabs[6]:
    if shown(6):
        tab.config(run)
with tabs[7]:
    if shown(7):
        tab.log(rid, run)
with tabs[8]:
    if shown(8):
        from app.widgets.reliability import reliability_section
        reliability_section(rid, run)
