"""Plotly figures of the workbench. Pure functions of DataFrames (no Streamlit), so they are testable and reused
by every page. Every per-class mark is drawn in the class's own colour (:mod:`app.widgets.palette`); metric values
arrive as fractions and are drawn in percent (points), the unit of the plan's tables. Epochs are stored 0-based
(``epoch`` of the events) and drawn 1-based (epoch 1 is the first), as the trainer's own messages count them."""
from __future__ import annotations

import math
from typing import Iterable, Optional

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .palette import ClassPalette, fallback_color

PCT = 100.0
# no plotly template: Streamlit's chart theme styles the figures (and a named template costs ~0.1 s per figure to
# build, which is most of a page's render time)
_LAYOUT = dict(margin=dict(l=50, r=20, t=50, b=40), legend=dict(orientation="h", y=-0.2))


def _epoch_ticks(fig: go.Figure, n_epochs: int, **where) -> None:
    """Integer epoch ticks (no 1.2, 1.4 … on short runs)."""
    fig.update_xaxes(tickmode="linear", tick0=1, dtick=max(1, math.ceil(max(1, n_epochs) / 12)), **where)


def _empty(title: str, note: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, **_LAYOUT, height=260,
                      annotations=[dict(text=note, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                                        font=dict(size=14, color="#666"))])
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


# ------------------------------------------------------------------------------------------------------------
# training curves

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
        return _empty(title, "no per-epoch scalars yet")
    per_epoch = per_epoch.assign(group=per_epoch["name"].map(curve_group))
    groups = [(g, label) for g, label in CURVE_GROUPS if (per_epoch["group"] == g).any()]
    if not groups:
        return _empty(title, "no curves of a known kind")
    cols = 2
    rows = math.ceil(len(groups) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[label for _, label in groups],
                        horizontal_spacing=0.08, vertical_spacing=0.16)
    for i, (g, _) in enumerate(groups):
        r, c = i // cols + 1, i % cols + 1
        sub = per_epoch[per_epoch["group"] == g]
        for (split, name), s in sub.groupby(["split", "name"], sort=True):
            s = s.sort_values("epoch")
            label = name if split in ("train", "train_epoch", None) else f"{name} ({split})"
            fig.add_trace(go.Scatter(x=s["epoch"] + 1, y=s["value"], mode="lines+markers", name=label,
                                     legendgroup=g, marker=dict(size=4)), row=r, col=c)
        if g == "lr":
            fig.update_yaxes(type="log", exponentformat="e", row=r, col=c)
        fig.update_xaxes(title_text="epoch", row=r, col=c)
        _epoch_ticks(fig, int(sub["epoch"].max()) + 1, row=r, col=c)
    layout = dict(_LAYOUT)
    layout["legend"] = dict(orientation="v", x=1.02, y=1.0, font=dict(size=11))
    layout["margin"] = dict(l=50, r=160, t=60, b=40)
    fig.update_layout(title=title, height=300 * rows, **layout)
    return fig


def step_losses(scalars: pd.DataFrame, title: str = "Sampled step losses (train)") -> go.Figure:
    """The losses sampled every ``train.log_every`` steps, against the global step."""
    if scalars is None or scalars.empty:
        return _empty(title, "no step samples yet")
    df = scalars[(scalars["split"] == "train") & scalars["step"].notna()]
    df = df[df["name"].map(curve_group) == "loss"]
    if df.empty:
        return _empty(title, "no step samples yet")
    fig = go.Figure()
    for name, s in df.groupby("name", sort=True):
        s = s.sort_values("step")
        fig.add_trace(go.Scatter(x=s["step"], y=s["value"], mode="lines", name=name))
    fig.update_layout(title=title, height=300, xaxis_title="global step", **_LAYOUT)
    return fig


def miou_curves(evals: pd.DataFrame, split_label: str = "val", title: str = "mIoU / Boundary IoU over epochs"
                ) -> go.Figure:
    """Validation mIoU, mAcc and Boundary IoU per epoch, one line per weights variant (raw, ema, ...)."""
    if evals is None or evals.empty or "epoch" not in evals.columns:
        return _empty(title, "no per-epoch evaluations yet")
    df = evals.dropna(subset=["epoch"])
    if "domain" in df.columns:
        df = df[df["domain"].fillna("all") == "all"]
    if df.empty:
        return _empty(title, "no per-epoch evaluations yet")
    fig = go.Figure()
    for variant, s in df.sort_values("epoch").groupby("variant", sort=True):
        for col, dash, label in (("miou", "solid", "mIoU"), ("mbiou", "dot", "Boundary IoU")):
            if col in s.columns and s[col].notna().any():
                fig.add_trace(go.Scatter(x=s["epoch"] + 1, y=s[col] * PCT, mode="lines+markers",
                                         name=f"{label} ({split_label}, {variant})", line=dict(dash=dash)))
    fig.update_layout(title=title, height=340, yaxis_title=f"% ({split_label})", xaxis_title="epoch", **_LAYOUT)
    _epoch_ticks(fig, int(df["epoch"].max()) + 1)
    return fig


