"""The job lifecycle: launch (queue), cancel, resume, live status and following a run.

States: ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` (with the traceback) | ``cancelled`` | ``died``.
The run's event file is the truth; the launcher writes ``queued``, the worker ``running`` and its final status,
and after the owner is dead the scheduler may append ``cancelled`` or ``died``.

Resume creates a *new* run (its own id, events and checkpoints) whose ``resume_from`` is the parent's last
checkpoint and whose ``parent_run`` is the parent (``parent_relation = "resume"``). Each attempt keeps its own
status history and numbers, and a chain of resumes can be followed through ``parent_run``.
"""
from __future__ import annotations

import datetime as _dt
import getpass
import secrets
import signal
import time
from pathlib import Path
from typing import Callable

import yaml

from mapsage.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_hash,
    git_commit,
    load_config,
    resolve_path,
    run_name,
    save_resolved,
)
from mapsage.config.core import apply_overrides
from mapsage.errors import CheckpointError, DiskFullError, UserError
from mapsage.event_records import RunState, fold_events
from mapsage.events import EVENTS_FILE, FINAL_STATUSES, EventWriter, read_events
from mapsage.runids import is_run_id
from mapsage.workspace import run_dir, runs_dir

from . import procs, scheduler
from .settings import load_settings
from .stages import check_kind
from .validate import validate_launch

EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 3, "died": 4, "pruned": 5}
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".json", ".safetensors", ".bin")


class RunNotFound(UserError):
    pass


def _require_run(rid: str) -> Path:
    d = run_dir(rid)
    if not (d / EVENTS_FILE).exists() and not (d / "config.yaml").exists():
        raise RunNotFound(f"no run {rid!r} under {runs_dir()} (see `mapsage runs list`)")
    return d


def _whoami() -> str:
    try:
        return f"{getpass.getuser()}@{procs.HOST}"
    except (KeyError, OSError):
        return procs.HOST


def _new_run_id(name: str) -> str:
    runs_dir().mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        rid = f"{name}_{time.strftime('%Y%m%d-%H%M%S')}_{secrets.token_hex(2)}"
        try:
            run_dir(rid).mkdir(parents=False)
            return rid
        except FileExistsError:
            continue
    raise UserError(f"{runs_dir()}: could not create a unique run folder for {name!r}")


def run_of_checkpoint(ref: str | None) -> str | None:
    """The run a ``stage.checkpoint`` reference belongs to: a run id, or a file inside a run folder."""
    if not ref:
        return None

    if is_run_id(ref) and run_dir(ref).is_dir():
        return ref
    try:
        rel = resolve_path(ref).resolve().relative_to(runs_dir().resolve())
    except ValueError:
        return None
    return rel.parts[0] if len(rel.parts) > 1 and (runs_dir() / rel.parts[0]).is_dir() else None


def submit(cfg: Config, parent_run: str | None = None, parent_relation: str | None = None,
           resume_from: str | Path | None = None) -> str:
    """Snapshot a resolved config into a new run folder, write ``queued``, queue the job and run the scheduler.

    A stage that works on another run's checkpoint (``stage.checkpoint`` = a run id or a file in a run folder:
    evaluate, tta_ab, refine, health) records that run as its parent (``parent_relation = "checkpoint"``); a training
    run warm-started from a run (``model.init_from``) records it with ``parent_relation = "warm_start"``."""
    kind = cfg.stage.kind
    executor = _preflight(cfg, resume_from)
    gpus = int(cfg.runtime.gpus)
    if parent_run is None and kind not in ("train", "distill"):
        parent_run = run_of_checkpoint(cfg.stage.checkpoint)
        parent_relation = "checkpoint" if parent_run else None
    elif parent_run is None and cfg.model.init_from:       # a warm start from a run (model.init_from) is its child
        parent_run = run_of_checkpoint(cfg.model.init_from)
        parent_relation = "warm_start" if parent_run else None
    name = run_name(cfg)[:160]
    try:
        return _submit(cfg, kind, gpus, name, parent_run, parent_relation, resume_from, executor)
    except OSError as exc:
        from mapsage.diskspace import disk_full_error, is_disk_full

        if is_disk_full(exc):
            raise disk_full_error(runs_dir()) from exc
        raise


