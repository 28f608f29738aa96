"""The scheduler: a queue and slots, with no daemon.

State lives in ``workspace/jobs/state.json`` (the queue in launch order and the active jobs with their pid, process
start time, process group, host and GPUs) and changes only under the exclusive lock ``.locks/scheduler.lock``.
:func:`schedule` is called by every launch, every status read (``runners.api.refresh``), every cancel and by each
worker as it finishes; each call

1. checks the active jobs: a job whose process is gone (same host: dead pid or a different process behind it;
   another host: heartbeat older than ``stale_s``) leaves its slot; if its event file has no final status, the
   scheduler appends one -- ``cancelled`` when a cancel was pending, ``died`` otherwise (the owner is dead, so the
   detecting reader writes it) -- and kills what is left of its process group;
2. escalates pending cancels whose grace period ran out (SIGKILL to the process group);
3. starts queued jobs, strictly in launch order within each pool, while slots are free:
   GPU pool -- M GPUs (``Settings.gpus``), a job takes k = ``runtime.gpus`` of them (``CUDA_VISIBLE_DEVICES`` set
   to its ids; k > 1 runs under ``torchrun --nproc_per_node k``); CPU pool -- ``Settings.cpu_jobs`` jobs at once
   for jobs without GPUs (every job on a CPU-only machine, and ``--gpus 0`` jobs anywhere).

Jobs run detached (``start_new_session=True``: their own session and process group, stdout and stderr appended to
``run_dir/stdout.log``), so the launching process -- a CLI call or a Streamlit rerun -- can end without ending them.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from mapsage.config import PROJECT_ROOT
from mapsage.diskspace import remove_stale_temps
from mapsage.errors import UserError
from mapsage.event_records import fold_events
from mapsage.events import EVENTS_FILE, FINAL_STATUSES, EventWriter
from mapsage.workspace import run_dir, workspace_root
from store.locks import LockTimeout, file_lock, lock_path

from . import procs
from .settings import Settings, load_settings

JOB_FILE = "job.json"
STDOUT_FILE = "stdout.log"

# Popen objects of jobs this process started: polled so that they never linger as zombies
_children: dict[int, subprocess.Popen] = {}


def _reap() -> None:
    for pid, p in list(_children.items()):
        if p.poll() is not None:
            _children.pop(pid, None)


def state_path() -> Path:
    return workspace_root() / "jobs" / "state.json"


@contextlib.contextmanager
def scheduler_lock(timeout: float = 60.0) -> Iterator[None]:
    try:
        with file_lock(lock_path("scheduler"), exclusive=True, timeout=timeout):
            yield
    except LockTimeout as exc:
        raise UserError(f"{lock_path('scheduler')}: the scheduler stayed locked for {timeout:.0f} s; a process "
                        f"holding it may hang (see `ps`)") from exc


def load_state() -> dict:
    path = state_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {}
    except (OSError, json.JSONDecodeError):
        # a damaged state file: keep a copy for inspection and start over (run folders still hold the truth)
        with contextlib.suppress(OSError):
            os.replace(path, path.with_suffix(f".damaged-{int(time.time())}"))
        data = {}
    data.setdefault("queue", [])
    data.setdefault("active", {})
    return data


def save_state(state: dict) -> None:
    """Write the state (temporary file + rename). On a full disk the temporary file is removed and a
    ``DiskFullError`` names the place."""
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        from mapsage.diskspace import disk_full_error, is_disk_full

        if is_disk_full(exc):
            raise disk_full_error(path.parent, len(json.dumps(state, indent=1))) from exc
        raise


def read_job(rid: str) -> dict:
    try:
        return json.loads((run_dir(rid) / JOB_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_job(rid: str, **updates) -> dict:
    job = read_job(rid)
    job.update(updates)
    path = run_dir(rid) / JOB_FILE
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(job, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return job


def last_status(rid: str) -> tuple[str | None, dict | None]:
    """(status, record) of the last status record in the run's event file."""
    state, _ = fold_events(run_dir(rid) / EVENTS_FILE)
    return state.status, state.status_record


def _last_heartbeat_ts(rid: str) -> float | None:
    """ts of the run's last heartbeat or status record."""
    return fold_events(run_dir(rid) / EVENTS_FILE)[0].last_beat


