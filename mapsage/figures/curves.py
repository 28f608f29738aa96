"""Figures over epochs: training scalars, validation metrics, per-class IoU, the train/validation loss gap and one
curve per run (Compare, the report's Curves section). Metric values arrive as fractions and are drawn in percent;
epochs are stored 0-based (``epoch`` of the events) and drawn 1-based, as the trainer's own messages count them."""
from __future__ import annotations

import math
from typing import Optional

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mapsage.palette import ClassPalette

from .base import LAYOUT, PCT, SERIES_COLOURS, as_text, empty, epoch_ticks, run_colors

CURVE_GROUPS: list[tuple[str, str]] = [
    ("loss", "Loss terms (train, per epoch)"),
    ("lr", "Learning rate"),
    ("grad_norm", "Gradient norm (before clipping)"),
    ("time", "Time per epoch (s): total, data loading, validation"),
    ("mem", "Peak memory (MB)"),
    ("speed", "Training throughput (images/s)"),
    ("loss_w", "Loss weights (the active mix)"),
    ("freeze", "Frozen share of the encoder"),
    ("acc", "Training pixel accuracy (fraction)"),
    ("gpu", "GPU utilisation (%)"),
    ("other", "Other scalars"),
]
LOSS_NAMES = {"ce", "dice", "lovasz", "ohem", "focal", "boundary", "kd", "feat", "logit_kl", "aux"}


def curve_group(name: str) -> str:
    """The panel a scalar is drawn in, from its name."""
    n = name.lower()
    if n.startswith("loss_w/") or n.startswith("weight/"):
        return "loss_w"
    if n.startswith("loss") or n.endswith("_loss") or n in LOSS_NAMES or n.split("/")[0] in LOSS_NAMES:
        return "loss"
    if n == "lr" or n.startswith(("lr/", "lr_")) or n.endswith("_lr"):
        return "lr"
    if "grad_norm" in n:
        return "grad_norm"
    if n.endswith("time") or n.endswith("time_s"):
        return "time"
    if "mem" in n or n.endswith("rss_mb"):
        return "mem"
    if "per_s" in n or n.endswith("fps"):
        return "speed"
    if "frozen" in n:
        return "freeze"
    if n.startswith("acc_seg"):
        return "acc"
    if n.startswith("gpu_util"):
        return "gpu"
    return "other"


