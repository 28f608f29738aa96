"""The LR range test stage on the demo data: an exponential LR ramp, loss against LR, a suggested LR inside the
ramp; and the suggestion rule on a textbook curve."""
from __future__ import annotations

import numpy as np
import pytest

from tests.support.app import DEMO, QUICK, run_in_process


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    from mapsage.train.lr_find import suggest

    lrs = np.logspace(-6, 0, 61)
    x = np.log10(lrs)
    loss = 2.0 - 1.5 / (1 + np.exp(-(x + 3) * 3)) + np.where(x > -1, (x + 1) * 6, 0)   # falls fastest at 1e-3
    s = suggest(lrs, loss)
    assert s["steep"] == pytest.approx(1e-3, rel=0.3)
    assert 1e-2 <= s["min_loss"] <= 1e-1 and s["min_loss_div10"] == pytest.approx(s["min_loss"] / 10)


@pytest.mark.slow
def test_lr_find_stage_on_the_demo_data(tmp_path, monkeypatch):
    import torch

    import store

    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(tmp_path / "ws"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rid = run_in_process(DEMO, QUICK + ["stage.kind=lr_find", "lr_find.steps=24", "lr_find.min_lr=1e-5",
                                            "lr_find.max_lr=10", "train.ema.enabled=false"])
    finally:
        torch.set_num_threads(threads)
    sc = store.scalars(rid, split="lr_find")
    lr = sc[sc["name"] == "lr"].sort_values("step")["value"].to_numpy()
    assert len(lr) >= 6 and lr[0] == pytest.approx(1e-5)
    assert np.allclose(np.diff(np.log(lr)), np.log(10 / 1e-5) / 23)          # exponential ramp
    info = store.run(rid)
    import json

    facts = json.loads(info["info_json"])
    assert 1e-5 <= facts["lr_suggested"] <= 10
    assert any(m.startswith("LR range test: suggested train.lr") for m in store.logs(rid)["message"])
    # Run detail: the curve, the suggestion, one click to train with it (the launch is captured here, after
    # checking that the run's config with the override passes the launch checks)
    from streamlit.testing.v1 import AppTest

    from runners import api, jobs

    launched = []

    def fake_launch(config_path, overrides=None, gpus=None):
        jobs.check_launch(config_path, overrides)
        launched.append((config_path, overrides))
        return rid

    monkeypatch.setattr(api, "launch", fake_launch)
    from tests.support.app import PROJECT_ROOT

    at = AppTest.from_file(str(PROJECT_ROOT / "app" / "main.py"), default_timeout=120)
    at.run()
    at.query_params["run"] = rid
    at.switch_page("views/run_detail.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    button = next(b for b in at.button if b.label.startswith("Train with train.lr"))
    button.click().run()
    assert launched and launched[0][1][0] == "stage.kind=train"
    assert float(launched[0][1][1].split("=")[1]) == pytest.approx(facts["lr_suggested"], rel=1e-2)