def _log_tail(rid: str, lines: int = 15) -> str:
    path = run_dir(rid) / STDOUT_FILE
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------------------------
# checking active jobs


def _entry_alive(entry: dict, settings: Settings) -> bool:
    if entry.get("host") == procs.HOST:
        return procs.pid_alive(entry.get("pid"), entry.get("ticks"))
    last = _last_heartbeat_ts(entry["run_id"]) or entry.get("started_at") or 0
    return time.time() - float(last) < settings.stale_s


def _finish_dead(rid: str, entry: dict) -> str:
    """The job's process is gone: free what is left of its group and make sure its status is final."""
    if entry.get("host") == procs.HOST:
        pgid = entry.get("pgid")
        if procs.kill_job_members(pgid, run_dir(rid)):      # only processes that name this run's folder
            procs.wait_group_gone(pgid, 5.0)

        for folder in (run_dir(rid) / "checkpoints", run_dir(rid)):
            remove_stale_temps(folder)
    status, _ = last_status(rid)
    if status in FINAL_STATUSES:
        return status
    ev = EventWriter(run_dir(rid))
    cancel = entry.get("cancel")
    if cancel:
        ev.status("cancelled", message=f"cancelled by {cancel.get('by', 'request')}: the process group did not end "
                                       f"within the {cancel.get('grace_s', '?')} s grace and was killed (SIGKILL)")
        return "cancelled"
    last = _last_heartbeat_ts(rid)
    age = f"{time.time() - last:.0f} s" if last else "never"
    tail = _log_tail(rid)
    ev.status("died", message=(f"the job's process (pid {entry.get('pid')} on {entry.get('host')}) vanished without "
                               f"a final status; last sign of life {age} ago. Resume it from its last checkpoint "
                               f"with `mapsage runs resume {rid}`"),
              traceback=("last lines of stdout.log:\n" + tail) if tail else None)
    return "died"


def _check_active(state: dict, settings: Settings) -> list[tuple[str, str]]:
    ended = []
    for rid, entry in list(state["active"].items()):
        entry["run_id"] = rid
        if entry.get("executor", "local") != "local":       # a cluster job: its executor follows it
            from .executors import get_executor

            if not get_executor(entry["executor"]).poll(rid, entry, settings):
                del state["active"][rid]
                ended.append((rid, last_status(rid)[0]))
            continue
        cancel = entry.get("cancel")
        alive = _entry_alive(entry, settings)
        if alive and cancel and time.time() >= float(cancel.get("deadline", 0)) \
                and entry.get("host") == procs.HOST and not cancel.get("killed"):
            procs.signal_job(entry.get("pid"), entry.get("ticks"), run_dir(rid), signal.SIGKILL)
            cancel["killed"] = time.time()
            procs.wait_group_gone(entry.get("pgid"), 5.0)
            alive = procs.pid_alive(entry.get("pid"), entry.get("ticks"))
        if not alive:
            status = _finish_dead(rid, entry)
            del state["active"][rid]
            ended.append((rid, status))
    return ended


# ---------------------------------------------------------------------------------------------------------------
# starting queued jobs


def _command(rdir: Path, ngpus: int) -> list[str]:
    """The job's command: the supervisor (runners/supervisor.py) around the worker (under torchrun for k > 1)."""
    if ngpus > 1:
        worker = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ngpus}",
                  "-m", "runners.worker", str(rdir)]
    else:
        worker = [sys.executable, "-m", "runners.worker", str(rdir)]
    return [sys.executable, "-m", "runners.supervisor", str(rdir), "--", *worker]


