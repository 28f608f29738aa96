"""The SLURM executor against a real single-node SLURM (tests/support/slurm.py): launch errors, cancel, a
requeue mid-run that resumes from its checkpoint, the demo baseline giving the same metrics as a local run, and a
2-task DDP run (srun + torchrun, gloo).

Jobs go through the runner API (``runners.api.launch``) and the CLI (``mapsage runs cancel|show``) exactly as in
the app; the job processes are SLURM's (sbatch through submitit), not this process's children."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.runners import until

ROOT = Path(__file__).resolve().parents[2]
DUBAI_BASE = ROOT / "configs" / "_base_" / "datasets" / "dubai.yaml"
DEMO = ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml"
ON_SLURM = ["runtime.executor=slurm", "runtime.slurm.cpus_per_task=1"]
# the demo baseline, tiny: 1 epoch of 2 steps on 128 px crops, validated on 1 whole tile, no EMA
TINY_TRAIN = ["train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2", "train.num_workers=0",
              "augment.crop_size=[128, 128]", "dataset.max_samples=1", "eval.mode=whole",
              "eval.save_predictions=false", "train.ema.enabled=false", "runtime.threads=1", "runtime.device=cpu"]


@pytest.fixture
def ws(tmp_path, monkeypatch, slurm_cluster):
    ws = tmp_path / "ws"
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(ws))
    monkeypatch.setenv("MAPSAGE_WORKER_INGEST_S", "0")
    monkeypatch.setenv("MAPSAGE_HEARTBEAT_S", "0.5")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return ws


def slurm_demo_cfg(tmp_path: Path, steps: int, seconds: float) -> Path:
    path = tmp_path / "demo_job.yaml"
    path.write_text(f"_base_: ['{DUBAI_BASE}']\n"
                    f"stage: {{kind: demo_job, plan_stage: 0, title: slurm demo, name: slurm-demo, "
                    f"demo_steps: {steps}, demo_step_seconds: {seconds}}}\n"
                    "runtime: {gpus: 0, device: cpu}\n")
    return path


def events(rid: str) -> list[dict]:
    from mapsage.events import read_events
    from mapsage.workspace import run_dir

    return read_events(run_dir(rid) / "events.jsonl")[0]


def statuses(rid: str) -> list[str]:
    return [r["status"] for r in events(rid) if r["type"] == "status"]


def cli(*argv: str) -> tuple[int, str]:
    from runners.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def slurm_job_id(rid: str) -> str:
    from runners.scheduler import read_job

    return until(lambda: read_job(rid).get("slurm_job_id"), 30, "the SLURM job id")


def in_squeue(job_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout.split()
    return job_id in out


def progress_step(rid: str) -> int:
    steps = [r.get("progress", {}).get("step") for r in events(rid) if r["type"] == "heartbeat" and r.get("progress")]
    return max([s for s in steps if s is not None], default=0)


# ---------------------------------------------------------------------------------------------------------------


def test_launch_errors_are_clear(ws, tmp_path, monkeypatch):
    from runners import api
    from runners.executors.slurm import SlurmError

    cfg = slurm_demo_cfg(tmp_path, 2, 0.1)
    with pytest.raises(SlurmError, match=r"unknown SLURM partition 'gpu-big'; the cluster has debug"):
        api.launch(cfg, [*ON_SLURM, "runtime.slurm.partition=gpu-big"])
    with pytest.raises(SlurmError, match=r"needs 64 CPUs per node .* has 4; lower runtime.slurm.cpus_per_task"):
        api.launch(cfg, ["runtime.executor=slurm", "runtime.slurm.cpus_per_task=64"])
    with pytest.raises(SlurmError, match=r"needs 2 GPU\(s\) per node but the nodes of partition 'debug' have 0"):
        api.launch(cfg, [*ON_SLURM, "runtime.slurm.gpus_per_node=2"])
    with pytest.raises(SlurmError, match=r"runtime.slurm.nodes=3 but partition 'debug' has 1 node"):
        api.launch(cfg, [*ON_SLURM, "runtime.slurm.nodes=3"])
    with pytest.raises(SlurmError, match=r"runtime.slurm.mem_gb=100000 but the largest node"):
        api.launch(cfg, [*ON_SLURM, "runtime.slurm.mem_gb=100000"])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code, _ = cli("run", str(cfg), "--set", "runtime.executor=slurm", "--set", "runtime.slurm.partition=x")
    assert code == 2 and err.getvalue().count("\n") == 1 and "unknown SLURM partition 'x'" in err.getvalue()
    # a controller that does not answer (a slurm.conf pointing at a port nobody listens on)
    bad = tmp_path / "slurm.conf"
    text = Path(os.environ["SLURM_CONF"]).read_text()
    bad.write_text("\n".join("SlurmctldPort=9" if line.startswith("SlurmctldPort=") else line
                             for line in text.splitlines()) + "\nMessageTimeout=2\n")
    monkeypatch.setenv("SLURM_CONF", str(bad))
    with pytest.raises(SlurmError, match=r"SLURM is not reachable: `scontrol show partition -o`"):
        api.launch(cfg, ON_SLURM)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SlurmError, match=r"SLURM is not reachable: `scontrol` is not on PATH"):
        api.launch(cfg, ON_SLURM)
    assert not (ws / "runs").exists() or not any((ws / "runs").iterdir())    # nothing written for a bad launch


def test_cancel_shows_cancelled_and_the_slurm_job_is_gone(ws, tmp_path):
    from runners import api

    rid = api.launch(slurm_demo_cfg(tmp_path, 400, 0.1), ON_SLURM)
    job_id = slurm_job_id(rid)
    until(lambda: progress_step(rid) >= 2, 90, "the SLURM job to run a couple of steps")
    code, shown = cli("runs", "show", rid)
    assert code == 0
    assert f"slurm_job_id: {job_id}" in shown and "slurm_state: RUNNING" in shown
    assert "slurm_nodes: " + os.uname().nodename.split(".")[0] in shown and "executor: slurm" in shown
    # a second job that cannot start while the first holds a CPU (it wants all 4): queued, with SLURM's reason
    waiting = api.launch(slurm_demo_cfg(tmp_path, 5, 0.1), ["runtime.executor=slurm", "runtime.slurm.cpus_per_task=4"])
    waiting_id = slurm_job_id(waiting)
    until(lambda: "slurm_reason: Resources" in cli("runs", "show", waiting)[1], 30, "the pending reason")
    assert api.status(waiting)["status"] == "queued"
    assert cli("runs", "cancel", waiting)[1].strip() == f"{waiting}: cancelled"
    assert not in_squeue(waiting_id) and statuses(waiting)[-1] == "cancelled" and "running" not in statuses(waiting)
    code, out = cli("runs", "cancel", rid)
    assert code == 0 and out.strip() == f"{rid}: cancelled"
    assert not in_squeue(job_id)
    assert statuses(rid)[-1] == "cancelled" and statuses(rid).count("cancelled") == 1
    assert api.status(rid)["status"] == "cancelled"
    code, shown = cli("runs", "show", rid)
    assert "status: cancelled" in shown and "slurm_state: CANCELLED" in shown


def test_requeue_mid_run_resumes_from_its_checkpoint(ws, tmp_path):
    from runners import api

    steps = 14
    rid = api.launch(slurm_demo_cfg(tmp_path, steps, 0.25), ON_SLURM)
    job_id = slurm_job_id(rid)
    until(lambda: progress_step(rid) >= 4, 90, "a few checkpointed steps")
    subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True)
    until(lambda: "queued" in statuses(rid)[2:], 30, "the run to show it was requeued")
    assert api.wait(rid, timeout=180) == "succeeded"
    sts = statuses(rid)
    # queued (launch), queued (submitted), running, queued (requeued), running, succeeded: no cancelled on the way
    assert sts[-4:] == ["running", "queued", "running", "succeeded"], sts
    recs = events(rid)
    stop = next(r for r in recs if r["type"] == "status" and r["status"] == "queued" and "requeued" in r["message"])
    before = [r for r in recs if r["type"] == "scalars" and r["seq"] < stop["seq"]]
    after = [r for r in recs if r["type"] == "scalars" and r["seq"] > stop["seq"]]
    done_before = max(r["step"] for r in before)
    assert any("resuming from" in (r.get("message") or "") for r in recs if r["type"] == "log")
    # the second attempt continues right after the last checkpointed step: at most one step (the checkpoint
    # interval of this stage) is done again, and every step's estimate is there once the run ended
    assert min(r["step"] for r in after) >= done_before
    assert sorted({r["step"] for r in before} | {r["step"] for r in after}) == list(range(steps))
    from runners.scheduler import read_job

    assert read_job(rid)["slurm_restarts"] == 1
    until(lambda: not in_squeue(job_id), 30, "the SLURM job to leave the queue")


@pytest.mark.slow
def test_demo_baseline_on_slurm_equals_local_run(ws, tmp_path):
    from runners import api
    from tests.support.app import run_in_process

    rid = api.launch(DEMO, [*TINY_TRAIN, *ON_SLURM])
    local = run_in_process(str(DEMO.relative_to(ROOT)), TINY_TRAIN, name="local-twin")
    assert api.wait(rid, timeout=400) == "succeeded", api.logs(rid, 40)

    def metrics(r):
        return [(m["variant"], m["epoch"], m["summary"]) for m in events(r) if m["type"] == "metrics"]

    on_slurm, here = metrics(rid), metrics(local)
    assert on_slurm and on_slurm == here
    assert api.status(rid)["status"] == "succeeded"


@pytest.mark.slow
def test_two_task_ddp_run_with_srun_and_torchrun(ws, tmp_path):
    from runners import api
    from runners.scheduler import read_job

    rid = api.launch(DEMO, [*TINY_TRAIN, *ON_SLURM, "runtime.slurm.tasks_per_node=2", "dataset.max_samples=2",
                            "train.batch_size=1"])
    assert api.wait(rid, timeout=400) == "succeeded", api.logs(rid, 60)
    info = [r for r in events(rid) if r["type"] == "run_info" and r.get("world_size")]
    assert info and info[0]["world_size"] == 2
    assert statuses(rid).count("running") == 1           # rank 0 alone writes events
    log = (Path(os.environ["MAPSAGE_WORKSPACE"]) / "runs" / rid / "stdout.log").read_text()
    assert "task 0/2" in log and "task 1/2" in log and "--nnodes=2" in log
    assert "rank 1/2 starting" in log
    assert json.dumps(read_job(rid)["slurm_request"]["tasks_per_node"]) == "2"


@pytest.mark.slow
def test_time_limit_signal_checkpoints_and_requeues(ws, tmp_path):
    """SLURM's warning signal before the time limit (USR2, as ``--signal=USR2@<slurm_signal_s>`` sends it; here by
    hand): the job stops its worker at a checkpoint, requeues itself and finishes in a second attempt."""
    from runners import api

    steps = 14
    rid = api.launch(slurm_demo_cfg(tmp_path, steps, 0.25), ON_SLURM)
    job_id = slurm_job_id(rid)
    until(lambda: progress_step(rid) >= 3, 90, "a few checkpointed steps")
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, capture_output=True)
    assert api.wait(rid, timeout=180) == "succeeded"
    recs = events(rid)
    requeued = [r for r in recs if r["type"] == "status" and r["status"] == "queued"
                and "checkpointed before SLURM's time limit" in (r.get("message") or "")]
    assert len(requeued) == 1 and "cancelled" not in statuses(rid)
    steps_seen = sorted({r["step"] for r in recs if r["type"] == "scalars"})
    assert steps_seen == list(range(steps))
    assert any("resuming from" in (r.get("message") or "") for r in recs if r["type"] == "log")


@pytest.mark.slow
def test_training_requeued_mid_epoch_resumes_at_its_step(ws):
    """A training run (the demo baseline, tiny) requeued mid-epoch: the trainer saves its position at the stop,
    the second attempt resumes there, and the run ends with exactly the planned optimiser steps."""
    from runners import api
    from runners.scheduler import read_job

    # 40 steps: long enough that the requeue lands mid-epoch on a fast machine too (heartbeats come each second)
    rid = api.launch(DEMO, [*TINY_TRAIN, *ON_SLURM, "train.steps_per_epoch=40", "train.batch_size=1"])
    job_id = slurm_job_id(rid)
    until(lambda: progress_step(rid) >= 2 and "running" in statuses(rid), 180, "two training steps")
    subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True)
    assert api.wait(rid, timeout=300) == "succeeded", api.logs(rid, 40)
    recs = events(rid)
    logs = [r.get("message") or "" for r in recs if r["type"] == "log"]
    saved = [m for m in logs if m.startswith("stop requested: saved last.pth")]
    assert saved, logs
    stopped_at = int(re.search(r"step (\d+)", saved[0]).group(1))
    assert any(m.startswith("resumed from") for m in logs), logs
    assert statuses(rid)[-4:] == ["running", "queued", "running", "succeeded"]
    finished = [m for m in logs if m.startswith("training finished")]
    assert "0 epoch(s)" in finished[0] and "1 epoch(s)" in finished[-1]
    resumed = next(m for m in logs if m.startswith("resumed from"))
    # the second attempt starts at the step the first one saved at the stop: no step lost, none repeated
    assert f"global step {stopped_at}, {stopped_at} step(s) into epoch 0" in resumed, resumed
    from mapsage.train.checkpoint import load_checkpoint

    last = load_checkpoint(Path(os.environ["MAPSAGE_WORKSPACE"]) / "runs" / rid / "checkpoints" / "last.pth")
    assert last["global_step"] == 40 and last["epochs_done"] == 1
    assert 1 <= stopped_at < 40 and read_job(rid)["slurm_restarts"] == 1
