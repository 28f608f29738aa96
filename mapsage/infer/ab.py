"""A/B decisions of stage 3 (TTA, post-processing, ensembles): the keep-or-drop rule and the ``ab`` event row.

The rule: a variant is **kept** only where its gain over the baseline, in points of the criterion (mIoU × 100 by
default), reaches the threshold (``gain >= threshold``; the plan's TTA threshold is +0.8 points); otherwise it is
**dropped**. Gains are rounded to 1e-6 points before the comparison, so a gain of exactly the threshold computed
from fractions (0.508 - 0.500 = 0.00800000000000001) is not lost to binary rounding. A NaN criterion (nothing
scored) is always a drop. The baseline's own row has the decision ``baseline``."""
from __future__ import annotations

from typing import Any, Optional

from ..abrule import GAIN_DECIMALS, decide, gain_points, rule_text  # noqa: F401  (the one rule)
from ..metrics import paired_bootstrap


def _criterion_value(result, criterion: str) -> float:
    return float(getattr(result, criterion))


def class_table(result) -> dict[str, dict[str, Optional[float]]]:
    """Per-class IoU and Boundary IoU by class name (fractions, None for NaN)."""
    return {c["name"]: {"iou": c["iou"], "biou": c["biou"], "acc": c["acc"]} for c in result.per_class}


def bootstrap(outcome_a, outcome_b, n: int = 1000, seed: int = 0) -> Optional[dict]:
    """Paired bootstrap of the variant against the baseline over tiles (mapsage.metrics), or None."""
    rows_a = outcome_a.metrics.tile_rows()
    rows_b = outcome_b.metrics.tile_rows()
    if not rows_a or len(rows_a) != len(rows_b) or len(rows_a) < 2:
        return None
    return paired_bootstrap(rows_b, rows_a, n=n, seed=seed)


def ab_row(*, ab_kind: str, variant: str, baseline: str, outcome, baseline_outcome, threshold: float,
           criterion: str = "miou", details: Optional[dict] = None, is_baseline: bool = False,
           bootstrap_n: int = 1000, guard: Optional[float] = None) -> dict[str, Any]:
    """The payload of one ``ab`` event (see :mod:`mapsage.events`), with the figures behind the decision.
    ``guard``: points the other metric may fall before a variant that passed ``threshold`` is refused."""
    res, base = outcome.result, baseline_outcome.result
    gain = 0.0 if is_baseline else gain_points(_criterion_value(res, criterion), _criterion_value(base, criterion))
    other = "mbiou" if criterion == "miou" else "miou"
    other_gain = gain_points(_criterion_value(res, other), _criterion_value(base, other))
    decision = "baseline" if is_baseline else decide(gain, threshold, other_gain, guard)
    info: dict[str, Any] = {
        "rule": rule_text(criterion, threshold, guard),
        "guard": guard,
        f"gain_{other}_guarded": other_gain,
        "refused_by_guard": (not is_baseline and decide(gain, threshold) == "keep" and decision == "drop"),
        "classes": class_table(res),
        "baseline_classes": class_table(base),
        "gain_mbiou": gain_points(res.mbiou, base.mbiou),
        "gain_macc": gain_points(res.macc, base.macc),
        "n_images": outcome.n_images,
        "mpix_per_s": outcome.mpix_per_s,
        "baseline_images_per_s": baseline_outcome.images_per_s,
        "device": outcome.device,
        "infer_s": outcome.infer_s,
    }
    # warm, repeated timings with their spread (median, IQR, min–max, device, threads), both sides
    tp, btp = getattr(outcome, "throughput", None), getattr(baseline_outcome, "throughput", None)
    info["throughput"] = tp() if callable(tp) else None
    info["baseline_throughput"] = btp() if callable(btp) else None
    if not is_baseline and info["throughput"] and info["baseline_throughput"]:
        from .throughput import compare

        info["speed_vs_baseline"] = compare(info["throughput"], info["baseline_throughput"])
    if not is_baseline:
        boot = bootstrap(outcome, baseline_outcome, n=bootstrap_n)
        if boot is not None:
            info["bootstrap"] = boot
    info.update(details or {})
    return {
        "ab_kind": ab_kind, "variant": variant, "baseline": baseline, "split": outcome.split,
        "summary": res.summary, "baseline_summary": base.summary, "gain": gain, "criterion": criterion,
        "threshold": float(threshold), "decision": decision, "images_per_s": outcome.images_per_s,
        "wall_s": outcome.wall_s, "details": info,
    }
