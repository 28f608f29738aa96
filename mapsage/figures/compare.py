"""Figures that compare runs or variants: per-class differences against a reference, paired-bootstrap intervals,
A/B gains against a baseline and grouped per-class bars of several runs. Runs take their series colour
(:func:`~mapsage.figures.base.run_colors`); a real gain is green, a real loss red, a difference inside the noise
grey."""
from __future__ import annotations

from typing import Mapping, Optional

import pandas as pd
import plotly.graph_objects as go

from mapsage.palette import ClassPalette

from .base import BAD, GOOD, LAYOUT, NEUTRAL, PCT, SERIES_COLOURS, as_text, empty, run_colors


def delta_bars(deltas: pd.DataFrame, palette: ClassPalette, split_label: str = "val",
               title: str = "Per-class ΔIoU against the reference run") -> go.Figure:
    """``deltas``: columns run (label), class_name, delta (fraction). Bars in the class colour, grouped by run
    (outline colour = the run)."""
    if deltas is None or deltas.empty:
        return empty(title, "nothing to compare")
    fig = go.Figure()
    runs = list(dict.fromkeys(deltas["run"]))
    for run, color in zip(runs, run_colors(len(runs) + 1)[1:]):
        s = deltas[deltas["run"] == run]
        fig.add_trace(go.Bar(x=[as_text(n) for n in s["class_name"]], y=s["delta"] * PCT, name=as_text(run),
                             marker=dict(color=[palette.color_of(n) for n in s["class_name"]],
                                         line=dict(color=color, width=3)),
                             text=[f"{v * PCT:+.1f}" if pd.notna(v) else "" for v in s["delta"]],
                             textposition="outside", cliponaxis=False,
                             hovertemplate="%{x}: %{y:+.2f} points<extra>%{fullData.name}</extra>"))
    fig.add_hline(y=0, line_color="#444", line_width=1)
    fig.update_layout(title=as_text(title), barmode="group", height=380,
                      yaxis_title=as_text(f"ΔIoU, points ({split_label})"), **LAYOUT)
    return fig


def bootstrap_forest(rows: pd.DataFrame, split_label: str = "val", title: Optional[str] = None,
                     metric: str = "mIoU", level: float = 95.0) -> go.Figure:
    """``rows``: run (label), delta, lo, hi (fractions), significant (bool), optionally n_tiles. Points with their
    ``level`` % interval as whiskers; green / red = a real gain / loss, grey = inside the noise (the interval
    contains 0)."""
    title = title or f"Δ{metric} against the reference, {level:g} % paired-bootstrap CI over tiles"
    if rows is None or rows.empty:
        return empty(title, "no paired tiles to bootstrap")
    df = rows.iloc[::-1]
    sig = df["significant"].fillna(False).astype(bool)
    colors = [GOOD if (s and d > 0) else BAD if s else NEUTRAL for s, d in zip(sig, df["delta"])]
    tiles = df["n_tiles"] if "n_tiles" in df.columns else [None] * len(df)
    text = [("real difference" if s else "inside the noise") + (f", {int(n)} tiles" if pd.notna(n) else "")
            for s, n in zip(sig, tiles)]
    fig = go.Figure(go.Scatter(
        x=df["delta"] * PCT, y=[as_text(r) for r in df["run"]], mode="markers",
        marker=dict(size=11, color=colors),
        error_x=dict(type="data", symmetric=False, array=(df["hi"] - df["delta"]) * PCT,
                     arrayminus=(df["delta"] - df["lo"]) * PCT, color="#555", thickness=1.5, width=6),
        customdata=list(zip(df["lo"] * PCT, df["hi"] * PCT)), text=text,
        hovertemplate="%{y}: %{x:+.2f} points [%{customdata[0]:+.2f}, %{customdata[1]:+.2f}] (%{text})"
                      "<extra></extra>"))
    fig.add_vline(x=0, line_color="#444", line_dash="dash")
    fig.update_layout(title=as_text(title), height=140 + 46 * len(df),
                      xaxis_title=as_text(f"Δ{metric}, points ({split_label})"),
                      margin=dict(l=200, r=20, t=50, b=40), showlegend=False)
    fig.update_yaxes(automargin=True)
    return fig


def _ab_interval(ab: pd.DataFrame) -> Optional[dict]:
    """The bootstrap interval of each gain (``ci_low`` / ``ci_high``: fractions) as error bars, when the rows have
    one."""
    if not {"ci_low", "ci_high"} <= set(ab.columns) or not ab["ci_low"].notna().any():
        return None
    gain = ab["gain"].astype(float)
    return dict(type="data", symmetric=False, array=(ab["ci_high"].astype(float) * PCT - gain).fillna(0),
                arrayminus=(gain - ab["ci_low"].astype(float) * PCT).fillna(0), color="#555")


def ab_bars(ab: pd.DataFrame, title: str = "A/B: gain against the baseline", y_title: str = "gain, points"
            ) -> go.Figure:
    """``ab``: variant, gain (points), threshold (points), decision; optionally ci_low / ci_high (the gain's
    interval, fractions) drawn as whiskers."""
    if ab is None or ab.empty:
        return empty(title, "no A/B rows")
    colors = {"keep": GOOD, "drop": BAD, "baseline": NEUTRAL}
    fig = go.Figure(go.Bar(x=[as_text(v) for v in ab["variant"]], y=ab["gain"],
                           marker_color=[colors.get(str(d), SERIES_COLOURS[0]) for d in ab["decision"]],
                           error_y=_ab_interval(ab),
                           text=[as_text(f"{g:+.2f} → {d}" if pd.notna(g) else str(d))
                                 for g, d in zip(ab["gain"], ab["decision"])],
                           textposition="outside", cliponaxis=False))
    for thr in sorted(set(ab["threshold"].dropna())):
        fig.add_hline(y=float(thr), line_dash="dash", line_color="#1B6E1B", layer="above",
                      annotation_text=f"keep threshold +{thr:g}", annotation_position="top left",
                      annotation=dict(bgcolor="rgba(255,255,255,0.85)", font=dict(color="#1B6E1B")))
    fig.add_hline(y=0, line_color="#444", line_width=1)
    fig.update_layout(title=as_text(title), height=340, yaxis_title=as_text(y_title), showlegend=False, **LAYOUT)
    return fig


def grouped_class_bars(frames: Mapping[str, pd.DataFrame], col: str, title: str, y_title: str = "%"
                       ) -> go.Figure:
    """Per-class bars of several runs side by side: ``frames`` maps a run label to its rows (class_name and
    ``col``, a fraction); one series colour per run."""
    fig = go.Figure()
    frames = {k: v for k, v in frames.items() if v is not None and not v.empty}
    for (run, pc), color in zip(frames.items(), run_colors(len(frames))):
        fig.add_trace(go.Bar(x=[as_text(n) for n in pc["class_name"]], y=pc[col] * PCT, name=as_text(run),
                             marker_color=color))
    fig.update_layout(barmode="group", title=as_text(title), yaxis_title=as_text(y_title), height=360,
                      margin={"t": 40, "b": 30})
    return fig
