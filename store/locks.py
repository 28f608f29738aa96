"""Cross-process locks (``fcntl.flock`` on files under ``workspace/.locks/``), with bounded, jittered polling.

Light on purpose (no duckdb, no pandas): the scheduler takes its lock through this module."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import time
from pathlib import Path
from typing import Iterator

from mapsage.workspace import workspace_root


def locks_dir() -> Path:
    d = workspace_root() / ".locks"
    d.mkdir(parents=True, exist_ok=True)
    return d


def lock_path(name: str) -> Path:
    return locks_dir() / f"{name}.lock"


class LockTimeout(TimeoutError):
    pass


def sleep_backoff(delay: float) -> float:
    time.sleep(delay * (0.5 + random.random()))
    return min(delay * 2.0, 0.05)


def acquire(path: Path, exclusive: bool = True, timeout: float | None = 30.0) -> int:
    """Take an ``flock`` on ``path`` and return the file descriptor holding it (give it to :func:`release`).

    ``timeout=None`` waits forever, ``timeout=0`` tries once; :class:`LockTimeout` when the deadline passes. Each
    call opens its own file description, so two threads of one process exclude each other like two processes do.
    The descriptor is not inherited by exec'd children."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.001
    try:
        while True:
            try:
                fcntl.flock(fd, mode)
                return fd
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeout(f"{path}: still locked after {timeout:.1f} s") from None
                delay = sleep_backoff(delay)
    except BaseException:
        os.close(fd)
        raise


def release(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_held(path: Path) -> bool:
    """True when another holder has ``path`` locked exclusively (a shared try-lock fails). Creates nothing."""
    try:
        fd = os.open(str(path), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)   # closing the descriptor drops the probe lock
    return False


@contextlib.contextmanager
def file_lock(path: Path, exclusive: bool = True, timeout: float | None = 30.0) -> Iterator[bool]:
    """Hold an ``flock`` on ``path`` for the block (see :func:`acquire`)."""
    fd = acquire(path, exclusive, timeout)
    try:
        yield True
    finally:
        release(fd)
