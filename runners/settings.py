"""Scheduler settings: GPUs in the pool, concurrent CPU jobs, heartbeat and cancel timings.

Each value comes from (first wins) an environment variable, ``workspace/settings.json`` (``save_settings``, e.g.
from the app), or the default:

================  ========================  =========================================================================
setting           environment               meaning (default)
================  ========================  =========================================================================
gpus              ``MAPSAGE_GPUS``          GPU ids the scheduler hands out: ``"0,1,2,3"``, a count ``"4"``, or
                                            ``"none"``. Default: ``CUDA_VISIBLE_DEVICES`` if set, else the GPUs
                                            ``nvidia-smi`` lists, else none (a CPU-only machine)
cpu_jobs          ``MAPSAGE_CPU_JOBS``      jobs that may run at once without a GPU (1)
heartbeat_s       ``MAPSAGE_HEARTBEAT_S``   seconds between a worker's heartbeats (5)
grace_s           ``MAPSAGE_CANCEL_GRACE_S`` seconds between SIGTERM and SIGKILL on cancel (30)
stale_s           ``MAPSAGE_STALE_S``       heartbeat age after which a run on *another* host counts as died (300)
worker_ingest_s   ``MAPSAGE_WORKER_INGEST_S`` seconds between a worker's own ingests into the store, 0 = only at
                                            the end (10)
executor          ``MAPSAGE_EXECUTOR``      where jobs run: ``local`` (this machine's slots) or ``slurm`` (default local)
slurm_*           ``MAPSAGE_SLURM_*``       the default SLURM request (a template's ``runtime.slurm.*`` wins):
                                            partition, account, time_min, nodes, gpus_per_node, cpus_per_task,
                                            mem_gb; signal_s: seconds before the time limit at which a job
                                            checkpoints and requeues (90)
================  ========================  =========================================================================
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field, fields

from mapsage.errors import UserError
from mapsage.workspace import workspace_root

_ENV = {"gpus": "MAPSAGE_GPUS", "cpu_jobs": "MAPSAGE_CPU_JOBS", "heartbeat_s": "MAPSAGE_HEARTBEAT_S",
        "grace_s": "MAPSAGE_CANCEL_GRACE_S", "stale_s": "MAPSAGE_STALE_S",
        "worker_ingest_s": "MAPSAGE_WORKER_INGEST_S", "executor": "MAPSAGE_EXECUTOR"}
_STRINGS = ("executor", "slurm_partition", "slurm_account")
_INTS = ("slurm_time_min", "slurm_nodes", "slurm_gpus_per_node", "slurm_cpus_per_task")


@dataclass
class Settings:
    gpus: list[str] = field(default_factory=list)
    cpu_jobs: int = 1
    heartbeat_s: float = 5.0
    grace_s: float = 30.0
    stale_s: float = 300.0
    worker_ingest_s: float = 10.0
    executor: str = "local"
    slurm_partition: str | None = None
    slurm_account: str | None = None
    slurm_time_min: int | None = None
    slurm_nodes: int | None = None
    slurm_gpus_per_node: int | None = None
    slurm_cpus_per_task: int | None = None
    slurm_mem_gb: float | None = None
    slurm_signal_s: int = 90


_detected: list[str] | None = None


def detect_gpus() -> list[str]:
    """GPU ids visible to this machine, without importing torch (``CUDA_VISIBLE_DEVICES`` or ``nvidia-smi``)."""
    global _detected
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        return [g.strip() for g in cvd.split(",") if g.strip() and g.strip() != "-1"]
    if _detected is None:
        _detected = []
        exe = shutil.which("nvidia-smi")
        if exe:
            try:
                out = subprocess.run([exe, "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                                     text=True, timeout=10)
                if out.returncode == 0:
                    _detected = [line.strip() for line in out.stdout.splitlines() if line.strip()]
            except (OSError, subprocess.SubprocessError):
                _detected = []
    return list(_detected)


def parse_gpus(value, where: str) -> list[str]:
    if value is None:
        return detect_gpus()
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.lower() in ("", "none", "cpu", "0 gpus"):
        return []
    if text.isdigit() and "," not in text:
        return [str(i) for i in range(int(text))]
    ids = [t.strip() for t in text.split(",") if t.strip()]
    if not ids:
        raise UserError(f"{where}: GPUs must be a list of ids like '0,1,2,3', a count like '4', or 'none'; "
                        f"got {value!r}")
    return ids


def settings_path():
    return workspace_root() / "settings.json"


def _file_settings() -> dict:
    path = settings_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); fix or delete the file") from exc
    return data if isinstance(data, dict) else {}


def load_settings() -> Settings:
    data = _file_settings()
    s = Settings()
    for f in fields(Settings):
        var = _ENV.get(f.name, "MAPSAGE_" + f.name.upper())
        env = os.environ.get(var)
        value, where = (env, var) if env is not None else (data.get(f.name), str(settings_path()))
        if f.name == "gpus":
            s.gpus = parse_gpus(value, where)
            continue
        if value is None:
            continue
        if f.name in _STRINGS:
            setattr(s, f.name, str(value).strip() or None)
            continue
        try:
            conv = int if f.name in ("cpu_jobs", "slurm_signal_s") or f.name in _INTS else float
            setattr(s, f.name, conv(value))
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where}: {f.name} must be a number, got {value!r}") from exc
    if (s.executor or "local") not in ("local", "slurm"):
        raise UserError(f"executor must be 'local' or 'slurm', got {s.executor!r} (set MAPSAGE_EXECUTOR or "
                        f"{settings_path()})")
    s.executor = s.executor or "local"
    if s.cpu_jobs < 1:
        raise UserError(f"cpu_jobs must be at least 1 (set {_ENV['cpu_jobs']} or {settings_path()})")
    return s


def save_settings(**changes) -> Settings:
    """Persist settings in ``workspace/settings.json`` (environment variables still win)."""
    known = {f.name for f in fields(Settings)}
    bad = set(changes) - known
    if bad:
        raise UserError(f"unknown setting(s) {sorted(bad)}; known: {sorted(known)}")
    data = _file_settings()
    data.update(changes)
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return load_settings()
