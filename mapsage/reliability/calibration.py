"""Pixel-level calibration for the reliability card: the definitions and the accumulator live with the metrics
(:mod:`mapsage.metrics.calibration`, shared with image classification); the temperature a run's reliability card
fitted is read from its run folder (:func:`mapsage.lineage.stored_temperature`)."""
from __future__ import annotations

from ..lineage import stored_temperature
from ..metrics.calibration import (
                                   T_MAX,
                                   T_MIN,
                                   CalibrationAccumulator,
                                   _softmax,
                                   bin_edges,
                                   classwise_ece,
                                   ece,
                                   ece_from_bins,
                                   fit_temperature,
                                   nll,
                                   reliability_bins,
)

__all__ = ["stored_temperature", "bin_edges", "reliability_bins", "ece_from_bins", "ece", "classwise_ece", "nll",
           "fit_temperature", "CalibrationAccumulator", "T_MIN", "T_MAX", "_softmax"]
