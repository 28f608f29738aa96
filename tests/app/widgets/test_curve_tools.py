"""Curve smoothing (debiased EMA, as TensorBoard) and the step / epoch / wall-clock axes of step curves."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def test_ema_smooth_is_debiased_and_skips_gaps():
    from mapsage.figures import ema_smooth

    assert ema_smooth([1.0, 1.0, 1.0], 0.9).tolist() == pytest.approx([1.0, 1.0, 1.0])   # no start-up bias
    v = ema_smooth([0.0, 1.0, np.nan, 1.0], 0.5)
    assert v[0] == 0.0 and v[1] == pytest.approx(0.5 / 0.75) and np.isnan(v[2])
    assert ema_smooth([3.0, 1.0], 0.0).tolist() == [3.0, 1.0]


def test_axes():
    from mapsage.figures import step_curves, x_values

    df = pd.DataFrame({"step": [0, 5, 10, 15], "epoch": [0, 0, 1, 1], "ts": [100.0, 160.0, 220.0, 400.0],
                       "split": "train", "name": "loss", "value": [2.0, 1.5, 1.2, 1.0]})
    assert x_values(df, "wall-clock").tolist() == pytest.approx([0, 1, 2, 5])
    ep = x_values(df, "epoch").tolist()
    assert ep[0] == 1.0 and 1.9 < ep[1] < 2.0 and ep[2] == 2.0
    fig = step_curves(df, smoothing=0.5, axis="wall-clock")
    assert [t.name for t in fig.data] == ["loss (raw)", "loss"] and fig.layout.xaxis.title.text.startswith("minutes")


def test_varying_knobs_keep_only_what_differs():
    from app.widgets.run_filters import varying_knobs

    a = {"train": {"lr": 1e-4, "epochs": 2}, "augment": {"crop_size": [256, 256]}, "meta": {"x": 1},
         "model": {"encoder": "mit_b0"}, "loss": {"schedule": [{"terms": {"ce": 0.7, "dice": 0.3}}]}}
    b = {"train": {"lr": 1e-2, "epochs": 2}, "augment": {"crop_size": [128, 128]}, "meta": {"x": 2},
         "model": {"encoder": "mit_b2"}, "loss": {"schedule": [{"terms": {"ce": 0.7, "dice": 1.5}}]}}
    k = varying_knobs({"ra": a, "rb": b})
    assert list(k.columns) == ["loss.schedule.0.terms.dice", "train.lr", "augment.crop_size", "model.encoder"]
    assert k.loc["rb", "augment.crop_size"] == "128×128"
