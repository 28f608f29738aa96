"""Home: what the workbench is, the bundled demo dataset, the plan's stages with their templates, the workspace."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app.widgets import data, templates
from app.widgets.common import PAGE_FILES, STATUS_ICONS, guard, workspace_label
from app.widgets.dataset_card import dataset_card
from app.widgets.launch import launch_many
from app.widgets.nav import ensure_routed
from app.widgets.palette import swatches_html


@st.cache_data(show_spinner=False)
def _card(path: str, mtime: float):
    return dataset_card(path)


@st.cache_data(show_spinner=False, ttl=30)
def _board(sig: tuple):
    return templates.discover()


ensure_routed()
st.title(":material/satellite_alt: MapSage Workbench")
st.markdown(
    "An experiment-and-review workbench for **semantic segmentation of aerial and satellite imagery**. It turns "
    "the staged training plan — health checks → baselines → losses / augmentation / distillation → "
    "sliding-window inference and TTA → SAM / DenseCRF refinement and ensembles — into templates you launch with a "
    "click. Each job runs as a background process (closing the browser never stops it); every number lands in one DuckDB "
    "store, labelled with the split it was measured on, so runs can be ranked, compared with confidence "
    "intervals over tiles, and reviewed.")

board = _board(templates.signature())
runs = guard(data.runs, default=pd.DataFrame(), what="Reading the run list")

# ---------------------------------------------------------------------------------------------------------- state
st.subheader("Workspace")
n_runs = 0 if runs is None or runs.empty else len(runs)
if n_runs == 0:
    demo = templates.demo_plan(board)
    st.info(
        "**This workspace is empty.** First step: **launch the demo plan** — "
        + ", then ".join(f"*{t.label}*" for t in demo)
        + " on the bundled Dubai data. It runs on this machine's CPU in the background; follow it on the Plan "
        "page.", icon=":material/arrow_forward:")
    if st.button(":material/rocket_launch: Launch the demo plan", type="primary", key="launch_demo_plan",
                 disabled=not demo):
        started = launch_many(demo)
        if started:
            st.success("Launched " + ", ".join(f"`{r}`" for r in started) + ". Follow them on the Plan page.")
            st.page_link(PAGE_FILES["plan"], label="Open the Plan board", icon=":material/map:")
    st.caption(f"Workspace folder: `{workspace_label()}` (set `MAPSAGE_WORKSPACE` to move it).")
else:
    counts = runs["status"].value_counts()
    shown = ["queued", "running", "succeeded", "failed", "cancelled", "died"] + (["pruned"] if counts.get("pruned")
                                                                                  else [])
    cols = st.columns(len(shown))
    for col, status in zip(cols, shown):
        col.metric(f"{STATUS_ICONS[status]} {status}", int(counts.get(status, 0)))
    lines = []
    for split in guard(data.evaluated_splits, default=[]) or []:
        board = guard(data.ranking, split, "miou", default=pd.DataFrame())
        if board is None or board.empty:
            continue
        top = board[(board["rank"] == 1) & board["miou"].notna()].merge(   # classification runs have no mIoU
            runs[["run_id", "backbone", "loss"]], on="run_id", how="left")
        # one best per comparable group: dataset, split and tile set never mixed
        for _, t in top.sort_values(["dataset", "miou"], ascending=[True, False]).iterrows():
            lines.append(f"- `{t['dataset'] or t['run_dataset']}`: **{t['miou'] * 100:.2f}** (split `{split}`) — "
                         f"`{t['run_name']}` ({t['backbone']}, {t['loss']}) · {t['identity']}")
    if lines:
        st.markdown("Best mIoU so far, per dataset, split and tile set (a run's own result or the variant it "
                    "adopted; subsets and runs in progress left out):\n" + "\n".join(lines))
    cls_lines = []
    for split in guard(data.evaluated_splits, default=[]) or []:      # image classification: best top-1
        board = guard(data.ranking, split, "top1", default=pd.DataFrame())
        if board is None or board.empty or "top1" not in board:
            continue
        for _, t in board[(board["rank"] == 1) & board["top1"].notna()].sort_values(
                ["dataset", "top1"], ascending=[True, False]).iterrows():
            cls_lines.append(f"- `{t['dataset'] or t['run_dataset']}`: top-1 **{t['top1'] * 100:.2f}**, macro F1 "
                             f"{t['macro_f1'] * 100:.2f} (split `{split}`) — `{t['run_name']}` · {t['identity']}")
    if cls_lines:
        st.markdown("Best image classification so far, per dataset, split and image set:\n" + "\n".join(cls_lines))
    st.caption(f"{n_runs} run(s) in `{workspace_label()}`.")
    c1, c2, c3 = st.columns(3)
    c1.page_link(PAGE_FILES["plan"], label="Plan board: launch and follow jobs", icon=":material/map:")
    c2.page_link(PAGE_FILES["runs"], label="Runs: the experiment table", icon=":material/table_chart:")
    c3.page_link(PAGE_FILES["compare"], label="Compare runs with confidence intervals",
                 icon=":material/compare_arrows:")

# ---------------------------------------------------------------------------------------------------------- data
st.subheader("Bundled demo dataset")
cfg_path = templates.DEMO_DATASET_CONFIG
card = _card(str(cfg_path), cfg_path.stat().st_mtime)
left, right = st.columns([3, 2])
with left:
    st.markdown(f"**{card.title or card.name}** — dataset `{card.name}` (`{card.config}`)")
    facts = [f"**Licence:** {card.licence or 'see the folder'}"
             + (f" (`{card.licence_file}`)" if card.licence_file else ""),
             f"**Image/mask pairs:** {card.n_pairs if card.n_pairs is not None else '?'}"]
    if card.split_counts:
        facts.append("**Split** (whole tiles, never parts of one tile on both sides): " + "; ".join(
            f"{k} {v} pairs ({', '.join(card.split_groups.get(k, []))})" for k, v in card.split_counts.items()))
    facts.append(f"**Masks:** colour-coded RGB (`{card.type}`); ignore index {card.ignore_index} for "
                 + ", ".join(f"`{c}`" for c in card.ignore_colors) + " (counted, never a class)")
    facts.append(f"**Folder:** `{card.root}`")
    st.markdown("\n".join(f"- {f}" for f in facts))
    if card.error:
        st.error(f"The dataset could not be read: {card.error}")
with right:
    st.markdown(f"**{len(card.palette)} classes** (id · name · colour)")
    st.markdown(swatches_html(card.palette), unsafe_allow_html=True)
    st.dataframe(pd.DataFrame({"id": range(len(card.palette)), "class": card.palette.names,
                               "colour": card.palette.colors}), hide_index=True, width="content", placeholder="–")

# ---------------------------------------------------------------------------------------------------------- plan
st.subheader("The plan's stages")
rows = []
for stage, (name, blurb) in templates.STAGES.items():
    items = board.get(stage, [])
    rows.append({"stage": stage, "name": name, "what": blurb,
                 "templates": len(items),
                 "template titles": [t.label + (" (demo)" if t.is_demo else "") for t in items]})
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
             column_config={"stage": st.column_config.NumberColumn("Stage", width="small"),
                            "name": st.column_config.TextColumn("Stage name"),
                            "what": st.column_config.TextColumn("What it does", width="large"),
                            "templates": st.column_config.NumberColumn("Templates", width="small"),
                            "template titles": st.column_config.ListColumn("Templates (demo: runs on the bundled data)",
                                                                           width="large")}, placeholder="–")
st.page_link(PAGE_FILES["plan"], label="Open the Plan board to edit knobs and launch", icon=":material/map:")
