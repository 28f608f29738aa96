"""Throughput with its spread: images/s from warm, repeated timings (one timing per tile after the warm-up tiles),
reported as the median with its interquartile range and min–max over the N timings, beside the device and the
number of CPU threads. Two throughputs differ only where their interquartile ranges do not overlap: a difference
inside the spread is noise, and is marked so."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np


def spread(seconds: Sequence[float], *, device: Optional[str] = None, threads: Optional[int] = None,
           images_per_timing: int = 1) -> Optional[dict[str, Any]]:
    """``{n, median, q1, q3, min, max, device, threads}`` in images/s from per-call ``seconds`` (each call
    handling ``images_per_timing`` images); None without a positive timing."""
    s = np.asarray([float(x) for x in seconds if x is not None and math.isfinite(float(x)) and float(x) > 0])
    if s.size == 0:
        return None
    ips = images_per_timing / s
    q1, med, q3 = (float(v) for v in np.percentile(ips, [25, 50, 75]))
    if threads is None:
        try:
            import torch

            threads = int(torch.get_num_threads())
        except Exception:  # noqa: BLE001 - no torch: the count is unknown
            threads = None
    return {"n": int(s.size), "median": med, "q1": q1, "q3": q3, "min": float(ips.min()), "max": float(ips.max()),
            "device": device, "threads": threads}


def compare(a: Optional[dict], b: Optional[dict]) -> Optional[dict[str, Any]]:
    """``a`` against ``b`` (both :func:`spread` dicts): ``{ratio, within_noise}`` (ratio of medians, a / b);
    within noise where the interquartile ranges overlap (or either has a single timing). None without both."""
    if not a or not b or not a.get("median") or not b.get("median"):
        return None
    ratio = float(a["median"]) / float(b["median"])
    few = int(a.get("n") or 0) < 2 or int(b.get("n") or 0) < 2
    overlap = float(a["q1"]) <= float(b["q3"]) and float(b["q1"]) <= float(a["q3"])
    return {"ratio": ratio, "within_noise": bool(few or overlap)}


def text(sp: Optional[dict]) -> str:
    """``12.3 images/s (IQR 11.9–12.8, min–max 11.0–13.1, n=17)``, or "–"."""
    if not sp:
        return "–"
    return (f"{sp['median']:.3g} images/s (IQR {sp['q1']:.3g}–{sp['q3']:.3g}, min–max {sp['min']:.3g}–"
            f"{sp['max']:.3g}, n={sp['n']})")