def per_class_curves(class_rows: pd.DataFrame, palette: ClassPalette, split_label: str = "val",
                     title: str = "Per-class IoU over epochs") -> go.Figure:
    if class_rows is None or class_rows.empty:
        return _empty(title, "no per-class evaluations yet")
    df = class_rows.dropna(subset=["epoch"]).sort_values("epoch")
    if df.empty:
        return _empty(title, "no per-epoch per-class rows yet")
    fig = go.Figure()
    for cid, s in df.groupby("class_id", sort=True):
        name = str(s["class_name"].iloc[0])
        fig.add_trace(go.Scatter(x=s["epoch"] + 1, y=s["iou"] * PCT, mode="lines+markers", name=name,
                                 line=dict(color=palette.color_of(name) if name in palette.names
                                           else palette.color_of(int(cid)), width=2)))
    fig.update_layout(title=title, height=340, yaxis_title=f"IoU % ({split_label})", xaxis_title="epoch",
                      **_LAYOUT)
    _epoch_ticks(fig, int(df["epoch"].max()) + 1)
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
    # epochs reported 1-based, like the charts
    return {"variant": best_variant, "start_epoch": start_epoch + 1, "end_epoch": last + 1, "start": start_value,
            "end": end_value, "gain_points": (end_value - start_value) * PCT, "epochs": len(s)}


# ------------------------------------------------------------------------------------------------------------
# per-class figures


def weakest(class_rows: pd.DataFrame, k: int = 3, col: str = "iou") -> list[str]:
    df = class_rows.dropna(subset=[col])
    if "excluded" in df.columns:
        df = df[~df["excluded"].fillna(False).astype(bool)]
    return list(df.nsmallest(k, col)["class_name"].astype(str)) if len(df) else []


def per_class_bars(class_rows: pd.DataFrame, palette: ClassPalette, col: str = "iou", label: str = "IoU",
                   split_label: str = "val", weakest_k: int = 3, title: Optional[str] = None) -> go.Figure:
    """One bar per class in its own colour; the ``weakest_k`` classes are outlined in red and named."""
    title = title or f"Per-class {label} ({split_label})"
    if class_rows is None or class_rows.empty or class_rows[col].isna().all():
        return _empty(title, f"no per-class {label} yet")
    df = class_rows.sort_values("class_id")
    weak = set(weakest(df, weakest_k, col)) if weakest_k else set()
    names = df["class_name"].astype(str).tolist()
    values = (df[col] * PCT).tolist()
    colors = [palette.color_of(n) if n in palette.names else palette.color_of(int(i))
              for n, i in zip(names, df["class_id"])]
    line_colors = ["#D62728" if n in weak else "rgba(0,0,0,0.25)" for n in names]
    line_widths = [3 if n in weak else 1 for n in names]
    text = [("n/a (absent)" if (v is None or (isinstance(v, float) and math.isnan(v))) else f"{v:.1f}")
            + ("  ▼ weakest" if n in weak else "") for n, v in zip(names, values)]
    fig = go.Figure(go.Bar(x=names, y=values, marker=dict(color=colors, line=dict(color=line_colors,
                                                                                   width=line_widths)),
                           text=text, textposition="outside", cliponaxis=False, name=label,
                           hovertemplate="%{x}: %{y:.2f}<extra></extra>"))
    fig.update_layout(title=title, height=360, yaxis_title=f"{label} % ({split_label})", yaxis_range=[0, 105],
                      showlegend=False, **_LAYOUT)
    return fig


