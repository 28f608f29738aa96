"""The Plan page asks before a training launch on a dataset without a passing health run (a dialog; Launch
anyway launches), and shows the LR curve of the training templates before launch."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")
KEY = "configs_stage1_baselines_demo_segformer_mit_b0_dubai_yaml"


def test_plan_launch_asks_when_health_checks_never_ran(tmp_workspace, monkeypatch):
    from runners import api
    calls = []

    def fake_launch(path, overrides=None, gpus=None):
        calls.append(Path(path).name)
        return "run-1"

    monkeypatch.setattr(api, "launch", fake_launch)
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.run()
    at.switch_page("views/plan.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert len(at.get("plotly_chart")) >= 1                       # the LR curve of the open training templates
    go = [b for b in at.button if b.label.endswith("Launch") and b.proto.form_id == f"form_{KEY}"][0]
    go.click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert calls == []                                            # not launched: asked first
    warn = " ".join(str(w.value) for w in at.warning)
    assert "no health run on dataset dubai" in warn
    anyway = [b for b in at.button if b.label == "Launch anyway"]
    assert anyway
    anyway[0].click().run()
    assert calls == ["demo_segformer_mit-b0_dubai.yaml"]