def _submit(cfg, kind, gpus, name, parent_run, parent_relation, resume_from, executor) -> str:
    rid = _new_run_id(name)
    rdir = run_dir(rid)
    try:
        save_resolved(cfg, rdir)
        now = time.time()
        scheduler.write_job(rid, run_id=rid, name=name, kind=kind, gpus_requested=gpus,
                            config_source=str(cfg.meta.get("source", "")), parent_run=parent_run,
                            parent_relation=parent_relation, resume_from=str(resume_from) if resume_from else None,
                            created_at=now, launched_by=_whoami(), executor=executor)
        ev = EventWriter(rdir)
        if executor != "local":
            queued_for = f"queued for the {executor} executor"
        elif gpus and load_settings().gpus:
            queued_for = f"queued for {gpus} GPU(s)"
        else:   # no GPU pool on this machine (or runtime.gpus 0): the job waits for a CPU slot
            queued_for = "queued for a CPU slot" + (" (no GPUs on this machine)" if gpus else "")
        ev.status("queued", message=queued_for)
        ev.emit("run_info", name=name, kind=kind, plan_stage=cfg.stage.plan_stage, title=cfg.stage.title or None,
                config_hash=config_hash(cfg), code_commit=git_commit(), dataset=cfg.dataset.name,
                parent_run=parent_run, parent_relation=parent_relation,
                resume_from=str(resume_from) if resume_from else None, created_at=now, gpus_requested=gpus,
                config_source=str(cfg.meta.get("source", "")), launched_by=_whoami())
        scheduler.enqueue(rid, gpus)
    except (OSError, DiskFullError):
        import shutil

        shutil.rmtree(rdir, ignore_errors=True)     # no half-made run folder (e.g. on a full disk)
        raise
    scheduler.schedule()
    return rid


def launch(config_path: str | Path, overrides: list[str] | None = None, gpus: int | None = None) -> str:
    """Resolve ``config_path`` with ``--set`` style ``overrides`` (and ``gpus`` per job), queue it, return the run
    id. Config errors raise ``ConfigError`` before anything is written."""
    overrides = list(overrides or [])
    if gpus is not None:
        overrides.append(f"runtime.gpus={int(gpus)}")
    cfg = load_config(config_path, overrides)
    return submit(cfg)


def check_launch(config_path: str | Path, overrides: list[str] | None = None, gpus: int | None = None) -> None:
    """The checks :func:`submit` makes before writing anything, on their own (for a launch that asks first)."""
    overrides = list(overrides or [])
    if gpus is not None:
        overrides.append(f"runtime.gpus={int(gpus)}")
    _preflight(load_config(config_path, overrides))


def _preflight(cfg: Config, resume_from: str | Path | None = None) -> str:
    """Fail now, in one line, not inside the detached job; returns the job's executor."""
    check_kind(cfg.stage.kind)
    from .executors import check_launch as check_executor

    executor = check_executor(cfg)     # a cluster that is unreachable or cannot hold the request fails here
    if int(cfg.runtime.gpus) < 0:
        raise ConfigError(f"runtime.gpus must be 0 or more, got {cfg.runtime.gpus}")
    validate_launch(cfg, resume_from=resume_from)
    return executor


# ---------------------------------------------------------------------------------------------------------------
# status


_live_cache: dict[str, tuple[int, int, RunState]] = {}
_LIVE_INFO_KEYS = ("gpus", "parent_run", "resume_from", "name", "kind")   # in the answer only once a run_info gave them


