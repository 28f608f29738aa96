"""Plotly figures of the report. Every piece of user text that reaches a figure (run names, class names, variant
names) is HTML-escaped first: plotly renders a subset of HTML in its labels, and a run name must show as text.
Figures are returned as :class:`plotly.graph_objects.Figure`; :func:`figure_html` turns one into a ``<div>`` that
needs plotly.js loaded once on the page (the report inlines it a single time)."""
from __future__ import annotations

import html
from typing import Iterable, Optional

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
SERIES_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf"]
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True,
                 "toImageButtonOptions": {"format": "png", "scale": 2},
                 "modeBarButtonsToRemove": ["sendDataToCloud"]}


def esc(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _layout(fig: go.Figure, title: str, height: int = 380, **kw) -> go.Figure:
    fig.update_layout(title={"text": esc(title), "x": 0.01, "xanchor": "left", "font": {"size": 15}},
                      template="plotly_white", height=height, font={"family": FONT, "size": 12},
                      margin={"l": 60, "r": 20, "t": 56, "b": 60},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0}, **kw)
    return fig


def figure_html(fig: go.Figure, div_id: str) -> str:
    """A ``<div>`` with the figure (plotly.js itself is not included)."""
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOTLY_CONFIG,
                       validate=True)


def per_class_figure(per_class: pd.DataFrame, metric: str = "iou") -> Optional[go.Figure]:
    """Grouped bars: x = classes, one bar series per (run, variant, split) evaluation (all domains pooled)."""
    df = per_class[per_class["domain"].fillna("all") == "all"]
    if df.empty:
        return None
    name = {"iou": "IoU", "biou": "Boundary IoU"}[metric]
    fig = go.Figure()
    keys = list(dict.fromkeys(zip(df["run"], df["variant"], df["split"])))
    for i, (run, variant, split) in enumerate(keys):
        g = df[(df["run"] == run) & (df["variant"] == variant) & (df["split"] == split)].sort_values("class_id")
        y = [None if v is None or (isinstance(v, float) and np.isnan(v)) else v * 100 for v in g[metric]]
        fig.add_bar(x=[esc(c) for c in g["class_name"]], y=y, name=esc(f"{run} · {variant} · {split}"),
                    marker_color=SERIES_COLOURS[i % len(SERIES_COLOURS)],
                    hovertemplate="%{x}: %{y:.2f} %<extra>" + esc(f"{run} · {variant} · split {split}")
                    + "</extra>")
    splits = sorted(set(df["split"].dropna()))
    _layout(fig, f"Per-class {name} (%) — split {', '.join(splits)}; latest evaluation per run and variant",
            barmode="group", yaxis={"title": f"{name} % ({', '.join(splits)})", "rangemode": "tozero"})
    return fig


def confusion_figure(matrix: np.ndarray, class_names: list[str], title: str, unit: str = "pixels") -> go.Figure:
    """Row-normalised confusion matrix (each label row sums to 100 %), the counts in the cells' hover; ``unit``
    names what is counted (pixels; ``images`` for a classifier, whose cells also show the count)."""
    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    pct = np.divide(m, rows, out=np.full_like(m, np.nan), where=rows > 0) * 100
    names = [esc(n) for n in class_names]
    if unit == "pixels":
        text = [[f"{v:.1f}" if np.isfinite(v) else "" for v in row] for row in pct]
        short = "px"
    else:
        text = [[f"{int(c):,}" + (f"<br>{v:.0f} %" if np.isfinite(v) else "") for v, c in zip(row, crow)]
                for row, crow in zip(pct, m)]
        short = esc(unit)
    fig = go.Figure(go.Heatmap(z=pct, x=names, y=names, text=text, texttemplate="%{text}",
                               customdata=m.astype(np.int64), colorscale="Blues", zmin=0, zmax=100,
                               colorbar={"title": "% of row"},
                               hovertemplate="label %{y} → predicted %{x}<br>%{z:.2f} % of the label's "
                                             + esc(unit) + "<br>%{customdata:,} " + short + "<extra></extra>"))
    size = max(300, 46 * len(names) + 160)
    _layout(fig, title, height=size, xaxis={"title": "predicted", "side": "bottom", "tickangle": -30},
            yaxis={"title": "label", "autorange": "reversed"})
    fig.update_layout(margin={"l": 110, "r": 20, "t": 56, "b": 90}, showlegend=False)
    return fig


