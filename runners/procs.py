"""Process facts on this host: is a pid (still the same process) alive, which processes are in a group, signals.

A pid alone is not an identity (pids are reused), so a job records the process's start time in clock ticks
(``/proc/<pid>/stat`` field 22) next to its pid; a zombie counts as dead."""
from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

HOST = socket.gethostname()
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    # "pid (comm) state ppid pgrp ..." -- comm may contain spaces and parentheses
    return text[text.rfind(")") + 2:].split()


def start_ticks(pid: int) -> int | None:
    f = _stat_fields(pid)
    return int(f[19]) if f and len(f) > 19 else None


def pid_alive(pid: int | None, ticks: int | None = None) -> bool:
    """True when ``pid`` runs (not a zombie) and, given ``ticks``, is the process that started then."""
    if not pid:
        return False
    if _PROC.exists():
        f = _stat_fields(int(pid))
        if f is None or f[0] in ("Z", "X"):
            return False
        return ticks is None or int(f[19]) == int(ticks)
    try:  # pragma: no cover - non-Linux fallback
        os.kill(int(pid), 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def group_members(pgid: int | None) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    if not pgid:
        return []
    if not _PROC.exists():  # pragma: no cover
        try:
            os.killpg(int(pgid), 0)
            return [int(pgid)]
        except (ProcessLookupError, PermissionError):
            return []
    out = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        f = _stat_fields(int(entry.name))
        if f and len(f) > 2 and f[0] not in ("Z", "X") and int(f[2]) == int(pgid):
            out.append(int(entry.name))
    return out


def signal_group(pgid: int | None, sig: int) -> bool:
    """Send ``sig`` to a process group; False when the group is gone."""
    if not pgid or int(pgid) <= 1 or int(pgid) == os.getpgid(0):
        return False  # never signal our own group (or init)
    try:
        os.killpg(int(pgid), sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def wait_group_gone(pgid: int | None, timeout: float, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return True
        time.sleep(poll)
    return not group_members(pgid)


def cmdline(pid: int | None) -> list[str]:
    """The process's command line (empty when it is gone or unreadable)."""
    if not pid:
        return []
    try:
        raw = (_PROC / str(int(pid)) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def is_job_process(pid: int | None, ticks: int | None, run_dir) -> bool:
    """True when ``pid`` is the very process the scheduler started for ``run_dir``: alive, started at the recorded
    clock tick ``ticks`` (a reused pid has another start time) and running a command that names the run folder.
    A record without a start time proves nothing and gets False."""
    if not pid or ticks is None or not pid_alive(pid, ticks):
        return False
    return str(run_dir) in cmdline(pid)


def job_members(pgid: int | None, run_dir) -> list[int]:
    """Live members of a process group whose command line names ``run_dir`` (the job's supervisor, worker and
    its forked data-loader workers); nothing of a group the scheduler did not start."""
    return [p for p in group_members(pgid) if str(run_dir) in cmdline(p)]


def signal_job(pid: int | None, ticks: int | None, run_dir, sig: int) -> bool:
    """Signal the job's process group, only after :func:`is_job_process` proves the group leader is the job's."""
    if not is_job_process(pid, ticks, run_dir):
        return False
    return signal_group(pid, sig)


def kill_job_members(pgid: int | None, run_dir) -> int:
    """SIGKILL the members of the job's group that are the job's (see :func:`job_members`)."""
    n = 0
    for p in job_members(pgid, run_dir):
        try:
            os.kill(p, signal.SIGKILL)
            n += 1
        except OSError:
            pass
    return n