def _env(rid: str, gpus: list[str], settings: Settings) -> dict:
    env = dict(os.environ)
    env["MAPSAGE_WORKSPACE"] = str(workspace_root())
    env["MAPSAGE_RUN_ID"] = rid
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)          # "" hides every GPU from a CPU-slot job
    if not gpus:
        threads = max(1, (os.cpu_count() or 1) // max(1, settings.cpu_jobs))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, str(threads))
    return env


def spawn(rid: str, gpus: list[str], settings: Settings) -> dict:
    """Start the job's worker, detached. Returns its active-table entry."""
    rdir = run_dir(rid)
    cmd = _command(rdir, len(gpus))
    with open(rdir / STDOUT_FILE, "ab") as log:
        log.write(f"[scheduler] {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(cmd)} "
                  f"(CUDA_VISIBLE_DEVICES={','.join(gpus) or '<none>'})\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, cwd=str(PROJECT_ROOT), env=_env(rid, gpus, settings), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    _children[proc.pid] = proc
    entry = {"pid": proc.pid, "pgid": proc.pid, "ticks": procs.start_ticks(proc.pid), "host": procs.HOST,
             "gpus": list(gpus), "started_at": time.time(), "command": cmd}
    write_job(rid, pid=proc.pid, pgid=proc.pid, ticks=entry["ticks"], host=procs.HOST, gpus=list(gpus),
              started_at=entry["started_at"], command=cmd)
    return entry


def _fail_queued(rid: str, message: str) -> None:
    EventWriter(run_dir(rid)).status("failed", message=message)


def _start_queued(state: dict, settings: Settings) -> list[str]:
    started = []
    pool = list(settings.gpus)
    busy = {g for e in state["active"].values() for g in e.get("gpus", [])}
    free = [g for g in pool if g not in busy]
    cpu_running = sum(1 for e in state["active"].values() if not e.get("gpus"))
    gpu_blocked = cpu_blocked = False
    remaining = []
    for item in state["queue"]:
        rid = item["run_id"]
        if not (run_dir(rid) / "config.yaml").exists():
            continue  # the run folder was removed while queued
        status, _ = last_status(rid)
        if status != "queued":
            continue  # cancelled (or otherwise finished) while queued
        if read_job(rid).get("executor", "local") != "local":   # a cluster job: submitted, no local slot

            from .executors import for_run

            try:
                state["active"][rid] = for_run(rid).start(rid, settings)
                started.append(rid)
            except UserError as exc:
                _fail_queued(rid, str(exc))
            continue
        want = int(item.get("gpus", 0))
        if want > 0 and pool:
            if want > len(pool):
                _fail_queued(rid, f"runtime.gpus={want} but the scheduler has {len(pool)} GPU(s) "
                                  f"({','.join(pool)}); launch with --gpus {len(pool)} or fewer")
                continue
            if gpu_blocked or len(free) < want:
                gpu_blocked = True
                remaining.append(item)
                continue
            ids, free = free[:want], free[want:]
        else:
            if cpu_blocked or cpu_running >= settings.cpu_jobs:
                cpu_blocked = True
                remaining.append(item)
                continue
            ids = []
            cpu_running += 1
        try:
            state["active"][rid] = spawn(rid, ids, settings)
            started.append(rid)
        except OSError as exc:
            _fail_queued(rid, f"could not start the worker process: {exc}")
    state["queue"] = remaining
    return started


def schedule(release: str | None = None, settings: Settings | None = None, release_pgid: int | None = None) -> dict:
    """Check active jobs, then start queued jobs whose slots are free. ``release``: a run whose worker has
    written its final status and frees its slot now (with ``release_pgid``: only when the active entry is that
    process group's, so a late release never frees a restarted attempt of the run). Returns {"started": [...],
    "ended": [(run_id, status)]}."""
    settings = settings or load_settings()
    _reap()
    with scheduler_lock():
        state = load_state()
        before = json.dumps(state, sort_keys=True)
        entry = state["active"].get(release) if release else None
        # a cluster job's entry goes when SLURM says it ended; a local one only with its own process group
        if entry is not None and entry.get("executor", "local") == "local" and (
                release_pgid is None or entry.get("pgid") == release_pgid):
            state["active"].pop(release, None)
        ended = _check_active(state, settings)
        # a cluster job's worker calls this on its node: it never starts this machine's queued jobs there
        started = [] if os.environ.get("MAPSAGE_ON_CLUSTER") else _start_queued(state, settings)
        if json.dumps(state, sort_keys=True) != before:   # status reads call this often: write only changes
            save_state(state)
    return {"started": started, "ended": ended}


def enqueue(rid: str, gpus: int) -> None:
    with scheduler_lock():
        state = load_state()
        if not any(item["run_id"] == rid for item in state["queue"]):
            state["queue"].append({"run_id": rid, "gpus": int(gpus), "enqueued_at": time.time()})
        save_state(state)


def queue_position(rid: str) -> int | None:
    for i, item in enumerate(load_state()["queue"]):
        if item["run_id"] == rid:
            return i + 1
    return None