def epoch_series(scalars: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch values (one row per split, name, epoch; the last value of an epoch wins)."""
    if scalars is None or scalars.empty:
        return pd.DataFrame(columns=["split", "name", "epoch", "value"])
    df = scalars.dropna(subset=["epoch"])
    if "seq" in df.columns:
        df = df.sort_values("seq")
    return df.groupby(["split", "name", "epoch"], as_index=False)["value"].last()


def training_curves(scalars: pd.DataFrame, title: str = "Training curves") -> go.Figure:
    """Loss terms, LR, gradient norm, epoch and data time, peak memory over epochs, one panel each."""
    if scalars is not None and not scalars.empty and (scalars["split"] == "train_epoch").any():
        scalars = scalars[scalars["split"] == "train_epoch"]       # epoch means, not the last sampled step
    elif scalars is not None and not scalars.empty:
        scalars = scalars[scalars["split"] != "val"]
    per_epoch = epoch_series(scalars)
    if per_epoch.empty:
        return empty(title, "no per-epoch scalars yet")
    per_epoch = per_epoch.assign(group=per_epoch["name"].map(curve_group))
    groups = [(g, text) for g, text in CURVE_GROUPS if (per_epoch["group"] == g).any()]
    if not groups:
        return empty(title, "no curves of a known kind")
    cols = 2
    rows = math.ceil(len(groups) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[text for _, text in groups],
                        horizontal_spacing=0.08, vertical_spacing=0.16)
    for i, (g, _) in enumerate(groups):
        r, c = i // cols + 1, i % cols + 1
        sub = per_epoch[per_epoch["group"] == g]
        for (split, name), s in sub.groupby(["split", "name"], sort=True):
            s = s.sort_values("epoch")
            legend = name if split in ("train", "train_epoch", None) else f"{name} ({split})"
            fig.add_trace(go.Scatter(x=s["epoch"] + 1, y=s["value"], mode="lines+markers", name=as_text(legend),
                                     legendgroup=g, marker=dict(size=4)), row=r, col=c)
        if g == "lr":
            fig.update_yaxes(type="log", exponentformat="e", row=r, col=c)
        fig.update_xaxes(title_text="epoch", row=r, col=c)
        epoch_ticks(fig, int(sub["epoch"].max()) + 1, row=r, col=c)
    layout = dict(LAYOUT)
    layout["legend"] = dict(orientation="v", x=1.02, y=1.0, font=dict(size=11))
    layout["margin"] = dict(l=50, r=160, t=60, b=40)
    fig.update_layout(title=as_text(title), height=300 * rows, **layout)
    return fig


def step_losses(scalars: pd.DataFrame, title: str = "Sampled step losses (train)") -> go.Figure:
    """The losses sampled every ``train.log_every`` steps, against the global step."""
    if scalars is None or scalars.empty:
        return empty(title, "no step samples yet")
    df = scalars[(scalars["split"] == "train") & scalars["step"].notna()]
    df = df[df["name"].map(curve_group) == "loss"]
    if df.empty:
        return empty(title, "no step samples yet")
    fig = go.Figure()
    for name, s in df.groupby("name", sort=True):
        s = s.sort_values("step")
        fig.add_trace(go.Scatter(x=s["step"], y=s["value"], mode="lines", name=as_text(name)))
    fig.update_layout(title=as_text(title), height=300, xaxis_title="global step", **LAYOUT)
    return fig


def miou_curves(evals: pd.DataFrame, split_label: str = "val", title: str = "mIoU / Boundary IoU over epochs"
                ) -> go.Figure:
    """Validation mIoU, mAcc and Boundary IoU per epoch, one line per weights variant (raw, ema, ...)."""
    if evals is None or evals.empty or "epoch" not in evals.columns:
        return empty(title, "no per-epoch evaluations yet")
    df = evals.dropna(subset=["epoch"])
    if "domain" in df.columns:
        df = df[df["domain"].fillna("all") == "all"]
    if df.empty:
        return empty(title, "no per-epoch evaluations yet")
    fig = go.Figure()
    for variant, s in df.sort_values("epoch").groupby("variant", sort=True):
        for col, dash, metric in (("miou", "solid", "mIoU"), ("mbiou", "dot", "Boundary IoU")):
            if col in s.columns and s[col].notna().any():
                fig.add_trace(go.Scatter(x=s["epoch"] + 1, y=s[col] * PCT, mode="lines+markers",
                                         name=as_text(f"{metric} ({split_label}, {variant})"), line=dict(dash=dash)))
    fig.update_layout(title=as_text(title), height=340, yaxis_title=as_text(f"% ({split_label})"), xaxis_title="epoch",
                      **LAYOUT)
    epoch_ticks(fig, int(df["epoch"].max()) + 1)
    return fig


def per_class_curves(class_rows: pd.DataFrame, palette: ClassPalette, split_label: str = "val",
                     title: str = "Per-class IoU over epochs") -> go.Figure:
    """IoU per epoch, one line per class in the class's colour."""
    if class_rows is None or class_rows.empty:
        return empty(title, "no per-class evaluations yet")
    df = class_rows.dropna(subset=["epoch"]).sort_values("epoch")
    if df.empty:
        return empty(title, "no per-epoch per-class rows yet")
    fig = go.Figure()
    for cid, s in df.groupby("class_id", sort=True):
        name = str(s["class_name"].iloc[0])
        fig.add_trace(go.Scatter(x=s["epoch"] + 1, y=s["iou"] * PCT, mode="lines+markers", name=as_text(name),
                                 line=dict(color=palette.color_of(name) if name in palette.names
                                           else palette.color_of(int(cid)), width=2)))
    fig.update_layout(title=as_text(title), height=340, yaxis_title=as_text(f"IoU % ({split_label})"),
                      xaxis_title="epoch", **LAYOUT)
    epoch_ticks(fig, int(df["epoch"].max()) + 1)
    return fig


def plateau_note(evals: pd.DataFrame, metric: str = "miou", tail: float = 0.2) -> Optional[dict]:
    """The mIoU gained over the last ``tail`` share of the epochs (the plan asks whether training has plateaued).

    Returns {start_epoch, end_epoch, start, end, gain_points, epochs} from the best-known variant's per-epoch
    curve, or None with fewer than two evaluated epochs."""
    if evals is None or evals.empty:
        return None
    df = evals.dropna(subset=["epoch", metric])
    if "domain" in df.columns:
        df = df[df["domain"].fillna("all") == "all"]
    if df.empty:
        return None
    # the variant with the most epochs (raw weights are evaluated every epoch; ties -> the better final value)
    best_variant = max(df.groupby("variant"), key=lambda kv: (kv[1]["epoch"].nunique(),
                                                             kv[1].sort_values("epoch")[metric].iloc[-1]))[0]
    s = df[df["variant"] == best_variant].groupby("epoch")[metric].last().sort_index()
    if len(s) < 2:
        return None
    first, last = int(s.index.min()), int(s.index.max())
    span = last - first
    start_epoch = last - max(1, int(round(span * tail)))
    start_series = s[s.index <= start_epoch]
    start_value = float(start_series.iloc[-1]) if len(start_series) else float(s.iloc[0])
    start_epoch = int(start_series.index[-1]) if len(start_series) else first
    end_value = float(s.iloc[-1])
    # epochs reported 1-based, like the figures
    return {"variant": best_variant, "start_epoch": start_epoch + 1, "end_epoch": last + 1, "start": start_value,
            "end": end_value, "gain_points": (end_value - start_value) * PCT, "epochs": len(s)}


def overlay_curves(series: pd.DataFrame, y: str, y_title: str, title: str, scale: float = 1.0,
                   log_y: bool = False) -> go.Figure:
    """``series``: columns run (label), epoch, and ``y``. One line per run in its series colour
    (:func:`~mapsage.figures.base.run_colors`)."""
    if series is None or series.empty or series[y].isna().all():
        return empty(title, "no curves to overlay")
    fig = go.Figure()
    runs = list(dict.fromkeys(series["run"]))
    for run, color in zip(runs, run_colors(len(runs))):
        s = series[series["run"] == run].sort_values("epoch")
        fig.add_trace(go.Scatter(x=s["epoch"] + 1, y=s[y] * scale, mode="lines+markers", name=as_text(run),
                                 line=dict(color=color), marker=dict(size=4)))
    fig.update_layout(title=as_text(title), height=340, yaxis_title=as_text(y_title), xaxis_title="epoch", **LAYOUT)
    epoch_ticks(fig, int(series["epoch"].max()) + 1)
    if log_y:
        fig.update_yaxes(type="log", exponentformat="e")
    return fig


def loss_curves(scalars: pd.DataFrame, title: str = "Training vs validation loss") -> go.Figure:
    """Per-epoch mean training loss, validation loss (raw, EMA) and the train–validation gap."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["loss per epoch", "gap: validation − training"])
    if scalars is None or scalars.empty:
        return fig
    ep = scalars[scalars["split"] == "train_epoch"]
    train_c, val_c, gap_c = SERIES_COLOURS[0], SERIES_COLOURS[3], SERIES_COLOURS[1]
    for name, color, dash in (("loss", train_c, "solid"), ("val_loss", val_c, "solid"), ("val_loss_ema", val_c, "dot")):
        s = ep[ep["name"] == name].sort_values("epoch")
        if not s.empty:
            fig.add_trace(go.Scatter(x=s["epoch"] + 1, y=s["value"], mode="lines+markers",
                                     name={"loss": "training (crops, augmented)", "val_loss": "validation (raw)",
                                           "val_loss_ema": "validation (EMA)"}[name],
                                     line=dict(color=color, dash=dash)), row=1, col=1)
    g = ep[ep["name"] == "train_val_gap"].sort_values("epoch")
    if not g.empty:
        fig.add_trace(go.Bar(x=g["epoch"] + 1, y=g["value"], name="gap", marker_color=gap_c), row=1, col=2)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_layout(title=as_text(title), height=320, **LAYOUT)
    return fig


def metric_curves(evals: pd.DataFrame, split: str = "val", title: str = "Validation metrics per epoch") -> go.Figure:
    """mIoU, Boundary IoU, mAcc, aAcc and mF1 (Dice) per epoch, one panel each, a line per weights variant."""
    cols = [("miou", "mIoU"), ("mbiou", "Boundary IoU"), ("macc", "mAcc"), ("aacc", "aAcc"), ("mf1", "mF1 (Dice)")]
    fig = make_subplots(rows=1, cols=5, subplot_titles=[c[1] for c in cols], horizontal_spacing=0.05)
    if evals is None or evals.empty:
        return fig
    df = evals[evals["epoch"].notna() & (evals["split"] == split)]
    if "domain" in df.columns:
        df = df[df["domain"].fillna("all") == "all"]
    colors = {"raw": SERIES_COLOURS[0], "ema": SERIES_COLOURS[2]}
    for i, (c, _metric) in enumerate(cols):
        for variant, s in df.sort_values("epoch").groupby("variant"):
            if c in s.columns and s[c].notna().any():
                fig.add_trace(go.Scatter(x=s["epoch"] + 1, y=s[c] * PCT, mode="lines+markers", name=as_text(variant),
                                         legendgroup=str(variant), showlegend=i == 0,
                                         line=dict(color=colors.get(variant))), row=1, col=i + 1)
    fig.update_xaxes(dtick=1)
    fig.update_layout(title=as_text(f"{title} (%, {split})"), height=300, **LAYOUT)
    return fig
