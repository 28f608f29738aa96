"""Figures of a reliability card: the reliability diagram before and after temperature scaling (a segmentation's
pixels or a classifier's images), mIoU under corruption, and where two window layouts disagree."""
from __future__ import annotations

from typing import Optional

import plotly.graph_objects as go

from .base import BAD, GOOD, LAYOUT, PCT, SERIES_COLOURS, as_text


def _bins(cal: dict, when: str) -> dict:
    """The confidence bins ``before`` / ``after`` scaling: ``diagram_*`` (reliability card) or ``bins_*``
    (a classifier's calibration.json)."""
    return cal.get(f"diagram_{when}") or cal.get(f"bins_{when}") or {}


def reliability_diagram(cal: dict, title: Optional[str] = None, unit: str = "px") -> go.Figure:
    """Accuracy against confidence per bin, before and after temperature scaling, beside the diagonal. ``cal``:
    ``ece_before``, ``ece_after``, ``temperature`` and the bins (``conf``, ``acc``, ``count``); ``unit`` names what
    a bin counts. Default title: "Reliability diagram · T = …"."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#999", dash="dash"),
                             name="perfect calibration"))
    for when, name, color in (("before", "before", BAD), ("after", "after T", GOOD)):
        d = _bins(cal, when)
        pts = [(c, a, n) for c, a, n in zip(d.get("conf", []), d.get("acc", []), d.get("count", [])) if n]
        if pts:
            ece = cal.get(f"ece_{when}")
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                     name=f"{name} (ECE {PCT * (ece or 0):.2f} %)" if ece is not None else name,
                                     line=dict(color=color), text=[f"{p[2]:,} {as_text(unit)}" for p in pts]))
    temp = cal.get("temperature")
    if title is None:
        title = f"Reliability diagram · T = {temp:.3f}" if temp is not None else "Reliability diagram"
    fig.update_layout(title=as_text(title), height=360, xaxis_title="confidence", yaxis_title="accuracy",
                      xaxis_range=[0, 1], yaxis_range=[0, 1.02], **LAYOUT)
    return fig


def corruption_heatmap(card: dict, title: str = "mIoU under corruption (%)") -> go.Figure:
    """mIoU per corruption (rows) and severity (columns), green at the clean mIoU."""
    cor = card.get("corruption") or {}
    rows = cor.get("rows") or []
    fig = go.Figure()
    if not rows:
        return fig
    names = list(dict.fromkeys(r["corruption"] for r in rows))
    labels = [as_text(next(r.get("label", n) for r in rows if r["corruption"] == n)) for n in names]
    sev = sorted({r["severity"] for r in rows})
    z = [[next((PCT * r["miou"] for r in rows if r["corruption"] == n and r["severity"] == s
                and r["miou"] is not None), None) for s in sev] for n in names]
    clean = PCT * ((cor.get("clean") or {}).get("miou") or 0)
    fig.add_trace(go.Heatmap(z=z, x=[f"severity {s}" for s in sev], y=labels, colorscale="RdYlGn",
                             zmin=0, zmax=max(clean, 1), text=[[f"{v:.1f}" if v is not None else "" for v in r]
                                                               for r in z],
                             texttemplate="%{text}", colorbar=dict(title="mIoU %")))
    fig.update_layout(title=as_text(f"{title} · clean {clean:.1f}"), height=60 + 34 * len(names), **LAYOUT)
    fig.update_yaxes(autorange="reversed")
    return fig


def extent_figure(ext: dict, title: str = "Where the two window layouts disagree") -> go.Figure:
    """The share of pixels that change class between two window layouts, per zone (border, seam, interior)."""
    zones = ext.get("zones") or []
    fig = go.Figure()
    fig.add_trace(go.Bar(x=[as_text(z["zone"]) for z in zones], y=[PCT * (z["rate"] or 0) for z in zones],
                         text=[f"{PCT * (z['rate'] or 0):.2f} % · {PCT * (z['pixel_share'] or 0):.0f} % of px"
                               for z in zones], textposition="outside", marker_color=SERIES_COLOURS[0]))
    fig.update_layout(title=as_text(title), height=300, yaxis_title="disagreement rate %", **LAYOUT)
    return fig
