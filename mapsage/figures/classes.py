"""Per-class figures: bars in each class's own colour (:class:`~mapsage.palette.ClassPalette`), the confusion matrix
(pixels of a segmentation, images of a classifier), its change between two runs, the domain breakdown and the error
atlas of a run's tiles. Metric values arrive as fractions and are drawn in percent (points)."""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mapsage.palette import ClassPalette

from .base import LAYOUT, PCT, as_text, empty, short_count, signed_count

PICKED = "#FF00FF"          # the frame of the picked confusion cell


def weakest(class_rows: pd.DataFrame, k: int = 3, col: str = "iou") -> list[str]:
    """The ``k`` classes with the lowest ``col`` (classes marked excluded left out)."""
    df = class_rows.dropna(subset=[col])
    if "excluded" in df.columns:
        df = df[~df["excluded"].fillna(False).astype(bool)]
    return list(df.nsmallest(k, col)["class_name"].astype(str)) if len(df) else []


def per_class_bars(class_rows: pd.DataFrame, palette: ClassPalette, col: str = "iou", label: str = "IoU",
                   split_label: str = "val", weakest_k: int = 3, title: Optional[str] = None) -> go.Figure:
    """One bar per class of one evaluation, in the class's own colour; the ``weakest_k`` classes are outlined in
    red and named."""
    title = title or f"Per-class {label} ({split_label})"
    if class_rows is None or class_rows.empty or pd.to_numeric(class_rows[col], errors="coerce").isna().all():
        return empty(title, f"no per-class {label} yet")
    df = class_rows.assign(**{col: pd.to_numeric(class_rows[col], errors="coerce")}).sort_values("class_id")
    weak = set(weakest(df, weakest_k, col)) if weakest_k else set()
    names = df["class_name"].astype(str).tolist()
    values = (df[col] * PCT).tolist()
    colors = [palette.color_of(n) if n in palette.names else palette.color_of(int(i))
              for n, i in zip(names, df["class_id"])]
    line_colors = ["#D62728" if n in weak else "rgba(0,0,0,0.25)" for n in names]
    line_widths = [3 if n in weak else 1 for n in names]
    text = [("n/a (absent)" if (v is None or (isinstance(v, float) and math.isnan(v))) else f"{v:.1f}")
            + ("  ▼ weakest" if n in weak else "") for n, v in zip(names, values)]
    fig = go.Figure(go.Bar(x=[as_text(n) for n in names], y=values,
                           marker=dict(color=colors, line=dict(color=line_colors, width=line_widths)),
                           text=text, textposition="outside", cliponaxis=False, name=as_text(label),
                           hovertemplate="%{x}: %{y:.2f}<extra></extra>"))
    fig.update_layout(title=as_text(title), height=360, yaxis_title=as_text(f"{label} % ({split_label})"),
                      yaxis_range=[0, 105], showlegend=False, **LAYOUT)
    return fig


def _confusion_cells(m: np.ndarray, normalise: bool, unit: str) -> tuple[np.ndarray, list, str, str]:
    """(z, cell text, colour-bar title, hover) of a confusion heatmap."""
    if not normalise:
        return m, [[short_count(v) for v in row] for row in m], unit, \
            f"label %{{y}} → predicted %{{x}}: %{{z:,}} {unit}<extra></extra>"
    sums = m.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(sums > 0, m / sums, np.nan) * PCT
    if unit == "pixels":
        text = [[("" if np.isnan(v) else f"{v:.1f}") for v in row] for row in z]
    else:                                   # counts of images: the numbers, the colour their share of the row
        text = [[f"{int(c):,}" for c in row] for row in m]
    hover = (f"label %{{y}} → predicted %{{x}}: %{{z:.2f}} % of the label's {unit}"
             f"<br>%{{customdata:,}} {unit}<extra></extra>")
    return z, text, "% of row", hover