def live_status(rid: str) -> dict:
    """The run's state straight from its event file (fresh; no store involved): status, message, traceback,
    progress (last heartbeat's), last_heartbeat, pid, host, gpus, queue position, final. Incremental: a process
    re-reads only what was appended since its last call (the fold, :class:`mapsage.event_records.RunState`, is
    cached per file with its offset)."""
    rdir = _require_run(rid)
    path = rdir / EVENTS_FILE
    try:
        inode = path.stat().st_ino
    except FileNotFoundError:
        inode = -1
    key = str(path)
    cached = _live_cache.get(key)
    if cached and cached[0] == inode:
        offset, state = cached[1], cached[2].copy()
    else:
        offset, state = 0, RunState()
    state, offset = fold_events(path, offset, state)
    _live_cache[key] = (inode, offset, state)
    out = {"run_id": rid, "status": state.status, "message": state.message, "traceback": state.traceback,
           "progress": state.progress, "last_heartbeat": state.last_heartbeat, "pid": state.pid,
           "host": state.host, "n_events": state.n_events}
    if state.has_status:
        out["status_ts"] = state.status_ts
    out.update({k: getattr(state, k) for k in _LIVE_INFO_KEYS if getattr(state, k) is not None})
    out["final"] = state.final
    out["queue_position"] = scheduler.queue_position(rid) if out["status"] == "queued" else None
    return out


def _attempt_offset(path: Path) -> int:
    """Byte offset of the run's latest ``queued`` status record (0 when none): where its current attempt
    begins."""
    try:
        data = path.read_bytes()
    except OSError:
        return 0
    offset, found = 0, 0
    for line in data.splitlines(keepends=True):
        if b'"type":"status"' in line and b'"status":"queued"' in line:
            found = offset
        offset += len(line)
    return found


def wait(rid: str, timeout: float | None = None, poll: float = 0.25,
         on_record: Callable[[dict], None] | None = None) -> str:
    """Follow a run until its status is final (running the scheduler now and then, so a dead job is found and
    queued jobs start). Calls ``on_record`` for every new event. Returns the final status ('timeout' when
    ``timeout`` passes first)."""
    path = _require_run(rid) / EVENTS_FILE
    offset = _attempt_offset(path)     # a restarted run: follow its latest attempt, not the first one's ending
    deadline = None if timeout is None else time.monotonic() + timeout
    last_schedule = 0.0
    while True:
        records, offset = read_events(path, offset)
        for r in records:
            if on_record:
                on_record(r)
            if r.get("type") == "status" and r.get("status") in FINAL_STATUSES:
                return r["status"]
        now = time.monotonic()
        if now - last_schedule >= 1.0:
            scheduler.schedule()
            last_schedule = now
        if deadline is not None and now >= deadline:
            return "timeout"
        time.sleep(poll)


# ---------------------------------------------------------------------------------------------------------------
# cancel


