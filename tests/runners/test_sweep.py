"""Sweeps: the search space, a real 12-trial TPE sweep with the median pruner on the demo data (trials are real
training runs through the worker; at least one ends ``pruned``), the store's link from runs to their sweep, and
"promote best" writing a template that validates."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from mapsage.errors import UserError
from tests.support.runners import inprocess_launcher

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "configs/sweeps/sweep_demo_segformer_mit-b0_dubai.yaml"
TINY = ["train.epochs=4", "train.steps_per_epoch=2", "train.batch_size=2", "train.num_workers=0",
        "dataset.max_samples=3", "eval.mode=whole", "eval.save_predictions=false", "runtime.threads=1",
        "runtime.device=cpu", "train.ema.enabled=false",
        "sweep.parameters={train.lr: {type: float, low: 1.0e-5, high: 3.0e-2, log: true}, "
        "loss.schedule.0.terms.dice: {type: float, low: 0.0, high: 2.5}, "
        "augment.crop_size: {type: choice, values: [64, 96]}}"]


def test_space_parsing_and_errors():
    from mapsage.sweep.space import apply_params, parse_space, set_dotted

    ps = parse_space({"train.lr": {"type": "float", "low": "1e-5", "high": 1e-2, "log": True},
                      "augment.crop_size": [64, 96], "train.batch_size": {"type": "int", "low": 2, "high": 8,
                                                                           "step": 2}})
    assert [p.type for p in ps] == ["float", "choice", "int"]
    assert ps[2].grid_values() == [2, 4, 6, 8]
    with pytest.raises(UserError, match="sweep.parameters.train.lr: a log range needs low > 0"):
        parse_space({"train.lr": {"type": "float", "low": 0, "high": 1, "log": True}})
    with pytest.raises(UserError, match="grid needs discrete values"):
        ps[0].grid_values()
    data = {"augment": {"crop_size": [256, 256]}, "loss": {"schedule": [{"terms": {"ce": 0.7, "dice": 0.3}}]}}
    out = apply_params(data, {"augment.crop_size": 96, "loss.schedule.0.terms.dice": 1.5})
    assert out["augment"]["crop_size"] == [96, 96] and out["loss"]["schedule"][0]["terms"]["dice"] == 1.5
    assert data["augment"]["crop_size"] == [256, 256]        # a copy
    with pytest.raises(UserError, match="no section 'augmnt'"):
        set_dotted(data, "augmnt.crop_size", 3)


def test_prepare_names_a_bad_key(tmp_path, monkeypatch):
    from runners import sweep

    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(tmp_path / "ws"))
    with pytest.raises(UserError, match="sweep.parameters.trian.lr: the config has no section 'trian'"):
        sweep.prepare(SWEEP, ["sweep.parameters={trian.lr: [0.1, 0.2]}"])
    with pytest.raises(Exception, match="sweep.parameters: a trial's config does not validate.*lrr"):
        sweep.prepare(SWEEP, ["sweep.parameters={train.lrr: [0.1, 0.2]}"])


def test_budgets_stop_asking_and_pruners_follow_the_block(tmp_path, monkeypatch):
    """Trial, wall-clock and GPU-hour budgets (what the driver checks before each new trial), and the pruner each
    ``sweep.pruner`` builds."""
    import optuna

    from mapsage.config import load_config
    from mapsage.sweep.study import make_pruner
    from mapsage.workspace import run_dir
    from runners import sweep
    from runners.scheduler import write_job

    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(tmp_path / "ws"))
    now = time.time()
    cfg = load_config(SWEEP, ["sweep.n_trials=3"])
    state = {"n_trials": 3, "created_at": now - 60, "trials": {"0": {}, "1": {}}}
    assert sweep._budget_left(cfg, state, now) is None
    state["trials"]["2"] = {}
    assert sweep._budget_left(cfg, state, now) == "trial budget spent (3 trials)"
    cfg = load_config(SWEEP, ["sweep.max_wall_h=0.5"])
    state = {"n_trials": 20, "created_at": now - 1700, "trials": {}}
    assert sweep._budget_left(cfg, state, now) is None
    state["created_at"] = now - 1801
    assert sweep._budget_left(cfg, state, now) == "wall-clock budget spent (0.5 h)"
    # GPU-hours: each trial's wall (its job's start to its end, or now) times runtime.gpus, summed
    cfg = load_config(SWEEP, ["sweep.max_gpu_h=1.0", "runtime.gpus=2"])
    for rid, started in (("t0_20261205-000000_0000", now - 1200), ("t1_20261205-000000_0001", now - 600)):
        run_dir(rid).mkdir(parents=True)
        write_job(rid, started_at=started)
    state = {"n_trials": 20, "created_at": now - 1200, "trials": {
        "0": {"run_id": "t0_20261205-000000_0000", "ended_at": now - 300},      # 15 min x 2 GPUs = 0.5 GPU-h
        "1": {"run_id": "t1_20261205-000000_0001"}}}                            # 10 min x 2 GPUs, running
    assert sweep._gpu_hours(state, 2, now) == pytest.approx(0.5 + 1 / 3)
    assert sweep._budget_left(cfg, state, now) is None
    assert sweep._budget_left(cfg, state, now + 300) == "GPU-hour budget spent (1.0 GPU-h)"   # 0.5 + 0.5
    # pruners
    block = load_config(SWEEP, ["sweep.pruner=asha", "sweep.min_epochs=2"]).sweep
    asha = make_pruner(block)
    assert isinstance(asha, optuna.pruners.SuccessiveHalvingPruner) and asha._min_resource == 2
    block = load_config(SWEEP, ["sweep.pruner=median", "sweep.min_epochs=3", "sweep.startup_trials=4"]).sweep
    median = make_pruner(block)
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert (median._n_startup_trials, median._n_warmup_steps) == (4, 2)      # judged from the 3rd epoch (index 2)
    assert isinstance(make_pruner(load_config(SWEEP, ["sweep.pruner=none"]).sweep), optuna.pruners.NopPruner)


@pytest.mark.slow
def test_tpe_sweep_with_median_pruner_prunes_and_promotes(tmp_path, monkeypatch):
    import torch

    from mapsage.config import load_config
    from runners import sweep

    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(tmp_path / "ws"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sid = sweep.start(SWEEP, TINY, detach=False, launcher=inprocess_launcher)
    finally:
        torch.set_num_threads(threads)
    state = sweep.read_state(sid)
    assert state["status"] == "finished" and len(state["trials"]) == 12
    df = sweep.trials_frame(sid)
    assert len(df) == 12
    assert (df["status"] == "pruned").sum() >= 1, df[["trial", "state", "status", "value", "epochs"]]
    assert set(df["state"]) <= {"complete", "pruned"}, df[["trial", "state", "status"]]
    pruned = df[df["status"] == "pruned"]
    assert (pruned["epochs"] < 4).all()                    # stopped before the last epoch
    assert (df.loc[df["state"] == "complete", "epochs"] == 4).all()
    # every trial is an ordinary run whose config links it to the sweep and carries the sampled values
    import store
    from mapsage.workspace import run_dir

    for row in df.to_dict("records"):
        cfg = yaml.safe_load((run_dir(row["run_id"]) / "config.yaml").read_text())
        assert cfg["sweep"]["id"] == sid and cfg["sweep"]["trial"] == row["trial"]
        assert cfg["augment"]["crop_size"] == [row["p:augment.crop_size"]] * 2
        assert cfg["train"]["lr"] == pytest.approx(row["p:train.lr"])
    runs = store.list_runs()
    assert set(df["run_id"]) <= set(runs["run_id"])
    assert set(runs.loc[runs["run_id"].isin(df["run_id"]), "status"]) <= {"succeeded", "pruned"}
    # best so far never gets worse; promote writes a template that loads
    bsf = df["best_so_far"].dropna().tolist()
    assert bsf == sorted(bsf)
    out = sweep.promote(sid, tmp_path / "best.yaml")
    cfg = load_config(out)
    top = sweep.best(sid)
    assert cfg.train.lr == pytest.approx(top["params"]["train.lr"])
    assert cfg.loss.schedule[0].terms["dice"] == pytest.approx(top["params"]["loss.schedule.0.terms.dice"])
    assert cfg.augment.crop_size == [top["params"]["augment.crop_size"]] * 2
    assert not cfg.sweep.parameters
    imp = sweep.importances(sid)
    assert set(imp) == {"train.lr", "loss.schedule.0.terms.dice", "augment.crop_size"}
    assert sum(imp.values()) == pytest.approx(1.0)
    # the Sweeps page on this workspace: trials, curves, parallel coordinates, importances; promote writes a
    # template that validates
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=120)
    at.run()
    at.query_params["sweep"] = sid
    at.switch_page("views/sweeps.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    kinds = [json.loads(el.proto.spec)["data"][0]["type"] for el in at.get("plotly_chart")]
    assert "parcoords" in kinds and "bar" in kinds
    assert int(at.metric[3].value) == int((df["status"] == "pruned").sum())
    monkeypatch.setattr(sweep, "PROJECT_ROOT", tmp_path / "proj")
    next(b for b in at.button if "Promote" in b.label).click().run()
    assert not at.exception, [e.message for e in at.exception]
    written = list((tmp_path / "proj" / "configs" / "sweeps").glob("*_best.yaml"))
    assert len(written) == 1 and load_config(written[0]).train.lr == pytest.approx(top["params"]["train.lr"])
    # ensembles: "top k of this sweep" and members by pattern (best first by their named checkpoint's score)
    from mapsage.sweep.members import expand_members

    ens_cfg = load_config(ROOT / "configs/stage3_inference/ensemble_demo_segformer_mit-b0_dubai.yaml",
                          [f"ensemble.from_sweep={sid}", "ensemble.top_k=2", "ensemble.members=[]"])
    members = [m.checkpoint for m in expand_members(ens_cfg)]
    done = df[df["state"] == "complete"].sort_values("value", ascending=False)
    assert members == list(done["run_id"][:2])
    ens_cfg = load_config(ROOT / "configs/stage3_inference/ensemble_demo_segformer_mit-b0_dubai.yaml",
                          ["ensemble.pattern=*-t0?_*", "ensemble.top_k=3", "ensemble.members=[]"])
    picked = [m.checkpoint for m in expand_members(ens_cfg)]
    assert len(picked) == 3 and all("-t0" in p for p in picked)


def test_ensemble_rules_name_what_is_missing(tmp_path, monkeypatch):
    from mapsage.config import ConfigError, load_config
    from mapsage.sweep.members import expand_members

    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(tmp_path / "ws"))
    base = ROOT / "configs/stage3_inference/ensemble_demo_segformer_mit-b0_dubai.yaml"
    with pytest.raises(ConfigError, match="ensemble.from_sweep: no sweep 'sweep_x_1'"):
        expand_members(load_config(base, ["ensemble.from_sweep=sweep_x_1", "ensemble.members=[]"]))
    with pytest.raises(ConfigError, match="ensemble.pattern 'nothing\\*' matches no run"):
        expand_members(load_config(base, ["ensemble.pattern=nothing*", "ensemble.members=[]"]))


def _cli(env: dict, *args: str, timeout: float = 120) -> str:
    import subprocess
    import sys

    got = subprocess.run([sys.executable, "-m", "runners.cli", *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert got.returncode == 0, f"mapsage {' '.join(args)} failed:\n{got.stdout}\n{got.stderr}"
    return got.stdout


@pytest.mark.slow
def test_detached_driver_runs_a_sweep_and_cancel_stops_one(tmp_path, monkeypatch):
    """As a user runs it: ``mapsage sweep start`` (the driver detached; trials are detached worker processes
    through the scheduler), ``sweep show`` until it ends, and ``sweep cancel`` of a second sweep while its trial
    trains."""
    import optuna

    import store
    from mapsage.sweep.study import storage as study_storage
    from runners import sweep
    from runners.procs import pid_alive
    from runners.scheduler import read_job

    ws = tmp_path / "ws"
    env = {**os.environ, "MAPSAGE_WORKSPACE": str(ws), "MAPSAGE_GPUS": "none", "MAPSAGE_CPU_JOBS": "3",
           "MAPSAGE_CANCEL_GRACE_S": "10", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH",
                                                                                                  "")])}
    for k in ("MAPSAGE_WORKSPACE", "MAPSAGE_GPUS", "MAPSAGE_CPU_JOBS", "MAPSAGE_CANCEL_GRACE_S"):
        monkeypatch.setenv(k, env[k])
    tiny = ["train.epochs=2", "train.steps_per_epoch=1", "train.batch_size=2", "train.num_workers=0",
            "dataset.max_samples=2", "eval.mode=whole", "eval.save_predictions=false", "runtime.threads=1",
            "runtime.device=cpu", "train.ema.enabled=false", "sweep.pruner=none", "sweep.sampler=random",
            "sweep.parameters={train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}, "
            "augment.crop_size: [64, 96]}"]
    sets = [x for o in tiny for x in ("--set", o)]
    started = []
    try:
        done_id = _cli(env, "sweep", "start", str(SWEEP), *sets, "--set", "sweep.n_trials=2",
                       "--set", "sweep.parallel=2").strip().splitlines()[-1]
        started.append(done_id)
        stop_id = _cli(env, "sweep", "start", str(SWEEP), *sets, "--set", "sweep.n_trials=3",
                       "--set", "sweep.parallel=1").strip().splitlines()[-1]
        started.append(stop_id)
        assert {r["sweep_id"] for r in sweep.list_sweeps()} == {done_id, stop_id}
        # the second sweep's first trial is training: cancel the sweep
        deadline = time.time() + 240
        while True:
            trials = sweep.read_state(stop_id)["trials"]
            rid = (trials.get("0") or {}).get("run_id")
            if rid and sweep._run_status(rid) == "running":
                break
            assert time.time() < deadline, f"trial 0 of {stop_id} never started: {trials}"
            time.sleep(0.5)
        assert _cli(env, "sweep", "cancel", stop_id).strip() == "cancelling"
        deadline = time.time() + 300
        while any(sweep.read_state(s)["status"] == "running" for s in started):
            assert time.time() < deadline, [sweep.read_state(s) for s in started]
            time.sleep(1)
    finally:
        for s in started:                          # never leave a driver or a trial behind a failed test
            try:
                if sweep.read_state(s)["status"] == "running":
                    sweep.cancel(s)
            except Exception:  # noqa: BLE001
                pass
    # the finished sweep: both trials complete with their best epoch's value, listed by `sweep show`
    state = sweep.read_state(done_id)
    assert state["status"] == "finished" and state["message"] == "trial budget spent (2 trials)"
    df = sweep.trials_frame(done_id)
    assert list(df["state"]) == ["complete", "complete"] and list(df["status"]) == ["succeeded", "succeeded"]
    assert df["value"].between(0, 1).all() and list(df["epochs"]) == [2, 2]
    shown = _cli(env, "sweep", "show", done_id)
    assert f"sweep {done_id}: finished" in shown and "2/2 trials" in shown
    for row in df.to_dict("records"):
        line = next(ln for ln in shown.splitlines() if ln.split()[:3] == [str(row["trial"]), "complete",
                                                                            "succeeded"])
        assert float(line.split()[3]) == pytest.approx(row["value"], abs=1e-6)
    top = df.loc[df["value"].idxmax()]
    assert f"best: trial {top['trial']} value {top['value']:.4f} run {top['run_id']}" in shown
    # the cancelled sweep: its training trial was stopped and told FAIL (run status cancelled); nothing after it
    state = sweep.read_state(stop_id)
    assert state["status"] == "cancelled" and state["message"] == "cancelled on request"
    assert list(state["trials"]) == ["0"]
    t0 = state["trials"]["0"]
    assert (t0["state"], t0["status"]) == ("fail", "cancelled")
    study = optuna.load_study(study_name=stop_id, storage=study_storage(stop_id))
    assert [t.state.name for t in study.trials] == ["FAIL"]
    job = read_job(t0["run_id"])
    assert job.get("pid") and not pid_alive(int(job["pid"]), job.get("ticks"))
    drv = state["driver"]
    assert not pid_alive(int(drv["pid"]), drv.get("ticks"))
    store.ingest_all()
    runs = store.list_runs().set_index("run_id")
    assert runs.loc[t0["run_id"], "status"] == "cancelled"
    assert set(runs.loc[list(df["run_id"]), "status"]) == {"succeeded"}
    shown = _cli(env, "sweep", "show", stop_id)
    assert f"sweep {stop_id}: cancelled (cancelled on request)" in shown and "1/3 trials" in shown
    assert _cli(env, "sweep", "cancel", stop_id).strip() == "cancelled"
