"""The SLURM executor's parts that need no cluster: the request from template and settings, SLURM time formats,
and the launch form's executor fields (Streamlit AppTest)."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml"


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(tmp_path / "ws"))
    for var in ("MAPSAGE_EXECUTOR", "MAPSAGE_SLURM_PARTITION", "MAPSAGE_SLURM_MEM_GB"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "ws"


def test_request_comes_from_the_template_then_the_settings(ws, monkeypatch):
    from mapsage.config import load_config
    from mapsage.errors import UserError
    from runners.executors import executor_name
    from runners.executors.slurm import request_for

    cfg = load_config(DEMO, ["runtime.slurm.partition=a100", "runtime.gpus=4", "runtime.slurm.tasks_per_node=2"])
    monkeypatch.setenv("MAPSAGE_SLURM_PARTITION", "cpu")
    monkeypatch.setenv("MAPSAGE_SLURM_MEM_GB", "64")
    req = request_for(cfg)
    assert (req.partition, req.mem_gb, req.gpus_per_node, req.ntasks, req.procs_per_task) == ("a100", 64.0, 4, 2, 2)
    assert request_for(load_config(DEMO, ["runtime.device=cpu"])).partition == "cpu"
    assert request_for(load_config(DEMO, ["runtime.device=cpu"])).gpus_per_node == 0
    with pytest.raises(UserError, match="gpus_per_node=3 does not split over tasks_per_node=2"):
        request_for(load_config(DEMO, ["runtime.slurm.gpus_per_node=3", "runtime.slurm.tasks_per_node=2"]))
    assert executor_name(load_config(DEMO)) == "local"
    monkeypatch.setenv("MAPSAGE_EXECUTOR", "slurm")
    assert executor_name(load_config(DEMO)) == "slurm"
    assert executor_name(load_config(DEMO, ["runtime.executor=local"])) == "local"
    monkeypatch.setenv("MAPSAGE_EXECUTOR", "kubernetes")
    with pytest.raises(UserError, match="executor must be 'local' or 'slurm', got 'kubernetes'"):
        executor_name(load_config(DEMO))


def test_slurm_time_formats():
    from runners.executors.slurm import parse_minutes

    assert parse_minutes("UNLIMITED") is None
    assert parse_minutes("30") == 30 and parse_minutes("01:30:00") == 90 and parse_minutes("2-00:00:00") == 2880
    assert parse_minutes("45:30") == pytest.approx(45.5) and parse_minutes("1-12") == 36 * 60


def _form_app():
    import streamlit as st

    from app.widgets import templates
    from app.widgets.knob_form import render

    t = next(t for ts in templates.discover().values() for t in ts if t.rel.endswith("demo_segformer_mit-b0_dubai.yaml"))
    result = render(t, [])
    st.session_state["result"] = (result.action, result.overrides, result.error)


def test_launch_form_sends_the_executor_and_slurm_request(ws):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_form_app, default_timeout=60).run()
    assert not at.exception
    assert at.session_state["result"][1] == []                   # untouched: the template as is, runs locally
    at.selectbox(key=next(s.key for s in at.selectbox if s.key.endswith(":executor"))).set_value("slurm")
    at.text_input(key=next(t.key for t in at.text_input if t.key.endswith(":slurm_partition"))).input("gpu")
    at.text_input(key=next(t.key for t in at.text_input if t.key.endswith(":slurm_time_min"))).input("720")
    next(b for b in at.button if "Check" in b.label).click()
    at.run()
    action, overrides, error = at.session_state["result"]
    assert error is None and action == "check"
    assert overrides == ["runtime.executor=slurm", "runtime.slurm.partition=gpu", "runtime.slurm.time_min=720"]
