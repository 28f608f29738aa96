"""Runs: the plan's experiment table, ranked and filtered, with row selection to open or compare runs."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.widgets import data
from app.widgets import run_filters as rf
from app.widgets.common import PAGE_FILES, guard
from app.widgets.nav import ensure_routed
from app.widgets.tables import RANK_METRICS, column_config, experiment_table, filter_runs

ensure_routed()
st.title(":material/table_chart: Runs")

runs = guard(data.runs, default=pd.DataFrame(), what="Reading the run list")
if runs is None or runs.empty:
    st.info("No runs yet. Launch the demo plan from the Home page, or any template from the Plan board.",
            icon=":material/arrow_forward:")
    st.page_link(PAGE_FILES["plan"], label="Open the Plan board", icon=":material/map:")
    st.stop()

splits = guard(data.evaluated_splits, default=[]) or ["val"]
import store.groups as _groups  # noqa: E402
import store.tags as _tags  # noqa: E402

tag_names = guard(_tags.all_tags, default=[]) or []
rf.restore_from_url({"runs_status": sorted(runs["status"].dropna().unique()),
                     "runs_stage": sorted(int(s) for s in runs["plan_stage"].dropna().unique()),
                     "runs_kind": sorted(runs["kind"].dropna().unique()),
                     "runs_dataset": sorted(runs["dataset"].dropna().unique()),
                     "runs_backbone": sorted(runs["backbone"].dropna().unique()), "runs_tags": tag_names,
                     "runs_split": splits, "runs_rank": list(RANK_METRICS), "runs_group": rf.GROUP_BY,
                     "runs_sort": rf.SORT_OPTIONS})

# ---------------------------------------------------------------------------------------------------------- controls
c1, c2, c3 = st.columns([1, 1, 2])
split = c1.selectbox("Split of the figures", splits, index=0, key="runs_split",
                     help="every figure in the table is measured on this split; its column headers say so")
rank_label = c2.selectbox("Rank by", list(RANK_METRICS), index=0, key="runs_rank")
text = c3.text_input("Search (name, run id, backbone, loss, aug, title, tags, notes)", "", key="runs_search")
f1, f2, f3, f4, f5 = st.columns(5)
statuses = f1.multiselect("Status", sorted(runs["status"].dropna().unique()), key="runs_status")
stages = f2.multiselect("Stage", sorted(int(s) for s in runs["plan_stage"].dropna().unique()), key="runs_stage")
kinds = f3.multiselect("Kind", sorted(runs["kind"].dropna().unique()), key="runs_kind")
datasets = f4.multiselect("Dataset", sorted(runs["dataset"].dropna().unique()), key="runs_dataset")
backbones = f5.multiselect("Backbone", sorted(runs["backbone"].dropna().unique()), key="runs_backbone")
h1, h2, h3, h4 = st.columns([2, 1, 1, 1])
tag_pick = h1.multiselect("Tags (all of)", tag_names, key="runs_tags")
group_by = h2.selectbox("Group by", rf.GROUP_BY, index=0, key="runs_group")
sort_by = h3.selectbox("Sort by", rf.SORT_OPTIONS, index=0, key="runs_sort")
sort_desc = h4.toggle("Descending", value=False, key="runs_desc")
per_class = st.toggle("Per-class IoU columns", value=len(datasets) == 1 or runs["dataset"].nunique() == 1,
                      key="runs_per_class")

g1, g2 = st.columns(2)
with_subsets = g1.toggle("Rank subsets too", value=False, key="runs_subsets",
                         help="evaluations on fewer tiles than the split has are shown but not ranked by default")
with_active = g2.toggle("Rank runs in progress too", value=False, key="runs_active",
                        help="a running run's best so far is shown but not ranked by default")
board = guard(data.ranking, split, RANK_METRICS[rank_label], with_subsets, with_active, default=pd.DataFrame(),
              what="Reading the ranking")
shown = filter_runs(runs, statuses, stages, kinds, datasets, backbones, text)
if text:         # tags and notes match the search too
    noted = set(guard(_tags.search, text, default=[]) or [])
    shown = pd.concat([shown, filter_runs(runs[runs["run_id"].isin(noted - set(shown["run_id"]))], statuses,
                                          stages, kinds, datasets, backbones, "")])
table = experiment_table(shown, board, split, RANK_METRICS[rank_label], per_class=per_class)
table = rf.with_tracker_columns(table, guard(_tags.annotations, default=pd.DataFrame()),
                                guard(_groups.run_links, default=pd.DataFrame()))
table = rf.filter_tags(table, tag_pick)
table = rf.sort_table(table, rf.sort_column(sort_by, split), sort_desc)
rf.store_to_url()

n_fig = int(table["Rank"].notna().sum()) if not table.empty else 0
n_shown = int((table["Evaluation"] != "–").sum()) if not table.empty else 0
st.caption(f"{len(table)} of {len(runs)} run(s) shown; {n_fig} ranked, {n_shown - n_fig} shown but not ranked "
           f"(see *Ranked as*). Figures are points (%) of ONE evaluation per run on `{split}` (its identity is the "
           f"*Evaluation* column): a run's best own result by {rank_label}, or the variant an A/B run adopted — never "
           f"its parent's checkpoint re-scored. Ranks count within comparable evaluations (same dataset, split and "
           f"tile set). Select rows to open or compare them.")

event = st.dataframe(table, hide_index=True, width="stretch", height=min(36 + 35 * max(1, len(table)), 640),
                     column_config=column_config(table, split), on_select="rerun", selection_mode="multi-row",
                     key="runs_table", column_order=[c for c in table.columns if c != "run_id"], placeholder="–")
selected_rows = list(event.selection.rows) if event is not None and hasattr(event, "selection") else []
if group_by != "none" and not table.empty:
    fig_col = next((c for c in table.columns if c.startswith(f"{rank_label} (")), None)
    st.subheader(f"Grouped by {group_by}")
    summary = rf.grouped_summary(table, rf.group_column(table, runs, group_by), fig_col)
    st.dataframe(summary, hide_index=True, width="stretch", key="runs_grouped", placeholder="–",
                 column_config={c: st.column_config.NumberColumn(format="%.2f") for c in summary.columns[3:]})
rf.group_board_view(split, RANK_METRICS[rank_label], rank_label)
if len(selected_rows) >= 2:
    with st.expander(f"Parallel coordinates of the {len(selected_rows)} selected runs", expanded=True,
                     icon=":material/insights:"):
        rf.parallel_coordinates([table.iloc[i]["run_id"] for i in selected_rows if i < len(table)], table,
                                next((c for c in table.columns if c.startswith(f"{rank_label} (")), None))
selected = [table.iloc[i]["run_id"] for i in selected_rows if i < len(table)]

b1, b2, b3 = st.columns([1, 1, 3])
if b1.button(f"Open detail ({'1' if len(selected) == 1 else 'select one'})", disabled=len(selected) != 1,
             key="runs_open_selected"):
    st.switch_page(PAGE_FILES["detail"], query_params={"run": selected[0]})
if b2.button(f"Compare selected ({len(selected)})", disabled=len(selected) < 2, key="runs_compare_selected"):
    st.switch_page(PAGE_FILES["compare"], query_params={"runs": ",".join(selected)})

# quick open by name (keyboard friendly; also what the browser test uses)
with b3:
    pick = st.selectbox("Open a run", list(table["run_id"]), index=None, key="runs_open_pick",
                        placeholder="choose a run (by run id) to open its detail page", label_visibility="collapsed")
    if pick:
        st.switch_page(PAGE_FILES["detail"], query_params={"run": pick})
