"""The plan's experiment table: one row per run with Backbone, Pretrain, Loss, Aug, LR schedule, Size, TTA, Post,
mIoU, Boundary IoU and images/s, plus status, split, duration and run name.

The descriptive columns come from the store's run rows (derived from each run's resolved config by the store);
the figures from ``store.ranking`` on the chosen split: per run, ONE evaluation (all its figures together) with
its identity -- tiles, weights, variant, parameters, images/s and device -- and whether it is ranked (a run's
own result or adopted variant) or only shown (a parent's re-score, a pending decision, a subset, in progress).
Figures are in points (%), and every figure's column header names its split."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from mapsage.metrics.names import metric_label
from store.ranked import tiles_text, variant_text, weights_text

DESCRIPTIVE = [("backbone", "Backbone"), ("pretrain", "Pretrain"), ("loss", "Loss"), ("aug", "Aug"),
               ("lr_schedule", "LR schedule"), ("size", "Size"), ("tta", "TTA"), ("post", "Post")]
FIGURES = [("miou", "mIoU"), ("mbiou", "Boundary IoU"), ("macc", "mAcc"), ("mf1", metric_label("mf1")),
           ("aacc", "aAcc")]
# the F-scores beyond Dice live in the evaluations' JSON; ranking by one adds its column
RANK_METRICS = {"mIoU": "miou", "Boundary IoU": "mbiou", "mAcc": "macc", metric_label("mf1"): "mf1",
                metric_label("mfscore"): "mfscore", metric_label("mfscore_fg"): "mfscore_fg",
                # image classification runs
                metric_label("top1"): "top1", metric_label("macro_f1"): "macro_f1"}


def figure_label(label: str, split: str) -> str:
    return f"{label} ({split})"


def experiment_table(runs: pd.DataFrame, board: pd.DataFrame, split: str, rank_by: str = "miou",
                     per_class: bool = False) -> pd.DataFrame:
    """Join the run list with the ranking (``store.ranking``) on ``split``.

    ``board`` holds one row per run: its headline evaluation (the best rankable one by ``rank_by``: a run's own
    result or the variant it adopted; else its best other one, marked by ``role``), ``rank`` within comparable
    evaluations (dataset, split, tile set) and the evaluation's identity. Ranked runs first (best first), then
    runs whose figure is not rankable (a parent's re-score, a pending decision, a subset, in progress), then runs
    without an evaluation on ``split``.

    Returns display columns: Rank, Run, Status, Stage, Kind, the descriptive columns, the figures labelled with
    ``split`` (points), Evaluation (the short identity), Tiles, Weights, Variant, Ranked as, Params (M), Images/s,
    Device, per-class IoU (optional), Split, Dataset, Duration (min), Started, run_id."""

    if runs is None or runs.empty:
        return pd.DataFrame()
    df = runs.copy()
    figs = [c for c, _ in FIGURES]
    extra = [rank_by] if rank_by not in figs and board is not None and rank_by in board.columns else []
    keep = ["run_id", *figs, *extra, "variant", "epoch", "n_images", "rank", "rankable", "role", "completeness",
            "in_progress", "identity", "tile_count", "split_size", "weights", "ckpt_epoch", "ckpt_run", "params",
            "images_per_s", "device", "group", "split"]
    iou_cols: list[str] = []
    if board is not None and not board.empty:
        iou_cols = [c for c in board.columns if c.startswith("iou_")] if per_class else []
        b = board[[c for c in keep if c in board.columns] + iou_cols].rename(columns={"split": "eval_split"})
        df = df.merge(b, on="run_id", how="left")
    for c in keep[1:]:
        if c not in df.columns and c != "split":
            df[c] = np.nan
    if rank_by not in df.columns:
        rank_by = "miou"
    has = df[rank_by].notna()
    ranked = df["rank"].notna()
    order = pd.concat([
        df[ranked].sort_values([rank_by, "run_id"], ascending=[False, True], kind="stable"),
        df[~ranked & has].sort_values([rank_by, "run_id"], ascending=[False, True], kind="stable"),
        df[~has & ~ranked].sort_values("created_at", ascending=False, kind="stable")])   # a ranked run without
    # this figure (a classification run ranked by mIoU) is listed once
    df = order
    recs = df.to_dict("records")
    with_fig = df["identity"].notna().to_numpy() if "identity" in df else np.zeros(len(df), bool)
    role_text = {"result": "own result", "adopted": "adopted variant", "lineage": "lineage: parent re-scored",
                 "rejected": "not adopted", "pending": "decision pending"}
    out = pd.DataFrame({
        "Rank": df["rank"].to_numpy(),
        "Run": df["name"].to_numpy(),
        "Status": df["status"].to_numpy(),
        "Stage": df["plan_stage"].to_numpy(),
        "Kind": df["kind"].to_numpy(),
    })
    for col, label in DESCRIPTIVE:
        out[label] = df[col].to_numpy()
    for col, label in FIGURES + [(c, metric_label(c)) for c in extra]:
        out[figure_label(label, split)] = (df[col] * 100.0).to_numpy()
    out["Evaluation"] = [r["identity"] if w else None for r, w in zip(recs, with_fig)]
    out["Tiles"] = [tiles_text(r) if w else None for r, w in zip(recs, with_fig)]
    out["Weights"] = [weights_text(r) if w else None for r, w in zip(recs, with_fig)]
    out["Variant"] = [variant_text(r) if w else None for r, w in zip(recs, with_fig)]
    notes = []
    for r, w in zip(recs, with_fig):
        if not w:
            notes.append(None)
            continue
        note = role_text.get(r.get("role"), r.get("role"))
        if r.get("completeness") == "subset":
            note += ", subset"
        if r.get("in_progress") is True:
            note += ", in progress"
        notes.append(note)
    out["Ranked as"] = notes
    out["Params (M)"] = (pd.to_numeric(df["params"], errors="coerce") / 1e6).to_numpy()
    ips = pd.to_numeric(df["images_per_s"], errors="coerce")
    out["Images/s"] = ips.fillna(pd.to_numeric(df["fps"], errors="coerce")).to_numpy()
    out["Device"] = df["device"].to_numpy()
    if "external_miou" in df.columns and df["external_miou"].notna().any():
        # a benchmark's own figure (recorded with `mapsage runs score`) beside validation's promise
        out["External mIoU"] = (df["external_miou"] * 100.0).to_numpy()
        out["Val→test gap"] = (df["val_test_gap"] * 100.0).to_numpy()
        out["External source"] = (df["external_split"].fillna("") + " · " + df["external_source"].fillna("")
                                  ).where(df["external_miou"].notna()).to_numpy()
    for c in iou_cols:
        out[figure_label(f"IoU {c[4:]}", split)] = (df[c] * 100.0).to_numpy()
    out["Split"] = split
    out["Dataset"] = df["dataset"].to_numpy()
    out["Duration (min)"] = (df["duration_s"] / 60.0).to_numpy()
    out["Started"] = df["started_at"].to_numpy()
    out["run_id"] = df["run_id"].to_numpy()
    # empty text cells read "–", never "None"
    for c in ("Status", "Kind", *[label for _, label in DESCRIPTIVE], "Evaluation", "Tiles", "Weights", "Variant",
              "Ranked as", "Device", "Dataset"):
        out[c] = out[c].astype(object).where(out[c].notna(), "–")
    return out.reset_index(drop=True)


def column_config(table: pd.DataFrame, split: str) -> dict:
    import streamlit as st

    cfg = {
        # pinned: the rank, the run and its two headline figures stay in view while the rest scrolls sideways
        "Rank": st.column_config.NumberColumn("Rank", format="%d", width="small", pinned=True),
        "Run": st.column_config.TextColumn("Run", pinned=True),
        "Stage": st.column_config.NumberColumn("Stage", format="%d", width="small"),
        "Images/s": st.column_config.NumberColumn("Images/s", format="%.2f",
                                                 help="images per second of the evaluation, on its Device"),
        "Params (M)": st.column_config.NumberColumn("Params (M)", format="%.2f",
                                                   help="parameters of the evaluated model, millions"),
        "Evaluation": st.column_config.TextColumn(
            "Evaluation", help="what the figures measured: split · tiles scored / tiles in the split · weights "
                               "(raw or EMA, epoch, whose checkpoint) · variant"),
        "Ranked as": st.column_config.TextColumn(
            "Ranked as", help="own result or adopted variant: ranked; a parent's checkpoint re-scored, a variant not "
                              "adopted, a pending decision, a subset or a run in progress: shown, never ranked"),
        "Duration (min)": st.column_config.NumberColumn("Duration (min)", format="%.1f"),
        "External mIoU": st.column_config.NumberColumn(
            "External mIoU", format="%.2f", help="points (%) a benchmark reported for the run (mapsage runs score)"),
        "Val→test gap": st.column_config.NumberColumn(
            "Val→test gap", format="%+.2f", help="external mIoU minus the run's best validation mIoU, in points"),
        "Started": st.column_config.DatetimeColumn("Started", format="YYYY-MM-DD HH:mm"),
    }
    headline = {figure_label("mIoU", split), figure_label("Boundary IoU", split)}
    for c in table.columns:
        if c.endswith(f"({split})"):
            cfg[c] = st.column_config.NumberColumn(c, format="%.2f", pinned=c in headline,
                                                   help=f"points (%), measured on the {split} split")
    return cfg


def filter_runs(runs: pd.DataFrame, statuses: Optional[list[str]] = None, stages: Optional[list[int]] = None,
                kinds: Optional[list[str]] = None, datasets: Optional[list[str]] = None,
                backbones: Optional[list[str]] = None, text: str = "") -> pd.DataFrame:
    df = runs
    if df is None or df.empty:
        return df
    if statuses:
        df = df[df["status"].isin(statuses)]
    if stages:
        df = df[df["plan_stage"].isin(stages)]
    if kinds:
        df = df[df["kind"].isin(kinds)]
    if datasets:
        df = df[df["dataset"].isin(datasets)]
    if backbones:
        df = df[df["backbone"].isin(backbones)]
    if text:
        t = text.lower()
        hay = (df["name"].fillna("") + " " + df["run_id"].fillna("") + " " + df["backbone"].fillna("") + " "
               + df["loss"].fillna("") + " " + df["aug"].fillna("") + " " + df["title"].fillna("")).str.lower()
        df = df[hay.str.contains(t, regex=False)]
    return df
