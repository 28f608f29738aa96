"""The job process: ``python -m runners.worker RUN_DIR`` (under ``torchrun`` for multi-GPU jobs).

Loads ``RUN_DIR/config.yaml``, builds a :class:`mapsage.stage.StageContext`, turns SIGTERM / SIGINT into
``ctx.request_stop()``, beats heartbeats from a thread (and ingests its own events into the store now and then),
calls the stage function of ``stage.kind`` and writes the final status: ``succeeded``, ``cancelled`` (a stop was
requested) or ``failed`` with the traceback. Rank 0 alone writes events; other ranks get a ``NullEvents``.
Exit code: 0 succeeded, 1 failed, 3 cancelled.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import yaml

from mapsage.errors import UserError
from mapsage.events import EventWriter, NullEvents

from . import procs
from .executors import stop_status
from .settings import load_settings


def _say(msg: str) -> None:
    print(f"[worker {os.getpid()}] {time.strftime('%H:%M:%S')} {msg}", flush=True)


class _Beater(threading.Thread):
    """Plain heartbeats while the stage is busy (the stage's own ``ctx.progress`` beats carry progress), and the
    worker's own periodic ingest into the store."""

    def __init__(self, ctx, interval: float, ingest_every: float):
        super().__init__(name="mapsage-heartbeat", daemon=True)
        self.ctx, self.interval, self.ingest_every = ctx, max(0.05, interval), ingest_every
        self.done = threading.Event()
        self._last_plain = 0.0
        self._last_ingest = time.time()

    def run(self) -> None:
        while not self.done.wait(self.interval / 2):
            now = time.time()
            if now - max(self.ctx._last_beat, self._last_plain) >= self.interval:
                self._last_plain = now
                try:
                    self.ctx.events.heartbeat()
                except OSError as exc:  # a full disk must not kill the stage
                    _say(f"heartbeat failed: {exc}")
            if self.ingest_every > 0 and now - self._last_ingest >= self.ingest_every:
                self._last_ingest = now
                _ingest(self.ctx.run_id, wait=False)


def _ingest(run_id: str, wait: bool) -> None:
    if os.environ.get("MAPSAGE_WORKER_INGEST_S", "") == "0" and not wait:
        return
    try:
        import store

        store.ingest_run(run_id, wait=wait, timeout=60.0 if wait else None)
    except Exception as exc:  # the event file stays the truth; any later ingest picks it up
        _say(f"store ingest skipped: {type(exc).__name__}: {exc}")


def _failure(exc: BaseException, stopped: bool, rdir: Path, tb: str | None) -> tuple[str, str, str | None]:
    """(status, message, traceback) of a stage that raised: cancelled when a stop was asked for, pruned for a
    sweep trial its pruner stopped, failed otherwise (a user error's own line; a full disk said as such)."""
    if stopped:
        return "cancelled", f"stopped on request; the stage ended with {type(exc).__name__}: {exc}", tb
    if getattr(exc, "run_status", None) == "pruned":     # a sweep trial stopped by its pruner
        return "pruned", str(exc), None
    from mapsage.diskspace import disk_full_error, is_disk_full

    if not isinstance(exc, UserError) and is_disk_full(exc):   # a write the stage made itself
        return "failed", str(disk_full_error(getattr(exc, "filename", None) and Path(exc.filename).parent
                                             or rdir)), tb
    return "failed", (str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"), tb


def _finish(run_id: str, rdir: Path, events, status: str, message: str, tb: str | None) -> None:
    """Rank 0's ending: the final status (on a full disk, after freeing this run's half-written files), the job's
    slot freed, the run ingested."""
    for attempt in range(3):
        try:
            events.status(status, message=message, traceback=tb)
            break
        except OSError as exc:
            _say(f"could not write the final status: {exc}")
            from mapsage.diskspace import remove_stale_temps

            for folder in (rdir / "checkpoints", rdir):
                remove_stale_temps(folder)
            tb = None if attempt else tb        # a shorter record the second time
            time.sleep(0.2)
    try:  # free the slot first, so the next queued job starts while this one ingests
        from .scheduler import schedule

        schedule(release=run_id, release_pgid=os.getpgid(0))
    except Exception as exc:  # noqa: BLE001 - the next status read schedules instead
        _say(f"scheduler call failed: {type(exc).__name__}: {exc}")
    _ingest(run_id, wait=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m runners.worker RUN_DIR", file=sys.stderr)
        return 2
    rdir = Path(argv[0]).resolve()
    run_id = rdir.name
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    settings = load_settings()
    events = EventWriter(rdir) if rank == 0 else NullEvents()
    stop = threading.Event()

    def _on_signal(signum, _frame):
        if not stop.is_set():
            _say(f"received {signal.Signals(signum).name}: asking the stage to stop")
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    job = {}
    try:
        job = json.loads((rdir / "job.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        pass
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    _say(f"run {run_id} rank {rank}/{world} starting (CUDA_VISIBLE_DEVICES={gpus or '<none>'})")
    events.status("running", message=f"pid {os.getpid()} on {procs.HOST}" + (f", GPUs {gpus}" if gpus else ""))
    events.emit("run_info", pid=os.getpid(), pgid=os.getpgid(0), host=procs.HOST,
                gpus=[g for g in gpus.split(",") if g], world_size=world, started_at=time.time(),
                python=sys.executable, resume_from=job.get("resume_from"))

    beater = None
    status, message, tb = "failed", "", None
    try:
        from mapsage.config import config_from_dict
        from mapsage.stage import StageContext

        from .stages import resolve

        data = yaml.safe_load((rdir / "config.yaml").read_text(encoding="utf-8"))
        cfg = config_from_dict(data, {k: str(rdir / "config.yaml") for k in data})
        from mapsage.runtime import tune_allocator

        _say(tune_allocator(cfg.runtime.keep_freed_memory))
        fn = resolve(cfg.stage.kind)
        if not job.get("parent_run") and cfg.stage.kind not in ("train", "distill") and cfg.stage.checkpoint:
            from .jobs import run_of_checkpoint  # a stage working on another run's checkpoint: link the two

            parent = run_of_checkpoint(cfg.stage.checkpoint)
            if parent:
                events.emit("run_info", parent_run=parent, parent_relation="checkpoint")
        resume_from = Path(job["resume_from"]) if job.get("resume_from") else None
        ctx = StageContext(cfg=cfg, run_id=run_id, run_dir=rdir, events=events, resume_from=resume_from,
                           rank=rank, world_size=world, heartbeat_every_s=settings.heartbeat_s, _stop=stop)
        if rank == 0:
            beater = _Beater(ctx, settings.heartbeat_s, settings.worker_ingest_s)
            beater.start()
        if resume_from:
            _say(f"resuming from {resume_from}")
        fn(ctx)
        if stop.is_set():
            status, message = "cancelled", "stopped on request (SIGTERM); the stage saved what it had"
        else:
            status, message = "succeeded", ""
    except BaseException as exc:  # noqa: BLE001 - every ending must leave a final status
        tb = traceback.format_exc()
        print(tb, flush=True)
        status, message, tb = _failure(exc, stop.is_set(), rdir, tb)
    finally:
        if beater is not None:
            beater.done.set()
            beater.join(timeout=5)
    if status == "cancelled":          # a cluster job stopped for a requeue is queued again, not cancelled
        status, message = stop_status(run_id, status, message)
    _say(f"run {run_id} {status}" + (f": {message}" if message else ""))
    if rank == 0:
        _finish(run_id, rdir, events, status, message, tb)
    return {"succeeded": 0, "failed": 1, "cancelled": 3, "pruned": 5}.get(status, 3)


if __name__ == "__main__":
    sys.exit(main())
