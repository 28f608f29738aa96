"""The plan's experiment table: one row per run with Backbone, Pretrain, Loss, Aug, LR schedule, Size, TTA, Post,
mIoU, Boundary IoU and FPS, plus status, split, duration and run name.

The descriptive columns come from the store's run rows (derived from each run's resolved config by the store);
the figures from ``store.leaderboard`` on the chosen split: per run, its best evaluation on that split (the epoch
and weights it came from are columns too, so a number never hides where it was measured). Figures are in points
(%), and every figure's column header names its split."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd


DESCRIPTIVE = [("backbone", "Backbone"), ("pretrain", "Pretrain"), ("loss", "Loss"), ("aug", "Aug"),
               ("lr_schedule", "LR schedule"), ("size", "Size"), ("tta", "TTA"), ("post", "Post")]
FIGURES = [("miou", "mIoU"), ("mbiou", "Boundary IoU"), ("macc", "mAcc"), ("mf1", "mF1"), ("aacc", "aAcc")]
RANK_METRICS = {"mIoU": "miou", "Boundary IoU": "mbiou", "mAcc": "macc", "mF1": "mf1"}


def figure_label(label: str, split: str) -> str:
    return f"{label} ({split})"


def experiment_table(runs: pd.DataFrame, board: pd.DataFrame, split: str, rank_by: str = "miou",
                     per_class: bool = False) -> pd.DataFrame:
    """Join the run list with the leaderboard on ``split``; rank by ``rank_by`` (runs without a figure last).

    Returns display columns: Rank, Run, Status, Stage, Kind, the descriptive columns, the figures labelled with
    ``split`` (points), Epoch, Weights, FPS, per-class IoU (optional), Split, Dataset, Duration (min), Started,
    run_id."""
    if runs is None or runs.empty:
        return pd.DataFrame()
    df = runs.copy()
    figs = [c for c, _ in FIGURES]
    keep = ["run_id", *figs, "variant", "epoch", "n_images"]
    iou_cols: list[str] = []
    if board is not None and not board.empty:
        iou_cols = [c for c in board.columns if c.startswith("iou_")] if per_class else []
        df = df.merge(board[[c for c in keep if c in board.columns] + iou_cols], on="run_id", how="left")
    else:
        for c in keep[1:]:
            df[c] = np.nan
    if rank_by not in df.columns:
        rank_by = "miou"
    # ranked like store.leaderboard (figure descending, ties by run id); runs without a figure after, newest first
    with_fig = df[df[rank_by].notna()].sort_values([rank_by, "run_id"], ascending=[False, True], kind="stable")
    without = df[df[rank_by].isna()].sort_values("created_at", ascending=False, kind="stable")
    df = pd.concat([with_fig, without])
    ranked = df[rank_by].notna()
    out = pd.DataFrame({
        "Rank": np.where(ranked, ranked.cumsum(), np.nan),
        "Run": df["name"],
        "Status": df["status"],
        "Stage": df["plan_stage"],
        "Kind": df["kind"],
    })
    for col, label in DESCRIPTIVE:
        out[label] = df[col]
    for col, label in FIGURES:
        out[figure_label(label, split)] = df[col] * 100.0
    out[f"Epoch ({split})"] = df["epoch"] + 1           # 1-based, as people count epochs; NaN = final evaluation
    out["Weights"] = df["variant"]
    out["FPS (img/s)"] = df["fps"]
    if "external_miou" in df.columns and df["external_miou"].notna().any():
        # a benchmark's own figure (recorded with `mapsage runs score`) beside validation's promise
        out["External mIoU"] = df["external_miou"] * 100.0
        out["Val→test gap"] = df["val_test_gap"] * 100.0
        out["External source"] = (df["external_split"].fillna("") + " · " + df["external_source"].fillna("")
                                  ).where(df["external_miou"].notna())
    for c in iou_cols:
        out[figure_label(f"IoU {c[4:]}", split)] = df[c] * 100.0
    out["Split"] = split
    out["Dataset"] = df["dataset"]
    out["Duration (min)"] = df["duration_s"] / 60.0
    out["Started"] = df["started_at"]
    out["run_id"] = df["run_id"]
    return out.reset_index(drop=True)


def column_config(table: pd.DataFrame, split: str) -> dict:
    import streamlit as st

    cfg = {
        # pinned: the rank, the run and its two headline figures stay in view while the rest scrolls sideways
        "Rank": st.column_config.NumberColumn("Rank", format="%d", width="small", pinned=True),
        "Run": st.column_config.TextColumn("Run", pinned=True),
        "Stage": st.column_config.NumberColumn("Stage", format="%d", width="small"),
        "FPS (img/s)": st.column_config.NumberColumn("FPS (img/s)", format="%.2f",
                                                    help="images per second of the evaluation, on its device"),
        "Duration (min)": st.column_config.NumberColumn("Duration (min)", format="%.1f"),
        "External mIoU": st.column_config.NumberColumn(
            "External mIoU", format="%.2f", help="points (%) a benchmark reported for the run (mapsage runs score)"),
        "Val→test gap": st.column_config.NumberColumn(
            "Val→test gap", format="%+.2f", help="external mIoU minus the run's best validation mIoU, in points"),
        "Started": st.column_config.DatetimeColumn("Started", format="YYYY-MM-DD HH:mm"),
        f"Epoch ({split})": st.column_config.NumberColumn(f"Epoch ({split})", format="%d",
                                                         help="the epoch of the best evaluation (empty: final)"),
    }
    headline = {figure_label("mIoU", split), figure_label("Boundary IoU", split)}
    for c in table.columns:
        if c.endswith(f"({split})") and not c.startswith("Epoch"):
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
