"""Sweeps: the search space, a real 12-trial TPE sweep with the median pruner on the demo data (trials are real
training runs through the worker; at least one ends ``pruned``), the store's link from runs to their sweep, and
"promote best" writing a template that validates."""
from __future__ import annotations

import contextlib
import json
import signal
import time
from pathlib import Path

import pytest
import yaml

from mapsage.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "configs/sweeps/sweep_demo_segformer_mit-b0_dubai.yaml"
TINY = ["train.epochs=4", "train.steps_per_epoch=2", "train.batch_size=2", "train.num_workers=0",
        "dataset.max_samples=3", "eval.mode=whole", "eval.save_predictions=false", "runtime.threads=1",
        "runtime.device=cpu", "train.ema.enabled=false",
        "sweep.parameters={train.lr: {type: float, low: 1.0e-5, high: 3.0e-2, log: true}, "
        "loss.schedule.0.terms.dice: {type: float, low: 0.0, high: 2.5}, "
        "augment.crop_size: {type: choice, values: [64, 96]}}"]


def inprocess_launcher(cfg) -> str:
    """Write the run folder as runners.jobs.submit does and run the job's worker here (torch imported once)."""
    from mapsage.config import config_hash, git_commit, run_name, save_resolved
    from mapsage.events import EventWriter
    from mapsage.workspace import run_dir
    from runners import worker

    rid = f"{run_name(cfg)}_{time.strftime('%H%M%S')}_{time.monotonic_ns() % 100000:05d}"
    rdir = run_dir(rid)
    rdir.mkdir(parents=True)
    save_resolved(cfg, rdir)
    ev = EventWriter(rdir)
    ev.status("queued", message="queued (test: run in-process)")
    ev.emit("run_info", name=run_name(cfg), kind=cfg.stage.kind, plan_stage=cfg.stage.plan_stage,
            config_hash=config_hash(cfg), code_commit=git_commit(), dataset=cfg.dataset.name,
            created_at=time.time(), gpus_requested=0, launched_by="pytest")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with open(rdir / "stdout.log", "a", encoding="utf-8") as log, \
                contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            worker.main([str(rdir)])
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    return rid


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
