"""What can be checked at launch fails `mapsage run` and the app's Launch at once, in one line, before any run
folder or job exists: dataset root, splits, checkpoint and weights files, the GPU request."""
from __future__ import annotations

from pathlib import Path

import pytest

from runners import cli

ROOT = Path(__file__).resolve().parents[2]
DUBAI = "configs/stage1_baselines/demo_segformer_mit-b0_dubai.yaml"
EVALUATE = next(str(p.relative_to(ROOT)) for p in sorted((ROOT / "configs").glob("stage3*/**/*.yaml"))
                if "kind: evaluate" in p.read_text())


@pytest.mark.parametrize("template, override, needles", [
    (DUBAI, "dataset.root=/nope/dataset", ["dataset.root", "/nope/dataset"]),
    (DUBAI, "dataset.image_glob=**/*.tif", ["dataset.image_glob", "'**/*.tif'"]),
    (DUBAI, "dataset.val_split=test", ["dataset.val_split", "'test'"]),
    (DUBAI, "model.pretrained=/nope/mit_b0.pth", ["model.pretrained", "/nope/mit_b0.pth", "not found"]),
    (EVALUATE, "stage.checkpoint=data/nope.pth", ["stage.checkpoint", "checkpoint file not found",
                                                  str(ROOT / "data" / "nope.pth")]),
    (EVALUATE, "stage.checkpoint=no_such_run", ["stage.checkpoint", "'no_such_run'"]),
])
def test_mapsage_run_fails_at_once_in_one_line(tmp_workspace, capsys, template, override, needles):
    code = cli.main(["run", template, "--set", override, "--gpus", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    assert "run ''" not in err
    assert not (tmp_workspace / "runs").exists() or not any((tmp_workspace / "runs").iterdir())


def test_gpu_request_beyond_the_pool(tmp_workspace, capsys, monkeypatch):
    monkeypatch.setenv("MAPSAGE_GPUS", "0,1")
    code = cli.main(["run", DUBAI, "--gpus", "3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "runtime.gpus=3 but the scheduler has 2 GPU(s)" in err


def test_app_launch_shows_the_one_line_reason(tmp_workspace):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=120)
    at.run()
    at.switch_page("views/plan.py")
    at.run()
    key = "configs_stage1_baselines_demo_segformer_mit_b0_dubai_yaml"
    at.text_area(key=f"{key}:extra").input("model.pretrained=/nope/mit_b0.pth")
    [b for b in at.button if b.label.endswith("Launch") and b.proto.form_id == f"form_{key}"][0].click().run()
    assert not at.exception, [e.message for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("Cannot launch" in e and "model.pretrained" in e and "/nope/mit_b0.pth" in e for e in errors), errors
    assert not (tmp_workspace / "runs").exists() or not any((tmp_workspace / "runs").iterdir())