def confusion_heatmap(matrix: Iterable, class_names: list[str], normalise: bool, split_label: str = "val",
                      palette: Optional[ClassPalette] = None) -> go.Figure:
    """Rows are labels, columns predictions. ``normalise``: each row divided by its label count (recall on the
    diagonal); otherwise raw pixel counts."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.size == 0:
        return _empty("Confusion matrix", "no confusion matrix yet")
    if normalise:
        sums = m.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(sums > 0, m / sums, np.nan)
        text = [[("" if np.isnan(v) else f"{v * PCT:.1f}") for v in row] for row in z]
        title, cbar = f"Confusion matrix, row-normalised (% of label pixels, {split_label})", "% of row"
        z = z * PCT
    else:
        z = m
        text = [[_short_count(v) for v in row] for row in m]
        title, cbar = f"Confusion matrix, pixel counts ({split_label})", "pixels"
    fig = go.Figure(go.Heatmap(z=z, x=class_names, y=class_names, text=text, texttemplate="%{text}",
                               colorscale="Blues", colorbar=dict(title=cbar),
                               hovertemplate="label %{y} → predicted %{x}: %{z:.4g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="label")
    fig.update_xaxes(title_text="prediction", side="bottom")
    if palette is not None:
        fig.update_xaxes(tickmode="array", tickvals=class_names,
                         ticktext=[f'<span style="color:{palette.color_of(n)}">■</span> {n}' for n in class_names])
        fig.update_yaxes(tickmode="array", tickvals=class_names,
                         ticktext=[f'{n} <span style="color:{palette.color_of(n)}">■</span>' for n in class_names])
    fig.update_layout(title=title, height=120 + 48 * len(class_names), margin=dict(l=110, r=20, t=50, b=60))
    return fig


def _short_count(v: float) -> str:
    v = float(v)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.1f}{unit}"
    return f"{v:.0f}"


def domain_bars(evals: pd.DataFrame, split_label: str = "val", title: str = "Urban / Rural breakdown"
                ) -> go.Figure:
    """mIoU and Boundary IoU per domain (rows of one evaluation with domain != 'all', plus 'all')."""
    if evals is None or evals.empty:
        return _empty(title, "no domain breakdown")
    df = evals.copy()
    df["domain"] = df["domain"].fillna("all")
    fig = go.Figure()
    for col, label, color in (("miou", "mIoU", "#2E6FD8"), ("mbiou", "Boundary IoU", "#9467BD")):
        if col in df.columns:
            fig.add_trace(go.Bar(x=df["domain"], y=df[col] * PCT, name=f"{label} ({split_label})",
                                 marker_color=color, text=[f"{v * PCT:.1f}" if pd.notna(v) else "" for v in df[col]],
                                 textposition="outside", cliponaxis=False))
    fig.update_layout(title=title, barmode="group", height=320, yaxis_title=f"% ({split_label})", **_LAYOUT)
    return fig


def per_class_domain_bars(class_rows: pd.DataFrame, palette: ClassPalette, split_label: str = "val",
                          title: str = "Per-class IoU by domain") -> go.Figure:
    if class_rows is None or class_rows.empty:
        return _empty(title, "no per-domain per-class rows")
    fig = go.Figure()
    patterns = ["", "/", ".", "x", "-"]
    for i, (domain, s) in enumerate(class_rows.groupby("domain", sort=True)):
        s = s.sort_values("class_id")
        fig.add_trace(go.Bar(x=s["class_name"], y=s["iou"] * PCT, name=str(domain),
                             marker=dict(color=[palette.color_of(n) for n in s["class_name"]],
                                         pattern_shape=patterns[i % len(patterns)],
                                         line=dict(color="rgba(0,0,0,0.4)", width=1))))
    fig.update_layout(title=title, barmode="group", height=340, yaxis_title=f"IoU % ({split_label})", **_LAYOUT)
    return fig


# ------------------------------------------------------------------------------------------------------------
# comparison figures


def run_colors(n: int) -> list[str]:
    seq = ["#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2", "#7F7F7F"]
    return [seq[i] if i < len(seq) else fallback_color(i) for i in range(n)]


def delta_bars(deltas: pd.DataFrame, palette: ClassPalette, split_label: str = "val",
               title: str = "Per-class ΔIoU against the reference run") -> go.Figure:
    """``deltas``: columns run (label), class_name, delta (fraction). Bars in the class colour, grouped by run
    (outline colour = the run)."""
    if deltas is None or deltas.empty:
        return _empty(title, "nothing to compare")
    fig = go.Figure()
    runs = list(dict.fromkeys(deltas["run"]))
    for run, color in zip(runs, run_colors(len(runs) + 1)[1:]):
        s = deltas[deltas["run"] == run]
        fig.add_trace(go.Bar(x=s["class_name"], y=s["delta"] * PCT, name=str(run),
                             marker=dict(color=[palette.color_of(n) for n in s["class_name"]],
                                         line=dict(color=color, width=3)),
                             text=[f"{v * PCT:+.1f}" if pd.notna(v) else "" for v in s["delta"]],
                             textposition="outside", cliponaxis=False,
                             hovertemplate="%{x}: %{y:+.2f} points<extra>" + str(run) + "</extra>"))
    fig.add_hline(y=0, line_color="#444", line_width=1)
    fig.update_layout(title=title, barmode="group", height=380, yaxis_title=f"ΔIoU, points ({split_label})",
                      **_LAYOUT)
    return fig


def overlay_curves(series: pd.DataFrame, y: str, y_title: str, title: str, scale: float = 1.0,
                   log_y: bool = False) -> go.Figure:
    """``series``: columns run (label), epoch, and ``y``. One line per run."""
    if series is None or series.empty or series[y].isna().all():
        return _empty(title, "no curves to overlay")
    fig = go.Figure()
    runs = list(dict.fromkeys(series["run"]))
    for run, color in zip(runs, run_colors(len(runs))):
        s = series[series["run"] == run].sort_values("epoch")
        fig.add_trace(go.Scatter(x=s["epoch"] + 1, y=s[y] * scale, mode="lines+markers", name=str(run),
                                 line=dict(color=color), marker=dict(size=4)))
    fig.update_layout(title=title, height=340, yaxis_title=y_title, xaxis_title="epoch", **_LAYOUT)
    _epoch_ticks(fig, int(series["epoch"].max()) + 1)
    if log_y:
        fig.update_yaxes(type="log", exponentformat="e")
    return fig


def bootstrap_forest(rows: pd.DataFrame, split_label: str = "val",
                     title: str = "ΔmIoU against the reference, 95 % paired-bootstrap CI over tiles") -> go.Figure:
    """``rows``: run, delta, lo, hi (fractions), significant (bool). Points with CI whiskers; grey = inside the
    noise (the CI contains 0)."""
    if rows is None or rows.empty:
        return _empty(title, "no paired tiles to bootstrap")
    df = rows.iloc[::-1]
    colors = ["#2CA02C" if (s and d > 0) else "#D62728" if s else "#888888"
              for s, d in zip(df["significant"], df["delta"])]
    fig = go.Figure(go.Scatter(
        x=df["delta"] * PCT, y=df["run"], mode="markers",
        marker=dict(size=11, color=colors),
        error_x=dict(type="data", symmetric=False, array=(df["hi"] - df["delta"]) * PCT,
                     arrayminus=(df["delta"] - df["lo"]) * PCT, color="#555", thickness=1.5, width=6),
        text=[("real difference" if s else "inside the noise") for s in df["significant"]],
        hovertemplate="%{y}: %{x:+.2f} points (%{text})<extra></extra>"))
    fig.add_vline(x=0, line_color="#444", line_dash="dash")
    fig.update_layout(title=title, height=140 + 46 * len(df), xaxis_title=f"ΔmIoU, points ({split_label})",
                      margin=dict(l=200, r=20, t=50, b=40), showlegend=False)
    return fig


def ab_bars(ab: pd.DataFrame, title: str = "A/B: gain against the baseline") -> go.Figure:
    """``ab``: variant, gain (points), threshold (points), decision."""
    if ab is None or ab.empty:
        return _empty(title, "no A/B rows")
    colors = {"keep": "#2CA02C", "drop": "#D62728", "baseline": "#888888"}
    fig = go.Figure(go.Bar(x=ab["variant"], y=ab["gain"],
                           marker_color=[colors.get(str(d), "#1F77B4") for d in ab["decision"]],
                           text=[f"{g:+.2f} → {d}" if pd.notna(g) else str(d)
                                 for g, d in zip(ab["gain"], ab["decision"])],
                           textposition="outside", cliponaxis=False))
    for thr in sorted(set(ab["threshold"].dropna())):
        fig.add_hline(y=float(thr), line_dash="dash", line_color="#1B6E1B", layer="above",
                      annotation_text=f"keep threshold +{thr:g}", annotation_position="top left",
                      annotation=dict(bgcolor="rgba(255,255,255,0.85)", font=dict(color="#1B6E1B")))
    fig.add_hline(y=0, line_color="#444", line_width=1)
    fig.update_layout(title=title, height=340, yaxis_title="gain, points", showlegend=False, **_LAYOUT)
    return fig
