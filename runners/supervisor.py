"""The job supervisor: ``python -m runners.supervisor RUN_DIR -- WORKER_COMMAND...``.

The scheduler starts this small process (the leader of the job's own session and process group) instead of the
worker itself; it starts the worker in the same process group, waits for it and, the moment it ends, makes sure
the run's event file has a final status, with nobody else reading the store:

* the worker wrote its own final status (succeeded / failed / cancelled): nothing to add;
* the worker was killed by a signal (the OOM killer's SIGKILL, a ``kill -9``) or exited without a final status:
  ``died``, naming the signal or exit code and the last lines of ``stdout.log``; ``cancelled`` when a cancel
  (SIGTERM to the group) was asked for.

Then it kills what is left of the group (data-loader workers of a killed worker), removes the worker's half-written
temporary checkpoints, frees the job's slot in the scheduler and ingests the run. SIGTERM / SIGINT reach the
worker through the group; the supervisor only notes them (a cancel) and keeps waiting.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mapsage.diskspace import remove_stale_temps
from mapsage.events import EVENTS_FILE, FINAL_STATUSES, EventWriter, read_events

from . import procs


def _say(msg: str) -> None:
    print(f"[supervisor {os.getpid()}] {time.strftime('%H:%M:%S')} {msg}", flush=True)


def _final_since(rdir: Path, offset: int) -> str | None:
    """The final status written since ``offset`` (where this attempt's records begin), if any."""
    records, _ = read_events(rdir / EVENTS_FILE, offset)
    finals = [r.get("status") for r in records if r.get("type") == "status" and r.get("status") in FINAL_STATUSES]
    return finals[-1] if finals else None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tail(rdir: Path, lines: int = 15) -> str:
    try:
        with open(rdir / "stdout.log", "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            return "\n".join(fh.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


def _clean_temps(rdir: Path) -> list[Path]:
    removed = []
    for folder in (rdir / "checkpoints", rdir):
        removed += remove_stale_temps(folder)
    return removed


def _write_final(rdir: Path, status: str, message: str, traceback: str | None) -> None:
    """Append the final status; on a full disk free the run's temporary files first and try again."""
    for attempt in range(3):
        try:
            EventWriter(rdir).status(status, message=message, traceback=traceback)
            return
        except OSError as exc:
            _say(f"could not write the final status ({exc}); attempt {attempt + 1}")
            _clean_temps(rdir)
            time.sleep(0.5)


def supervise(rdir: Path, cmd: list[str]) -> int:
    cancel = {"at": None}

    def _note(signum, _frame):
        if cancel["at"] is None:
            cancel["at"] = time.time()
            _say(f"received {signal.Signals(signum).name}: the worker stops on its own (same process group)")

    signal.signal(signal.SIGTERM, _note)
    signal.signal(signal.SIGINT, _note)
    start = _size(rdir / EVENTS_FILE)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, close_fds=True)   # same group, same log
    _say(f"worker pid {proc.pid} started: {' '.join(cmd)}")
    while True:
        try:
            rc = proc.wait()
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for old interpreters
            continue
    # whatever the worker left in the group (data-loader workers of a killed worker) goes with it
    mine = os.getpid()
    rest = [p for p in procs.group_members(os.getpgid(0)) if p != mine]
    for pid in rest:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    removed = _clean_temps(rdir)
    if removed:
        _say(f"removed half-written files: {', '.join(p.name for p in removed)}")
    status = _final_since(rdir, start)
    if status is None:
        how = (f"was killed by {signal.Signals(-rc).name}" if rc < 0 and -rc in signal.valid_signals()
               else f"exited with code {rc}")
        tail = _tail(rdir)
        if cancel["at"] is not None:
            status, message = "cancelled", f"cancelled: the worker (pid {proc.pid}) {how} before writing its status"
        else:
            status = "died"
            message = (f"the job's worker (pid {proc.pid} on {procs.HOST}) {how} without a final status; resume it "
                       f"from its last checkpoint with `mapsage runs resume {rdir.name}`")
        _say(f"run {rdir.name} {status}: {message}")
        _write_final(rdir, status, message, ("last lines of stdout.log:\n" + tail) if tail else None)
    try:
        from .scheduler import schedule

        schedule(release=rdir.name, release_pgid=os.getpgid(0))
    except Exception as exc:  # noqa: BLE001 - the next status read schedules instead
        _say(f"scheduler call failed: {type(exc).__name__}: {exc}")
    try:
        import store

        store.ingest_run(rdir.name, wait=True, timeout=60.0)
    except Exception as exc:  # noqa: BLE001 - the event file stays the truth
        _say(f"store ingest skipped: {type(exc).__name__}: {exc}")
    return rc if rc >= 0 else 128 - rc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m runners.supervisor RUN_DIR -- COMMAND...", file=sys.stderr)
        return 2
    return supervise(Path(argv[0]).resolve(), argv[2:])


if __name__ == "__main__":
    sys.exit(main())