def cancel(rid: str, grace_s: float | None = None, wait_for_end: bool = True) -> str:
    """Cancel a run. Queued: removed from the queue, ``cancelled``. Running: SIGTERM to its process group (the
    worker asks the stage to stop at its next safe point and writes ``cancelled``), SIGKILL to the group after
    ``grace_s`` (default ``Settings.grace_s``). ``wait_for_end=False`` returns after the SIGTERM ('cancelling');
    later scheduler calls do the SIGKILL when the grace has run out. Returns the status afterwards."""
    _require_run(rid)
    from .executors import cancel_remote

    remote = cancel_remote(rid, grace_s, wait_for_end)   # a cluster job: scancel
    if remote is not None:
        return remote
    settings = load_settings()
    grace = settings.grace_s if grace_s is None else float(grace_s)
    with scheduler.scheduler_lock():
        state = scheduler.load_state()
        status, _ = scheduler.last_status(rid)
        if status in FINAL_STATUSES:
            return status
        queued = [q for q in state["queue"] if q["run_id"] == rid]
        entry = state["active"].get(rid)
        if entry is None:
            if queued or status == "queued":
                state["queue"] = [q for q in state["queue"] if q["run_id"] != rid]
                scheduler.save_state(state)
                EventWriter(run_dir(rid)).status("cancelled", message=f"cancelled while queued by {_whoami()}")
                return "cancelled"
            # running but unknown to the scheduler (state lost): use what the job file says
            job = scheduler.read_job(rid)
            if not job.get("pid"):
                raise UserError(f"run {rid} is {status} but has no process on record; nothing to cancel")
            entry = {"pid": job["pid"], "pgid": job.get("pgid", job["pid"]), "host": job.get("host"),
                     "ticks": job.get("ticks"), "gpus": job.get("gpus", []), "started_at": job.get("started_at")}
            if entry["host"] == procs.HOST and not procs.is_job_process(entry["pid"], entry["ticks"], run_dir(rid)):
                raise UserError(f"run {rid}: process {entry['pid']} on record is not a job the scheduler started "
                                f"for {run_dir(rid)} (start time or command line differ, or it is gone); nothing "
                                f"was signalled")
            state["active"][rid] = entry
        if entry.get("host") not in (None, procs.HOST):
            raise UserError(f"run {rid} runs on host {entry.get('host')}; cancel it there")
        if not procs.is_job_process(entry.get("pid"), entry.get("ticks"), run_dir(rid)):
            if procs.pid_alive(entry.get("pid")):
                raise UserError(f"run {rid}: process {entry.get('pid')} on record is not the job the scheduler "
                                f"started for {run_dir(rid)} (start time or command line differ); nothing was "
                                f"signalled")
        entry["cancel"] = {"requested_at": time.time(), "deadline": time.time() + grace, "grace_s": grace,
                           "by": _whoami()}
        scheduler.save_state(state)
    pgid = entry.get("pgid")
    rdir = run_dir(rid)
    procs.signal_job(entry.get("pid"), entry.get("ticks"), rdir, signal.SIGTERM)
    if not wait_for_end:
        return "cancelling"
    if not procs.wait_group_gone(pgid, grace):
        if not procs.signal_job(entry.get("pid"), entry.get("ticks"), rdir, signal.SIGKILL):
            procs.kill_job_members(pgid, rdir)
        procs.wait_group_gone(pgid, 10.0)
    # the worker may still be writing its final status; give it a moment, then let the scheduler settle the rest
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        scheduler._reap()
        if not procs.pid_alive(entry.get("pid"), entry.get("ticks")):
            break
        time.sleep(0.05)
    scheduler.schedule()
    status, _ = scheduler.last_status(rid)
    return status or "cancelled"


# ---------------------------------------------------------------------------------------------------------------
# resume


def find_checkpoint(rid: str, _seen: tuple = ()) -> Path | None:
    """The checkpoint a resume of ``rid`` continues from: in ``checkpoints/``, a file named ``last.*`` /
    ``latest.*`` if any, else the newest checkpoint file that is not a ``best*`` copy, else the newest of any;
    when the run saved none, the checkpoint its own resume started from (a chain of resumes)."""
    ckdir = run_dir(rid) / "checkpoints"
    files = [p for p in ckdir.glob("*") if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES] if ckdir.is_dir() else []
    if files:
        def newest(ps):
            return max(ps, key=lambda p: (p.stat().st_mtime_ns, p.name))
        last = [p for p in files if p.stem.lower() in ("last", "latest") or p.stem.lower().startswith("last")]
        if last:
            return newest(last)
        not_best = [p for p in files if not p.stem.lower().startswith("best")]
        return newest(not_best or files)
    job = scheduler.read_job(rid)
    if job.get("resume_from") and Path(job["resume_from"]).exists():
        return Path(job["resume_from"])
    parent = job.get("parent_run")
    if parent and parent not in _seen and job.get("parent_relation") == "resume":
        return find_checkpoint(parent, (*_seen, rid))
    return None


