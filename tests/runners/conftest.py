"""Fixtures of the job-runner tests: a fresh workspace with fast heartbeats and a CPU-only scheduler, a demo job
config, and a real single-node SLURM (``tests/support/slurm.py``) started once per session."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from runners import api, procs, scheduler
from store import schema as store_schema
from tests.support.paths import PROJECT_ROOT
from tests.support.slurm import LocalSlurm, cannot_start

DUBAI_BASE = PROJECT_ROOT / "configs" / "_base_" / "datasets" / "dubai.yaml"


@pytest.fixture
def rws(tmp_workspace, monkeypatch):
    """A fresh workspace with fast heartbeats and a CPU-only scheduler; kills whatever a test left running."""
    monkeypatch.setenv("MAPSAGE_HEARTBEAT_S", "0.3")
    monkeypatch.setenv("MAPSAGE_GPUS", "none")
    monkeypatch.setenv("MAPSAGE_CPU_JOBS", "2")
    monkeypatch.setenv("MAPSAGE_WORKER_INGEST_S", "1")
    store_schema.forget_checked()
    api._last_refresh = 0.0
    yield tmp_workspace
    for _rid, entry in scheduler.load_state()["active"].items():
        procs.signal_group(entry.get("pgid"), signal.SIGKILL)


@pytest.fixture
def demo_cfg(tmp_path) -> Path:
    path = tmp_path / "demo_job.yaml"
    path.write_text(f"_base_: ['{DUBAI_BASE}']\n"
                    "stage: {kind: demo_job, plan_stage: 0, title: lifecycle demo, name: demo, demo_steps: 3, "
                    "demo_step_seconds: 0.1}\n"
                    "runtime: {gpus: 0}\n")
    return path


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node SLURM; ``SLURM_CONF`` set for this process and the jobs it starts."""
    why = cannot_start()
    if why:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI must run the SLURM tests, but: {why}")
        pytest.skip(why)
    cluster = LocalSlurm()
    old = os.environ.get("SLURM_CONF")
    try:
        cluster.start()
    except RuntimeError:
        cluster.stop()
        raise
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
