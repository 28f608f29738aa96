"""Executors: where a job's worker runs.

``local`` (the default) is this machine's GPU and CPU slots, run by :mod:`runners.scheduler` itself;
``slurm`` submits the job to a SLURM cluster through submitit (:mod:`runners.executors.slurm`). A run's executor
is ``runtime.executor`` of its config, else the workspace setting ``executor`` (``MAPSAGE_EXECUTOR``).

The scheduler keeps one active-table entry per started job. An entry of a non-local executor carries
``"executor": name``; the scheduler hands such entries to the executor: :meth:`start` when the job leaves the
queue, :meth:`poll` on every scheduling pass (False: the job has ended and its entry goes), and
:func:`cancel_remote` for ``mapsage runs cancel``.
"""
from __future__ import annotations

import os

from mapsage.errors import UserError

from ..scheduler import read_job
from ..settings import load_settings
from .local import LocalExecutor
from .slurm import SlurmExecutor, stop_outcome

NAMES = ("local", "slurm")


def executor_name(cfg, settings=None) -> str:
    """The executor a config runs on: ``runtime.executor``, else the workspace setting."""
    name = getattr(cfg.runtime, "executor", None)
    if not name:
        if settings is None:
            settings = load_settings()
        name = settings.executor or "local"
    if name not in NAMES:
        raise UserError(f"runtime.executor: unknown executor {name!r}; use one of {', '.join(NAMES)}")
    return name


def get_executor(name: str):
    if name == "slurm":
        return SlurmExecutor()

    return LocalExecutor()


def for_run(rid: str):
    """The executor of a queued run (from the run's resolved config)."""

    job = read_job(rid)
    return get_executor(job.get("executor") or "local")


def check_launch(cfg) -> str:
    """Validate where ``cfg`` will run before anything is written (a clear error for a cluster that is not
    reachable or cannot satisfy the request). Returns the executor name."""
    name = executor_name(cfg)
    get_executor(name).check(cfg)
    return name


def cancel_remote(rid: str, grace_s: float | None, wait_for_end: bool) -> str | None:
    """Cancel a run whose active entry belongs to a non-local executor; None when it is not such a run."""
    from .. import scheduler

    with scheduler.scheduler_lock():
        entry = scheduler.load_state()["active"].get(rid)
    if not entry or entry.get("executor", "local") == "local":
        return None
    return get_executor(entry["executor"]).cancel(rid, entry, grace_s=grace_s, wait_for_end=wait_for_end)


def stop_status(run_id: str, status: str, message: str) -> tuple[str, str]:
    """The final status a worker writes after a stop request: a cluster job stopped for a requeue (preemption,
    time limit, ``scontrol requeue``) is ``queued`` again instead of ``cancelled``."""
    if status != "cancelled" or not os.environ.get("SLURM_JOB_ID"):
        return status, message

    return stop_outcome(run_id, status, message)


def placement(rid: str) -> dict:
    """Where a run runs, for ``mapsage runs show`` and the app: executor, and for a cluster job its SLURM job id,
    state (live from squeue when it is still in SLURM), partition, nodes and requeue count."""

    job = read_job(rid)
    name = job.get("executor") or "local"
    out = {"executor": name}
    if name != "slurm" or not job.get("slurm_job_id"):
        return out
    state, nodes, reason = job.get("slurm_state"), job.get("slurm_nodes"), job.get("slurm_reason")
    try:
        from .slurm import job_state

        st = job_state(job["slurm_job_id"])
        if st.get("state") not in (None, "UNKNOWN"):
            state, nodes, reason = st["state"], st.get("nodes") or nodes, st.get("reason") or reason
    except UserError:
        pass          # SLURM unreachable from here: what the job file last recorded
    req = job.get("slurm_request") or {}
    out.update(slurm_job_id=job["slurm_job_id"], slurm_state=state, slurm_partition=req.get("partition"),
               slurm_nodes=nodes or None, slurm_reason=reason if reason not in (None, "None") else None,
               slurm_restarts=job.get("slurm_restarts") or 0)
    return out