def restart(rid: str) -> str:
    """Queue an ended run that saved no checkpoint again, under the same run id (its event file goes on with a new
    ``queued`` status; the job starts from the beginning). Returns ``rid``."""
    rdir = _require_run(rid)
    status, _ = scheduler.last_status(rid)
    if status not in FINAL_STATUSES:
        raise UserError(f"run {rid} is {status}; only an ended run can be restarted")
    try:
        data = yaml.safe_load((rdir / "config.yaml").read_text(encoding="utf-8")) or {}
        cfg = config_from_dict(data, {k: str(rdir / "config.yaml") for k in data})
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{rdir / 'config.yaml'}: cannot read the run's config ({exc})") from exc

    validate_launch(cfg)
    gpus = int(cfg.runtime.gpus)
    restarts = int(scheduler.read_job(rid).get("restarts", 0) or 0) + 1
    scheduler.write_job(rid, resume_from=None, restarts=restarts, restarted_at=time.time(), pid=None, ticks=None)
    EventWriter(rdir).status("queued", message=f"restarted from the beginning by {_whoami()} (attempt "
                                                f"{restarts + 1}): the run saved no checkpoint to resume from")
    scheduler.enqueue(rid, gpus)
    scheduler.schedule()
    return rid


def resume(rid: str, overrides: list[str] | None = None, gpus: int | None = None,
           checkpoint: str | Path | None = None) -> str:
    """Queue a new run that continues ``rid`` from its last checkpoint -- or from ``checkpoint`` (e.g. its
    ``best.pth`` when ``last.pth`` is damaged) -- with the same config, plus ``overrides`` (e.g.
    ``train.epochs=100``). The parent must have ended. A run that saved no checkpoint at all is restarted under
    its own run id instead (:func:`restart`). Returns the run id that continues."""
    rdir = _require_run(rid)
    status, _ = scheduler.last_status(rid)
    if status not in FINAL_STATUSES:
        raise UserError(f"run {rid} is {status}; only an ended run can be resumed (cancel it first: "
                        f"`mapsage runs cancel {rid}`)")
    if checkpoint is not None:
        ckpt = resolve_path(str(checkpoint))
        if not ckpt.is_file():
            raise CheckpointError(f"--checkpoint: {ckpt} not found; pick one of {rdir / 'checkpoints'} "
                                  f"({', '.join(sorted(p.name for p in (rdir / 'checkpoints').glob('*.pth'))) or 'none'})")
        if ckpt.suffix in (".pth", ".pt", ".ckpt"):
            from mapsage.train.checkpoint import load_checkpoint

            load_checkpoint(ckpt)  # readable, safe and a training checkpoint: refused now, not in the job
    else:
        ckpt = find_checkpoint(rid)
    if ckpt is None:
        if overrides or gpus is not None:
            raise CheckpointError(f"run {rid} saved no checkpoint, so it restarts under its own id with its own "
                                  f"config; drop --set/--gpus, or launch a changed config: `mapsage run "
                                  f"{rdir / 'config.yaml'} --set ...`")
        return restart(rid)
    path = rdir / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the run's config ({exc})") from exc
    overrides = list(overrides or [])
    if gpus is not None:
        overrides.append(f"runtime.gpus={int(gpus)}")
    origins: dict = {}
    apply_overrides(data, origins, overrides)
    meta = dict(data.get("meta") or {})
    for key in ("config_hash", "code_commit", "resolved_at", "run_name"):
        meta.pop(key, None)
    meta.update(resumed_from_run=rid, resumed_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    data["meta"] = meta
    cfg = config_from_dict(data, {k: (str(path) if v != "--set" else v) for k, v in origins.items()})
    return submit(cfg, parent_run=rid, parent_relation="resume", resume_from=ckpt)


def log_tail(rid: str, lines: int = 50) -> str:
    """The last lines of the run's ``stdout.log``."""
    path = _require_run(rid) / scheduler.STDOUT_FILE
    if not path.exists():
        return ""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - max(65536, lines * 400)))
        text = fh.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:]) if lines else text


def exit_code(status: str | None) -> int:
    return EXIT_CODES.get(status or "", 1)


__all__ = ["launch", "submit", "cancel", "resume", "restart", "live_status", "wait", "find_checkpoint", "log_tail",
           "exit_code", "EXIT_CODES", "RunNotFound"]
