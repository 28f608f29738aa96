"""The A/B keep-or-drop rule, in one place for every decision and every page that reads one (no torch here, so
the app imports it cheaply): a variant is **kept** only where its gain over the baseline, in points of the
criterion, reaches the threshold (``gain >= threshold``), and, with a guard, the other metric does not fall by
more than the guard. Gains are rounded to 1e-6 points before the comparison, so a gain of exactly the threshold
computed from fractions (0.508 - 0.500 = 0.00800000000000001) is not lost to binary rounding. A NaN criterion
(nothing scored) is always a drop. :mod:`mapsage.infer.ab` writes the ``ab`` rows with it."""
from __future__ import annotations

import math
from typing import Optional

GAIN_DECIMALS = 6


def gain_points(variant_value: Optional[float], baseline_value: Optional[float]) -> float:
    """``(variant - baseline) × 100`` rounded to 1e-6 points; NaN when either is missing."""
    if variant_value is None or baseline_value is None:
        return float("nan")
    a, b = float(variant_value), float(baseline_value)
    if not (math.isfinite(a) and math.isfinite(b)):
        return float("nan")
    return round((a - b) * 100.0, GAIN_DECIMALS)


def decide(gain: float, threshold: float, other_gain: Optional[float] = None, guard: Optional[float] = None) -> str:
    """``keep`` where ``gain >= threshold`` (both in points) and, with a ``guard``, the other metric does not
    fall by more than ``guard`` points (``other_gain >= -guard``); else ``drop``."""
    if gain is None or not math.isfinite(gain):
        return "drop"
    if gain < round(float(threshold), GAIN_DECIMALS):
        return "drop"
    if guard is not None and other_gain is not None and math.isfinite(other_gain) \
            and other_gain < -round(float(guard), GAIN_DECIMALS):
        return "drop"
    return "keep"


def rule_text(criterion: str, threshold: float, guard: Optional[float]) -> str:
    other = "mbiou" if criterion == "miou" else "miou"
    text = f"keep if gain >= {threshold:g} points of {criterion}"
    return text + (f" and {other} falls by at most {guard:g} points" if guard is not None else "")
