"""The runner process layer with real processes (the ``demo_job`` stage, no torch): a job runs to succeeded; a
SIGKILLed job is found ``died`` and ``resume`` continues from its checkpoint; cancel ends the whole process group
(SIGTERM, then SIGKILL after the grace); a raising job ends ``failed`` with its traceback in ``runs show``; the
scheduler starts queued jobs in order as CPU / GPU slots free (multi-GPU jobs under torchrun)."""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import store
from mapsage.config import ConfigError
from mapsage.demo_stage import SAMPLES_PER_STEP
from mapsage.errors import CheckpointError, UserError
from mapsage.events import read_events
from mapsage.workspace import run_dir, runs_dir
from runners import api, cli, jobs, procs, scheduler, stages
from tests.support.runners import until

ROOT = Path(__file__).resolve().parents[2]
DUBAI_BASE = ROOT / "configs" / "_base_" / "datasets" / "dubai.yaml"


def expected_pi(steps: int, seed: int = 42) -> float:
    hits = 0
    for step in range(steps):
        xy = np.random.default_rng([seed, step]).random((SAMPLES_PER_STEP, 2))
        hits += int(np.count_nonzero((xy * xy).sum(axis=1) <= 1.0))
    return 4.0 * hits / (steps * SAMPLES_PER_STEP)


