"""Helpers of the job-runner tests: wait for a condition, and launch a run's worker in this process (the run
folder as ``runners.jobs.submit`` writes it, torch imported once)."""
from __future__ import annotations

import contextlib
import signal
import time


def until(cond, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


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