def confusion_heatmap(matrix: Iterable, class_names: list[str], normalise: bool = True, split_label: str = "val",
                      palette: Optional[ClassPalette] = None, unit: str = "pixels",
                      title: Optional[str] = None) -> go.Figure:
    """Rows are labels, columns predictions. ``normalise``: each row divided by its label count (recall on the
    diagonal, cells in % of the row); otherwise raw counts. ``unit`` names what is counted: pixels, or images of a
    classifier (whose cells show the counts, the colour their share of the row). The counts are in the hover."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.size == 0:
        return empty(title or "Confusion matrix", "no confusion matrix yet")
    z, text, cbar, hover = _confusion_cells(m, normalise, unit)
    if title is None and unit != "pixels":
        title = f"Confusion (rows: label; colour: share of the row; numbers: {unit})"
    elif title is None:
        title = (f"Confusion matrix, row-normalised (% of label pixels, {split_label})" if normalise
                 else f"Confusion matrix, pixel counts ({split_label})")
    names = [as_text(n) for n in class_names]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, text=text, texttemplate="%{text}", customdata=m.astype(np.int64),
                               colorscale="Blues", colorbar=dict(title=cbar), hovertemplate=hover,
                               **({"zmin": 0, "zmax": PCT} if normalise and unit != "pixels" else {})))
    fig.update_yaxes(autorange="reversed", title_text="label")
    fig.update_xaxes(title_text="prediction", side="bottom")
    if palette is not None:
        colours = [palette.color_of(n) for n in class_names]
        fig.update_xaxes(tickmode="array", tickvals=names,
                         ticktext=[f'<span style="color:{c}">■</span> {n}' for n, c in zip(names, colours)])
        fig.update_yaxes(tickmode="array", tickvals=names,
                         ticktext=[f'{n} <span style="color:{c}">■</span>' for n, c in zip(names, colours)])
    fig.update_layout(title=as_text(title), height=120 + 48 * len(class_names), margin=dict(l=110, r=20, t=50, b=60))
    return fig


def clickable_cells(fig: go.Figure, names: Sequence[str], matrix: Iterable, hovertemplate: str,
                    picked: Optional[tuple[int, int]] = None) -> go.Figure:
    """One transparent square marker per cell of a class-by-class heatmap (customdata ``[label id, predicted id,
    matrix value]``) that a click selects (Streamlit reports clicks on markers, not on heatmap cells); the
    ``picked`` cell framed."""
    m = np.asarray(matrix, np.int64)
    if m.size == 0:
        return fig
    names = [as_text(n) for n in names]
    C = len(names)
    xs, ys, cd = [], [], []
    for t in range(C):
        for p in range(C):
            xs.append(names[p])
            ys.append(names[t])
            cd.append([t, p, int(m[t, p])])
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers", customdata=cd, showlegend=False, name="cells",
        marker=dict(symbol="square", size=34, color="rgba(0,0,0,0.01)", line=dict(width=0)),
        hovertemplate=hovertemplate))
    if picked is not None:
        t, p = picked
        fig.add_shape(type="rect", x0=p - 0.5, x1=p + 0.5, y0=t - 0.5, y1=t + 0.5, xref="x", yref="y",
                      line=dict(color=PICKED, width=3))
    fig.update_layout(clickmode="event+select", dragmode=False)
    return fig


def confusion_change(m: np.ndarray, names: Sequence[str], split: str,
                     picked: Optional[tuple[int, int]] = None) -> go.Figure:
    """The change between two runs' confusion matrices (B − A, pixels) as a diverging heatmap (diagonal blank),
    clickable (:func:`clickable_cells`)."""
    names = [as_text(n) for n in names]
    C = len(names)
    z = m.astype(np.float64)
    np.fill_diagonal(z, np.nan)
    lim = float(np.nanmax(np.abs(z))) if C > 1 and np.isfinite(z).any() else 1.0
    lim = lim or 1.0
    text = [["" if t == p else signed_count(m[t, p]) for p in range(C)] for t in range(C)]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, text=text, texttemplate="%{text}", zmin=-lim, zmax=lim,
                               colorscale="RdBu", reversescale=True, colorbar=dict(title="Δ pixels (B − A)"),
                               hoverinfo="skip"))
    fig.update_yaxes(autorange="reversed", title_text="label")
    fig.update_xaxes(title_text="prediction", side="bottom")
    fig.update_layout(title=as_text(f"Confusion change, B − A in pixels on the shared tiles ({split}); red: B confuses "
                                  "more"), height=120 + 48 * C, margin=dict(l=110, r=20, t=50, b=60))
    return clickable_cells(fig, names, m, "label %{y} → predicted %{x}: %{customdata[2]:+,} px in B — click for the "
                                          "tiles<extra></extra>", picked)


def domain_bars(evals: pd.DataFrame, split_label: str = "val", title: str = "Urban / Rural breakdown"
                ) -> go.Figure:
    """mIoU and Boundary IoU per domain (rows of one evaluation with domain != 'all', plus 'all')."""
    if evals is None or evals.empty:
        return empty(title, "no domain breakdown")
    df = evals.copy()
    df["domain"] = df["domain"].fillna("all")
    fig = go.Figure()
    for col, metric, color in (("miou", "mIoU", "#2E6FD8"), ("mbiou", "Boundary IoU", "#9467BD")):
        if col in df.columns:
            fig.add_trace(go.Bar(x=[as_text(d) for d in df["domain"]], y=df[col] * PCT,
                                 name=as_text(f"{metric} ({split_label})"), marker_color=color,
                                 text=[f"{v * PCT:.1f}" if pd.notna(v) else "" for v in df[col]],
                                 textposition="outside", cliponaxis=False))
    fig.update_layout(title=as_text(title), barmode="group", height=320, yaxis_title=as_text(f"% ({split_label})"),
                      **LAYOUT)
    return fig


def per_class_domain_bars(class_rows: pd.DataFrame, palette: ClassPalette, split_label: str = "val",
                          title: str = "Per-class IoU by domain") -> go.Figure:
    """IoU per class and domain: the class's colour, one fill pattern per domain."""
    if class_rows is None or class_rows.empty:
        return empty(title, "no per-domain per-class rows")
    fig = go.Figure()
    patterns = ["", "/", ".", "x", "-"]
    for i, (domain, s) in enumerate(class_rows.groupby("domain", sort=True)):
        s = s.sort_values("class_id")
        fig.add_trace(go.Bar(x=[as_text(n) for n in s["class_name"]], y=s["iou"] * PCT, name=as_text(domain),
                             marker=dict(color=[palette.color_of(n) for n in s["class_name"]],
                                         pattern_shape=patterns[i % len(patterns)],
                                         line=dict(color="rgba(0,0,0,0.4)", width=1))))
    fig.update_layout(title=as_text(title), barmode="group", height=340, yaxis_title=as_text(f"IoU % ({split_label})"),
                      **LAYOUT)
    return fig