def forest_figure(diffs: pd.DataFrame) -> Optional[go.Figure]:
    """Paired-bootstrap differences: point estimate and interval in points, mIoU left, Boundary IoU right."""
    if diffs.empty:
        return None
    labels = [esc(f"{r.run_b} · {r.variant_b}  vs  {r.run_a} · {r.variant_a}  ({r.split})")
              if r.comparison != "A/B" else esc(f"{r.run_b}: {r.variant_b}  vs  {r.variant_a}  ({r.split})")
              for r in diffs.itertuples()]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=("Δ mIoU (points)", "Δ Boundary IoU (points)"))
    alpha = float(diffs["alpha"].iloc[0]) if "alpha" in diffs and len(diffs) else 0.05
    for col, m in ((1, "miou"), (2, "mbiou")):
        d = diffs[f"delta_{m}"].astype(float) * 100
        lo = diffs[f"ci_low_{m}"].astype(float) * 100
        hi = diffs[f"ci_high_{m}"].astype(float) * 100
        sig = diffs[f"significant_{m}"].fillna(False).astype(bool)
        colours = ["#2ca02c" if s and v > 0 else "#d62728" if s else "#7f7f7f" for s, v in zip(sig, d)]
        fig.add_trace(go.Scatter(
            x=d, y=labels, mode="markers", marker={"color": colours, "size": 10},
            error_x={"type": "data", "symmetric": False, "array": hi - d, "arrayminus": d - lo, "thickness": 2},
            customdata=np.stack([lo, hi, diffs["n_tiles"].astype(float)], axis=1), showlegend=False,
            hovertemplate="%{y}<br>Δ %{x:+.2f} points<br>" + f"{100 * (1 - alpha):g} %"
                          + " CI [%{customdata[0]:+.2f}, %{customdata[1]:+.2f}]<br>%{customdata[2]} tiles"
                            "<extra></extra>"), row=1, col=col)
        fig.add_vline(x=0, line={"color": "#444", "width": 1, "dash": "dot"}, row=1, col=col)
    _layout(fig, f"Differences with their {100 * (1 - alpha):g} % paired-bootstrap intervals (grey: interval "
                 f"contains 0)", height=max(260, 60 * len(diffs) + 140))
    fig.update_layout(margin={"l": 20, "r": 20, "t": 70, "b": 40})
    fig.update_yaxes(automargin=True, autorange="reversed")
    return fig


def ab_figure(ab: pd.DataFrame, title: str) -> Optional[go.Figure]:
    """Gain of each variant over its baseline (points of the row's criterion) with the keep threshold."""
    rows = ab[ab["decision"] != "baseline"]
    if rows.empty:
        return None
    colours = {"keep": "#2ca02c", "drop": "#d62728"}
    fig = go.Figure()
    x = [esc(v) for v in rows["variant"]]
    # the bootstrap interval of the same difference (fractions -> points), drawn around the stored gain
    err_hi = rows["ci_high"].astype(float) * 100 - rows["gain"].astype(float)
    err_lo = rows["gain"].astype(float) - rows["ci_low"].astype(float) * 100
    fig.add_bar(x=x, y=rows["gain"].astype(float), marker_color=[colours.get(d, "#7f7f7f") for d in rows["decision"]],
                error_y={"type": "data", "symmetric": False, "array": err_hi.fillna(0), "arrayminus":
                         err_lo.fillna(0), "visible": bool(rows["ci_low"].notna().any())},
                text=[esc(d) for d in rows["decision"]], textposition="auto",
                width=[0.35] * len(rows),
                hovertemplate="%{x}: gain %{y:+.2f} points<br>decision %{text}<extra></extra>", showlegend=False)
    for thr in sorted(set(rows["threshold"].dropna().astype(float))):
        fig.add_hline(y=thr, line={"color": "#ff7f0e", "dash": "dash"},
                      annotation_text=f"keep threshold +{thr:g}", annotation_position="top left")
    crit = ", ".join(sorted(set(rows["criterion"].dropna())))
    splits = ", ".join(sorted(set(rows["split"].dropna())))
    _layout(fig, title, height=340, yaxis={"title": f"gain, points of {crit} ({splits})", "zeroline": True})
    return fig


def curve_figure(curves: pd.DataFrame, names: Iterable[str], title: str, ytitle: str, scale: float = 1.0,
                 log_y: bool = False) -> Optional[go.Figure]:
    """Lines per (run, variant, split) of the curve rows named ``names`` (one dash style per name)."""
    names = list(names)
    df = curves[curves["name"].isin(names)]
    if df.empty:
        return None
    fig = go.Figure()
    dashes = ["solid", "dash", "dot", "dashdot"]
    keys = list(dict.fromkeys(zip(df["run"], df["variant"].fillna(""), df["split"])))
    for i, key in enumerate(keys):
        run, variant, split = key
        for j, name in enumerate(names):
            g = df[(df["run"] == run) & (df["variant"].fillna("") == variant) & (df["split"] == split)
                   & (df["name"] == name)].sort_values("epoch")
            if g.empty:
                continue
            label = " · ".join(x for x in (str(run), variant, f"split {split}") if x)
            if len(names) > 1:
                label += f" · {name}"
            fig.add_scatter(x=g["epoch"].astype(int) + 1, y=g["value"].astype(float) * scale, mode="lines+markers",
                            name=esc(label), line={"color": SERIES_COLOURS[i % len(SERIES_COLOURS)],
                                                   "dash": dashes[j % len(dashes)]},
                            hovertemplate="epoch %{x}: %{y:.4g}<extra>" + esc(label) + "</extra>")
    _layout(fig, title, height=360, xaxis={"title": "epoch", "dtick": 1 if df["epoch"].max() < 15 else None},
            yaxis={"title": ytitle, "type": "log" if log_y else "linear"})
    return fig
