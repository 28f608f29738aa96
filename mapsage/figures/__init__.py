"""The plotly figures of MapSage: one library for the app's pages (``app/``) and the HTML report
(:mod:`mapsage.report`), so a figure looks the same in both. Pure functions of DataFrames and dicts (no Streamlit,
no store): each takes the rows it draws and returns a :class:`plotly.graph_objects.Figure`.

* :mod:`~mapsage.figures.base` -- layout, series colours of runs (:func:`run_colors`), the empty figure, escaping.
* :mod:`~mapsage.figures.curves` -- over epochs: training scalars, validation metrics, per-class IoU, loss gap,
  one curve per run.
* :mod:`~mapsage.figures.steps` -- over steps: smoothed step losses, per-iteration scalars, LR range test, LR
  schedule.
* :mod:`~mapsage.figures.classes` -- per class: bars in the class colours, confusion matrix (and its change),
  domains, error atlas.
* :mod:`~mapsage.figures.compare` -- runs and variants: ΔIoU per class, paired-bootstrap intervals, A/B gains.
* :mod:`~mapsage.figures.calibration` -- reliability card: reliability diagram, corruption heatmap, extent.
* :mod:`~mapsage.figures.classify` -- image classification curves.
* :mod:`~mapsage.figures.sweeps` -- sweeps: trials, learning curves, importances, parallel coordinates.

Every class is drawn in its dataset's colour (:class:`mapsage.palette.ClassPalette`); metric values arrive as
fractions and are drawn in percent (points); epochs are stored 0-based and drawn 1-based."""
from __future__ import annotations

from .base import (
    BAD,
    GOOD,
    LAYOUT,
    NEUTRAL,
    PCT,
    SERIES_COLOURS,
    Figure,
    as_text,
    empty,
    epoch_ticks,
    run_colors,
    short_count,
    signed_count,
)
from .calibration import corruption_heatmap, extent_figure, reliability_diagram
from .classes import (
    clickable_cells,
    confusion_change,
    confusion_heatmap,
    domain_bars,
    error_atlas,
    per_class_bars,
    per_class_domain_bars,
    weakest,
)
from .classify import classification_curves, classification_losses
from .compare import ab_bars, bootstrap_forest, delta_bars, grouped_class_bars
from .curves import (
    CURVE_GROUPS,
    LOSS_NAMES,
    curve_group,
    epoch_series,
    loss_curves,
    metric_curves,
    miou_curves,
    overlay_curves,
    per_class_curves,
    plateau_note,
    step_losses,
    training_curves,
)
from .steps import (
    AXES,
    ITERATION_PANELS,
    ema_smooth,
    iteration_figure,
    lr_find_figure,
    lr_schedule_figure,
    step_curves,
    x_values,
)
from .sweeps import STATE_COLORS, importance_bars, parallel_coordinates, trial_curves, trial_values

__all__ = [
    "BAD", "GOOD", "LAYOUT", "NEUTRAL", "PCT", "SERIES_COLOURS", "Figure", "as_text", "empty", "epoch_ticks",
    "run_colors", "short_count", "signed_count",
    "corruption_heatmap", "extent_figure", "reliability_diagram",
    "clickable_cells", "confusion_change", "confusion_heatmap", "domain_bars", "error_atlas", "per_class_bars",
    "per_class_domain_bars", "weakest",
    "classification_curves", "classification_losses",
    "ab_bars", "bootstrap_forest", "delta_bars", "grouped_class_bars",
    "CURVE_GROUPS", "LOSS_NAMES", "curve_group", "epoch_series", "loss_curves", "metric_curves", "miou_curves",
    "overlay_curves", "per_class_curves", "plateau_note", "step_losses", "training_curves",
    "AXES", "ITERATION_PANELS", "ema_smooth", "iteration_figure", "lr_find_figure", "lr_schedule_figure",
    "step_curves", "x_values",
    "STATE_COLORS", "importance_bars", "parallel_coordinates", "trial_curves", "trial_values",
]
