"""Starting a sweep from the Plan page's knob form ("sweep these knobs over …"): the rows become the same
``sweep:`` block ``mapsage sweep start TEMPLATE --set …`` builds, handed to the same ``runners.sweep.start``. The
detached driver is stubbed at its process boundary here (``spawn_driver``); tests/runners/test_sweep.py runs the real
detached driver end to end."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from mapsage.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")
TEMPLATE = "configs/stage1_baselines/demo_segformer_mit-b0_dubai.yaml"
KEY = "configs_stage1_baselines_demo_segformer_mit_b0_dubai_yaml"


def test_sweep_rows_become_a_checked_sweep_block():
    from app.widgets.sweep_form import default_rows, rows_to_parameters, sweep_overrides
    from mapsage.config import load_config

    cfg = load_config(ROOT / TEMPLATE)
    rows = default_rows(cfg)
    assert [r["key"] for r in rows if r["sweep"]] == ["train.lr", "loss.schedule.0.terms.dice", "augment.crop_size"]
    lr = rows[0]
    assert lr["log"] and lr["low"] == pytest.approx(cfg.train.lr / 10, rel=1e-2) \
        and lr["high"] == pytest.approx(cfg.train.lr * 10, rel=1e-2)
    params = rows_to_parameters(rows)
    assert params["augment.crop_size"]["values"][-1] == cfg.augment.crop_size[0]
    assert all(isinstance(v, int) and v % 32 == 0 for v in params["augment.crop_size"]["values"])
    assert "train.weight_decay" not in params                          # listed, not ticked
    rows.append({"sweep": True, "key": "model.encoder", "type": "choice", "values": "mit_b0, mit_b1"})
    assert rows_to_parameters(rows)["model.encoder"]["values"] == ["mit_b0", "mit_b1"]
    ov = sweep_overrides(params, 12, "tpe", "median", 1, "miou")
    got = load_config(ROOT / TEMPLATE, ov)
    assert got.sweep.parameters == params and got.sweep.n_trials == 12 and got.sweep.pruner == "median"
    with pytest.raises(UserError, match="sweep row 'train.lr': a float range needs low and high"):
        rows_to_parameters([{"key": "train.lr", "type": "float", "low": 1e-4, "high": None}])
    with pytest.raises(UserError, match="sweep.parameters.train.lr: low .* must be below high"):
        rows_to_parameters([{"key": "train.lr", "type": "float", "low": 1e-2, "high": 1e-4}])
    with pytest.raises(UserError, match="tick at least one knob"):
        rows_to_parameters([dict(r, sweep=False) for r in default_rows(cfg)])


def test_plan_knob_form_starts_the_same_sweep_as_the_cli(tmp_workspace, monkeypatch, capsys):
    from streamlit.testing.v1 import AppTest

    from runners import sweep
    from runners.cli import main

    spawned = []
    monkeypatch.setattr(sweep, "spawn_driver", lambda sid: spawned.append(sid) or 0)
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.run()
    at.switch_page("views/plan.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    # the run settings every trial shares come from the form's knobs; the sweep part: two trials, random sampler
    at.number_input(key=f"{KEY}:epochs").set_value(2)
    at.number_input(key=f"{KEY}:steps").set_value(2)
    at.number_input(key=f"{KEY}:max_samples").set_value(3)
    at.text_area(key=f"{KEY}:extra").input("train.num_workers=0\nruntime.device=cpu")
    at.number_input(key=f"{KEY}:sweep_n").set_value(2)
    at.selectbox(key=f"{KEY}:sweep_sampler").set_value("random")
    go = [b for b in at.button if b.label == "Start sweep" and b.proto.form_id == f"form_{KEY}"]
    assert len(go) == 1
    go[0].click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert len(spawned) == 1                                  # the driver was started (detached) once
    sid = spawned[0]
    success = " ".join(s.value for s in at.success)
    assert f"Started sweep `{sid}`: 2 trial(s), random sampler, median pruner" in success
    command = next(c.value for c in at.code if c.value.startswith("mapsage sweep start"))
    state = sweep.read_state(sid)
    assert state["status"] == "running" and state["n_trials"] == 2 and state["sampler"] == "random"
    assert [p["key"] for p in state["parameters"]] == ["train.lr", "loss.schedule.0.terms.dice", "augment.crop_size"]
    app_cfg = yaml.safe_load((sweep.sweep_dir(sid) / "config.yaml").read_text())
    assert app_cfg["train"]["epochs"] == 2 and app_cfg["train"]["steps_per_epoch"] == 2
    assert app_cfg["dataset"]["max_samples"] == 3 and app_cfg["runtime"]["device"] == "cpu"
    # the command the page shows, run through the CLI, writes the same sweep
    words = shlex.split(command.replace("\\\n", " "))
    overrides = [w for prev, w in zip(words, words[1:]) if prev == "--set"]
    assert overrides == state["overrides"]
    capsys.readouterr()
    assert main(["sweep", "start", TEMPLATE, *[x for o in overrides for x in ("--set", o)]]) == 0
    cli_sid = capsys.readouterr().out.strip().splitlines()[-1]
    assert spawned == [sid, cli_sid] and cli_sid != sid
    cli_cfg = yaml.safe_load((sweep.sweep_dir(cli_sid) / "config.yaml").read_text())
    # the same template file, named relative (the CLI, from the project root) or absolute (the app)
    srcs = {str((ROOT / c["meta"].pop("source")).resolve()) for c in (cli_cfg, app_cfg)}
    assert srcs == {str((ROOT / TEMPLATE).resolve())}
    assert cli_cfg == app_cfg
    cli_state = sweep.read_state(cli_sid)
    for k in ("n_trials", "sampler", "pruner", "metric", "direction", "parameters", "overrides"):
        assert cli_state[k] == state[k], k
    # the sweep appears on the Sweeps page (the Plan's link carries its id)
    link = next(p for p in at.get("page_link") if "Sweeps" in p.proto.label)
    assert f"sweep={sid}" in link.proto.query_string
    at.query_params["sweep"] = sid
    at.switch_page("views/sweeps.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key="sweep_pick").value == sid
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "running" and metrics["Trials"] == "0/2"


def test_sweeps_page_starts_a_classification_sweep_on_top1(tmp_workspace, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from runners import sweep

    spawned = []
    monkeypatch.setattr(sweep, "spawn_driver", lambda sid: spawned.append(sid) or 0)
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.run()
    at.switch_page("views/sweeps.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    pick = at.selectbox(key="sweep_template")
    cls = [o for o in pick.options if "cls_test-byobnet_dubai-scenes_cpu.yaml" in o]
    assert len(cls) == 1, pick.options
    pick.set_value(cls[0]).run()
    assert not at.exception, [e.message for e in at.exception]
    metric = at.selectbox(key="sweep_metric_cls")
    assert metric.options == ["top1", "macro_f1"]
    at.number_input(key="sweep_n").set_value(2)
    at.selectbox(key="sweep_sampler").set_value("random")
    at.button(key="sweep_start").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert len(spawned) == 1
    state = sweep.read_state(spawned[0])
    assert state["metric"] == "top1" and state["n_trials"] == 2
    assert [p["key"] for p in state["parameters"]] == ["train.lr", "classify.label_smoothing", "classify.loss"]
