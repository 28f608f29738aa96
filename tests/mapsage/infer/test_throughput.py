"""Throughput with its spread (``mapsage.infer.throughput``) and the decision table's reading of it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mapsage.infer.throughput import compare, spread


def test_spread_is_median_iqr_and_range_of_the_repeats():
    seconds = [0.10, 0.20, 0.25, 0.50, 1.00]
    sp = spread(seconds, device="CPU test (2 threads)", threads=2)
    ips = 1 / np.array(seconds)
    assert sp["n"] == 5 and sp["median"] == pytest.approx(np.median(ips))
    assert (sp["q1"], sp["q3"]) == pytest.approx(tuple(np.percentile(ips, [25, 75])))
    assert (sp["min"], sp["max"]) == pytest.approx((1.0, 10.0))
    assert sp["threads"] == 2 and sp["device"] == "CPU test (2 threads)"
    assert spread([]) is None and spread([0.0, float("nan")]) is None
    assert spread([0.5], images_per_timing=4)["median"] == pytest.approx(8.0)


def test_differences_inside_the_spread_are_noise():
    base = spread([0.10, 0.11, 0.12, 0.10, 0.13])
    close = spread([0.105, 0.115, 0.12, 0.11])       # overlapping interquartile ranges
    slow = spread([0.30, 0.31, 0.33, 0.29, 0.32])      # six passes instead of two: clearly slower
    assert compare(close, base)["within_noise"] is True
    far = compare(slow, base)
    assert far["within_noise"] is False and far["ratio"] == pytest.approx(slow["median"] / base["median"])
    assert compare(spread([0.3]), base)["within_noise"] is True     # one timing cannot tell
    assert compare(None, base) is None


def test_decision_table_cells_mark_noise_and_name_the_device():
    from app.widgets.decisions import throughput_cells

    base = spread([0.10, 0.11, 0.12, 0.10, 0.13], device="CPU test", threads=2)
    slow = spread([0.30, 0.31, 0.33, 0.29, 0.32], device="CPU test", threads=2)
    close = spread([0.105, 0.115, 0.12, 0.11], device="CPU test", threads=2)
    cell = throughput_cells(json.dumps({"throughput": slow, "speed_vs_baseline": compare(slow, base)}))
    assert cell["vs"].endswith("× slower") and cell["device"] == "CPU test (2 threads)"
    assert f"(n={slow['n']})" in cell["spread"]
    assert throughput_cells(json.dumps({"throughput": close, "speed_vs_baseline": compare(close, base)}))["vs"] \
        == "within noise"
    assert throughput_cells(None) == {"spread": "–", "vs": "–", "device": None}
