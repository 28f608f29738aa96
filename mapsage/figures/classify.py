"""Curves of an image-classification run: validation top-1 and macro F1 per epoch, and its losses per epoch. Its
confusion matrix (in images) and reliability diagram are the shared ones
(:func:`~mapsage.figures.classes.confusion_heatmap` with ``unit="images"``,
:func:`~mapsage.figures.calibration.reliability_diagram`)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from mapsage.metric_names import metric_label

from .base import PCT, as_text


def classification_curves(evals: pd.DataFrame) -> go.Figure:
    """``evals``: variant, epoch, top1, macro_f1 (fractions). Top-1 solid, macro F1 dotted, per weights variant."""
    fig = go.Figure()
    for variant, part in evals.groupby("variant"):
        part = part.sort_values("epoch")
        for key, dash in (("top1", "solid"), ("macro_f1", "dot")):
            fig.add_trace(go.Scatter(x=part["epoch"] + 1, y=part[key] * PCT, mode="lines+markers",
                                     line={"dash": dash}, name=as_text(f"{metric_label(key)} · {variant}")))
    fig.update_layout(title="Validation top-1 and macro F1 by epoch", xaxis_title="epoch", yaxis_title="%",
                      height=360, margin={"t": 40, "b": 30})
    return fig


def classification_losses(scalars: pd.DataFrame) -> go.Figure:
    """``scalars``: name, epoch, value of the per-epoch training loss and validation losses, one line per name."""
    fig = go.Figure()
    for name, part in scalars.groupby("name"):
        part = part.sort_values("epoch")
        fig.add_trace(go.Scatter(x=part["epoch"] + 1, y=part["value"], mode="lines+markers", name=as_text(name)))
    fig.update_layout(title="Losses by epoch (val loss: NLL of the validation images)", height=320,
                      xaxis_title="epoch", margin={"t": 40, "b": 30})
    return fig