def checkpoint_step(rid: str) -> int:
    try:
        return json.loads((run_dir(rid) / "checkpoints" / "last.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return -1


def test_short_job_succeeds_through_the_cli(rws, demo_cfg, capsys):
    assert cli.main(["run", str(demo_cfg), "--wait"]) == 0
    rid = capsys.readouterr().out.strip().splitlines()[0]
    assert rid.startswith("demo_") and run_dir(rid).is_dir()
    assert (run_dir(rid) / "config.yaml").exists() and (run_dir(rid) / "stdout.log").exists()
    assert cli.main(["runs", "show", rid, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "succeeded" and shown["traceback"] is None
    assert shown["checkpoint"].endswith("checkpoints/last.json") and shown["kind"] == "demo_job"
    assert cli.main(["runs", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed] == [rid] and listed[0]["progress_frac"] == 1.0
    store.ingest_all()
    sc = store.scalars(rid, names="pi_estimate")
    assert sc["step"].tolist() == [0, 1, 2]
    assert sc["value"].iloc[-1] == expected_pi(3)
    assert store.statuses(rid)["status"].tolist() == ["queued", "running", "succeeded"]
    assert len(store.artifacts(rid, kind="checkpoint")) == 3
    row = store.run(rid)
    assert row["pid"] and row["host"] == procs.HOST
    # after its final status the worker ingests, frees its slot and exits
    until(lambda: not procs.pid_alive(row["pid"]), 30, "the worker to exit")
    until(lambda: scheduler.load_state() == {"queue": [], "active": {}}, 10, "the slot to be freed")
    # a stage working on this run's checkpoint records it as its parent
    ckpt = run_dir(rid) / "checkpoints" / "last.json"
    follow_up = api.launch(demo_cfg, [f"stage.checkpoint={ckpt}", "stage.demo_steps=1"])
    assert api.wait(follow_up, timeout=60) == "succeeded"
    store.ingest_all()
    assert (store.run(follow_up)["parent_run"], store.run(follow_up)["parent_relation"]) == (rid, "checkpoint")


def test_sigkilled_job_is_died_and_resume_continues_from_its_checkpoint(rws, demo_cfg):
    rid = api.launch(demo_cfg, ["stage.demo_steps=14", "stage.demo_step_seconds=0.25"])
    until(lambda: checkpoint_step(rid) >= 2, 60, "a few checkpoints")
    pid = scheduler.read_job(rid)["pid"]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    st = until(lambda: (s := api.status(rid))["status"] == "died" and s, 60, "the died status")
    assert time.monotonic() - killed_at < 5          # the first status read after the kill finds it
    assert "vanished without a final status" in st["message"] and f"runs resume {rid}" in st["message"]
    saved = checkpoint_step(rid)
    assert 2 <= saved < 13
    # the dead run frees its slot, and resume queues a new run from the last checkpoint
    assert rid not in scheduler.load_state()["active"]
    new = api.resume(rid)
    assert new != rid and api.wait(new, timeout=90) == "succeeded"
    store.ingest_all()
    child = store.run(new)
    assert child["parent_run"] == rid and child["parent_relation"] == "resume"
    assert child["resume_from"] == str(run_dir(rid) / "checkpoints" / "last.json")
    sc = store.scalars(new, names="pi_estimate")
    assert sc["step"].iloc[0] == saved + 1 and sc["step"].iloc[-1] == 13
    # killed and resumed, the estimate is exactly the uninterrupted one
    assert sc["value"].iloc[-1] == expected_pi(14)
    assert store.run(rid)["status"] == "died"
    with pytest.raises(UserError, match="only an ended run"):
        api.resume(api.launch(demo_cfg, ["stage.demo_steps=1000"]))


def test_cancel_ends_the_whole_process_group(rws, demo_cfg):
    polite = api.launch(demo_cfg, ["stage.demo_steps=1000", "stage.demo_spawn_child=true"])
    hung = api.launch(demo_cfg, ["stage.demo_steps=1000", "stage.demo_spawn_child=true",
                                 "stage.demo_ignore_stop=true"])
    pids = {}
    for rid in (polite, hung):
        until(lambda: (run_dir(rid) / "child.pid").exists() and checkpoint_step(rid) >= 0, 60, "the stage child")
        pids[rid] = (scheduler.read_job(rid)["pid"], int((run_dir(rid) / "child.pid").read_text()))
        assert procs.group_members(pids[rid][0]) and procs.pid_alive(pids[rid][1])
    # SIGTERM: the stage stops at its next step and the worker writes cancelled; the child dies with the group
    start = time.monotonic()
    assert api.cancel(polite, grace_s=60, wait=True) == "cancelled"
    assert time.monotonic() - start < 15             # stopped by SIGTERM at its next step, long before SIGKILL
    assert "stopped on request" in api.status(polite)["message"]
    # a stage that ignores the stop request: SIGKILL to the group once the grace has run out, done by a later
    # status read (the app's way: cancel returns at once, nothing blocks)
    start = time.monotonic()
    assert api.cancel(hung, grace_s=1.0, wait=False) == "cancelling"
    st = until(lambda: (s := api.status(hung))["final"] and s, 60, "the hung job to be killed")
    assert st["status"] == "cancelled" and "SIGKILL" in st["message"]
    assert 1.0 <= time.monotonic() - start < 15      # killed once the 1 s grace ran out, not before
    for rid, (worker, child) in pids.items():
        until(lambda: not procs.pid_alive(worker) and not procs.pid_alive(child), 10, f"{rid} processes gone")
        assert procs.group_members(worker) == []
    assert scheduler.load_state()["active"] == {}


def test_failed_job_shows_its_traceback(rws, demo_cfg, capsys):
    rid = api.launch(demo_cfg, ["stage.demo_fail_at=0"])
    assert api.wait(rid, timeout=60) == "failed"
    assert cli.main(["runs", "show", rid]) == 0
    text = capsys.readouterr().out
    assert "traceback:" in text and "DemoFailure" in text and "demo_fail_at=0" in text
    assert "stdout.log (tail)" in text
    assert cli.main(["runs", "show", rid, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "failed" and "Traceback (most recent call last)" in shown["traceback"]
    assert shown["status_message"].startswith("DemoFailure: stage.demo_fail_at=0")
    assert cli.main(["runs", "wait", rid]) == jobs.EXIT_CODES["failed"] == 1
    assert cli.main(["runs", "logs", rid, "--events"]) == 0
    assert "[failed]" in capsys.readouterr().out
    store.ingest_all()
    assert "DemoFailure" in store.run(rid)["traceback"]
    # it failed before its first checkpoint: a resume restarts it under the same run id (changes are refused)
    with pytest.raises(CheckpointError, match="saved no checkpoint"):
        api.resume(rid, ["stage.demo_steps=3"])
    assert api.resume(rid) == rid
    assert api.wait(rid, timeout=60) == "failed"
    statuses = [r["status"] for r in read_events(run_dir(rid) / "events.jsonl")[0] if r["type"] == "status"]
    assert statuses == ["queued", "running", "failed", "queued", "running", "failed"]


def test_queued_jobs_start_in_order_as_cpu_slots_free(rws, demo_cfg, monkeypatch):
    monkeypatch.setenv("MAPSAGE_CPU_JOBS", "1")
    ids = [api.launch(demo_cfg, ["stage.demo_steps=2"]) for _ in range(3)]
    extra = api.launch(demo_cfg, ["stage.demo_steps=2"])
    assert api.status(extra)["queue_position"] >= 1
    assert api.cancel(extra) == "cancelled"              # a queued job is cancelled at once, never started
    for rid in ids:
        assert api.wait(rid, timeout=90) == "succeeded"
    store.ingest_all()
    hist = store.statuses(ids + [extra])
    started = {r: hist[(hist.run_id == r) & (hist.status == "running")]["ts"].min() for r in ids}
    ended = {r: hist[(hist.run_id == r) & (hist.status == "succeeded")]["ts"].max() for r in ids}
    assert started[ids[0]] < started[ids[1]] < started[ids[2]]
    assert started[ids[1]] >= ended[ids[0]] and started[ids[2]] >= ended[ids[1]]   # one slot: never overlapping
    assert hist[hist.run_id == extra]["status"].tolist() == ["queued", "cancelled"]


def test_gpu_slots_set_cuda_visible_devices_and_multi_gpu_jobs_run_under_torchrun(rws, demo_cfg, monkeypatch):
    monkeypatch.setenv("MAPSAGE_GPUS", "0,1,2")       # the scheduler's pool; the demo stage never touches CUDA
    pair = api.launch(demo_cfg, ["stage.demo_steps=3"], gpus=2)
    single = api.launch(demo_cfg, ["stage.demo_steps=3"], gpus=1)
    waiting = api.launch(demo_cfg, ["stage.demo_steps=1"], gpus=1)
    n_runs = len(list(runs_dir().iterdir()))
    with pytest.raises(ConfigError, match=r"runtime.gpus=4 but the scheduler has 3 GPU\(s\)"):
        api.launch(demo_cfg, [], gpus=4)              # refused at launch: no run folder, no queued job
    assert len(list(runs_dir().iterdir())) == n_runs
    assert api.status(waiting)["status"] == "queued"   # all 3 GPUs are taken
    for rid in (pair, single, waiting):
        assert api.wait(rid, timeout=120) == "succeeded", jobs.log_tail(rid)
    store.ingest_all()
    info = {r: store.run(r)["info"] for r in (pair, single, waiting)}
    assert sorted(info[pair]["gpus"]) == ["0", "1"] and info[pair]["world_size"] == 2
    assert info[single]["gpus"] == ["2"] and info[single]["world_size"] == 1
    assert len(info[waiting]["gpus"]) == 1
    assert "torch.distributed.run" in " ".join(scheduler.read_job(pair)["command"])
    hist = store.statuses([pair, single, waiting])
    first_end = hist[hist.status == "succeeded"].query("run_id != @waiting")["ts"].min()
    assert hist[(hist.run_id == waiting) & (hist.status == "running")]["ts"].iloc[0] >= first_end
    # only rank 0 wrote events: one scalar row per step
    assert store.scalars(pair, names="pi_estimate")["step"].tolist() == [0, 1, 2]


def test_stage_registry_gives_clear_errors():
    assert callable(stages.resolve("demo_job"))
    with pytest.raises(UserError, match="known kinds"):
        stages.resolve("no_such_kind")
    with pytest.raises(UserError, match="does not exist in this installation"):
        stages.resolve("x", {"x": "mapsage.no_such_module:run"})
    with pytest.raises(UserError, match="has no function 'nope'"):
        stages.resolve("x", {"x": "mapsage.demo_stage:nope"})
    assert set(stages.STAGES) >= {"train", "evaluate", "tta_ab", "health", "refine", "distill", "ensemble",
                                  "demo_job"}


def test_launch_rejects_a_bad_config_before_writing_anything(rws, demo_cfg):
    with pytest.raises(ConfigError, match="stage.demo_stepz"):
        api.launch(demo_cfg, ["stage.demo_stepz=3"])
    with pytest.raises(ConfigError, match="runtime.gpus"):
        api.launch(demo_cfg, ["runtime.gpus=-1"])
    assert not runs_dir().exists() or list(runs_dir().iterdir()) == []


def test_list_templates_reads_the_plan_configs():
    templates = api.list_templates()
    by_path = {t["path"]: t for t in templates}
    base = by_path["stage1_baselines/segformer_mit-b2_loveda.yaml"]
    assert base["error"] is None and base["plan_stage"] == 1 and base["kind"] == "train"
    assert base["knobs"]["model.encoder"] == "mit_b2" and base["knobs"]["augment.crop_size"] == [512, 512]
    assert base["summary"]["loss"] == "ce0.7+dice0.3" and base["run_name"].startswith("segformer_mit-b2")
    stages_seen = [t["plan_stage"] for t in templates]
    assert stages_seen == sorted(stages_seen, key=lambda s: 99 if s is None else s)
    assert all(math.isfinite(t["plan_stage"]) for t in templates if t["plan_stage"] is not None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
