"""The report's figures: the app's own figures (:mod:`mapsage.figures`) drawn from the report's tables, so a figure
in the report is the one the app shows for the same stored rows (per-class bars in the class colours, the
confusion matrix, paired-bootstrap intervals, A/B gains, one curve per run). Each function returns figures (an empty
list or None when there is nothing to draw); :func:`mapsage.report.figures.figure_html` turns one into HTML."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from mapsage import figures
from mapsage.palette import ClassPalette, palette_from_config

from .data import ReportData, is_missing

CLASS_METRICS = (("iou", "IoU", 3), ("biou", "Boundary IoU", 0))     # column, label, weakest classes outlined
CURVES = (  # source, curve name, title, y title, scale, log y
    ("eval", "miou", "Validation mIoU per epoch", "mIoU % (split in legend)", 100.0, False),
    ("eval", "mbiou", "Validation Boundary IoU per epoch", "Boundary IoU % (split in legend)", 100.0, False),
    ("train", "loss", "Training loss per epoch (mean)", "loss (train)", 1.0, False),
    ("train", "lr", "Learning rate (end of epoch)", "learning rate", 1.0, True),
)


def palette_of(data: ReportData, run_id: str) -> ClassPalette:
    """A run's class colours, as the app takes them (the resolved config, else the stored class names)."""
    return palette_from_config(data.config(run_id), data.class_names(run_id))


def epoch_text(epoch) -> str:
    return "final" if is_missing(epoch) else f"epoch {int(epoch) + 1}"


def class_figures(data: ReportData, per_class: pd.DataFrame) -> list[figures.Figure]:
    """Per-class IoU and Boundary IoU bars (the app's Per class tab) of each run, weights variant and split: its
    latest evaluation, all domains pooled."""
    df = per_class[per_class["domain"].fillna("all") == "all"]
    out = []
    for (rid, variant, split), g in df.groupby(["run_id", "variant", "split"], sort=False, dropna=False):
        g = g[g["eval_seq"] == g["eval_seq"].max()]
        head = f"{g['run'].iloc[0]} · {variant} · {epoch_text(g['epoch'].iloc[0])}"
        for col, metric, weak in CLASS_METRICS:
            if pd.to_numeric(g[col], errors="coerce").notna().any():
                out.append(figures.per_class_bars(g, palette_of(data, rid), col, metric, str(split), weakest_k=weak,
                                                  title=f"{head}: per-class {metric} ({split})"))
    return out


def confusion_figure(data: ReportData, run_id: str, matrix: np.ndarray, names: list[str], head: str, split: str,
                     unit: str = "pixels") -> figures.Figure:
    """The app's confusion heatmap (row-normalised; counts in the hover, and in the cells for images) titled
    ``head`` and the app's title."""
    fig = figures.confusion_heatmap(matrix, names, True, split, palette_of(data, run_id), unit=unit)
    return fig.update_layout(title=figures.as_text(f"{head}: ") + fig.layout.title.text)


def forest_figures(diffs: pd.DataFrame, level: str) -> list[figures.Figure]:
    """Paired-bootstrap differences, mIoU then Boundary IoU: the app's forest of intervals (Compare)."""
    if diffs.empty:
        return []
    labels = [f"{r.run_b} · {r.variant_b}  vs  {r.run_a} · {r.variant_a}  ({r.split})" if r.comparison != "A/B"
              else f"{r.run_b}: {r.variant_b}  vs  {r.variant_a}  ({r.split})" for r in diffs.itertuples()]
    split = ", ".join(sorted(set(diffs["split"].dropna().astype(str))))
    out = []
    for m, metric in (("miou", "mIoU"), ("mbiou", "Boundary IoU")):
        rows = pd.DataFrame({"run": labels, "delta": diffs[f"delta_{m}"].astype(float),
                             "lo": diffs[f"ci_low_{m}"].astype(float), "hi": diffs[f"ci_high_{m}"].astype(float),
                             "significant": diffs[f"significant_{m}"].fillna(False).astype(bool),
                             "n_tiles": diffs["n_tiles"]}).dropna(subset=["delta"])
        if not rows.empty:
            out.append(figures.bootstrap_forest(
                rows, split, metric=metric, level=float(level),
                title=f"Δ{metric}, B − A, with {level} % paired-bootstrap intervals (grey: the interval contains 0)"))
    return out


def ab_figure(rows: pd.DataFrame, title: str) -> Optional[figures.Figure]:
    """The app's A/B bars (TTA A/B page): the variants' gains over their baseline (the baseline row itself only
    when nothing else is there), with their bootstrap intervals and the keep threshold."""
    if rows.empty:
        return None
    shown = rows[rows["decision"] != "baseline"] if (rows["decision"] != "baseline").any() else rows
    crit = ", ".join(sorted(set(shown["criterion"].dropna().astype(str))))
    splits = ", ".join(sorted(set(shown["split"].dropna().astype(str))))
    return figures.ab_bars(shown, title, y_title=f"gain, points of {crit} ({splits})")


def curve_figures(curves: pd.DataFrame) -> list[figures.Figure]:
    """Validation mIoU and Boundary IoU, training loss and learning rate per epoch: the app's overlaid curves
    (Compare), one line per run, weights variant and split in the runs' series colours."""
    out = []
    for source, name, title, y_title, scale, log_y in CURVES:
        df = curves[(curves["source"] == source) & (curves["name"] == name)]
        if df.empty or df["value"].isna().all():
            continue
        series = pd.DataFrame({
            "run": [" · ".join(x for x in (str(r), "" if is_missing(v) else str(v), f"split {s}") if x)
                    for r, v, s in zip(df["run"], df["variant"], df["split"])],
            "epoch": df["epoch"].astype(int), "value": df["value"].astype(float)})
        out.append(figures.overlay_curves(series, "value", y_title, title, scale, log_y))
    return out