def error_atlas(tiles: pd.DataFrame, split_label: str, variant: str) -> go.Figure:
    """Heatmap of per-tile error rates: rows scenes, columns the tiles of each scene (sorted by id). ``tiles``:
    tile, scene, part, error_rate (fraction)."""
    fig = go.Figure()
    if tiles is None or tiles.empty:
        fig.update_layout(title="Error atlas: no per-tile confusion in the store")
        return fig
    scenes = sorted(tiles["scene"].unique())
    parts = sorted(tiles["part"].unique())
    z = np.full((len(scenes), len(parts)), np.nan)
    text = [["" for _ in parts] for _ in scenes]
    ids = [["" for _ in parts] for _ in scenes]
    for r in tiles.itertuples(index=False):
        i, j = scenes.index(r.scene), parts.index(r.part)
        z[i, j] = r.error_rate * PCT if pd.notna(r.error_rate) else np.nan
        text[i][j] = f"{z[i, j]:.1f}" if np.isfinite(z[i, j]) else ""
        ids[i][j] = as_text(r.tile)
    fig.add_trace(go.Heatmap(z=z, x=[as_text(p) for p in parts], y=[as_text(s) or "(tiles)" for s in scenes], text=text,
                             texttemplate="%{text}", customdata=ids, colorscale="YlOrRd", zmin=0,
                             colorbar=dict(title="% wrong"),
                             hovertemplate="%{customdata}: %{z:.2f} % of valid pixels wrong<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="scene")
    fig.update_xaxes(title_text="tile")
    fig.update_layout(title=as_text(f"Error atlas: share of misclassified pixels per tile ({split_label}, {variant})"),
                      height=140 + 40 * len(scenes), margin=dict(l=110, r=20, t=50, b=60))
    return fig
