"""Where the store lives and how processes share it.

DuckDB allows one read-write process per database file, and a read-only open fails while another process holds the
file read-write. The store therefore never lets two connections race for the file: every connection is taken under
an ``fcntl`` lock on ``workspace/.locks/db.lock`` -- shared for readers, exclusive for the (short) write
transactions of ingest and verdicts -- with a writer *turnstile* (``db.gate``) so that a steady stream of readers
cannot starve a writer. Locks are polled with jittered exponential backoff up to a bounded deadline; a DuckDB lock
error caused by a foreign process (e.g. someone's ``duckdb`` shell on the file) is retried the same way. What a user
can see in the worst case is :class:`StoreBusy` after the deadline, never a raw DuckDB lock error.

Write connections are short-lived: open, run the transaction, close (closing checkpoints the WAL into the file,
so a reader that opens afterwards sees the data). A process keeps its last read-only connection, with the shared
lock it was opened under, while it is useful (see :class:`_ReaderCache`): it gives both up as soon as a writer
waits at the turnstile, so a reader never blocks a writer for more than the query it is running.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Iterator

import duckdb

from mapsage.errors import UserError
from mapsage.workspace import db_path

from .locks import LockTimeout, acquire, file_lock, is_held, lock_path, locks_dir, release, sleep_backoff  # noqa: F401

DEFAULT_READ_TIMEOUT_S = 30.0
DEFAULT_WRITE_TIMEOUT_S = 120.0


class StoreError(UserError):
    """A store problem the user can act on (newer schema, unreadable database file)."""


class StoreBusy(StoreError):
    """The store stayed locked longer than the bounded wait."""


def _timeout(kind: str) -> float:
    env = os.environ.get("MAPSAGE_STORE_TIMEOUT_S")
    if env:
        try:
            return float(env)
        except ValueError:
            pass
    return DEFAULT_READ_TIMEOUT_S if kind == "read" else DEFAULT_WRITE_TIMEOUT_S


def _is_lock_conflict(exc: BaseException) -> bool:
    text = str(exc).lower()
    return ("lock" in text and ("conflict" in text or "could not set" in text)) or \
        "different configuration" in text


def _open(path: Path, read_only: bool, deadline: float) -> duckdb.DuckDBPyConnection:
    delay = 0.002
    new = not path.exists()
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if new and not read_only:
                _forget_half_created(path, exc)
            if not _is_lock_conflict(exc):
                raise StoreError(f"{path}: cannot open the store database: {exc}. If the file is damaged, move it "
                                 f"away; `mapsage runs ingest --rebuild` rebuilds it from the run folders.") from exc
            if time.monotonic() >= deadline:
                raise StoreBusy(f"{path}: the database is locked by another program ({exc}); close that program "
                                f"(e.g. a duckdb shell on the file) or raise MAPSAGE_STORE_TIMEOUT_S") from exc
            delay = sleep_backoff(delay)


def _forget_half_created(path: Path, exc: BaseException) -> None:
    """A store file this call began to create but could not finish (a full disk) is removed with its WAL, so the
    next open after space is freed creates it cleanly instead of finding "not a valid DuckDB database file"."""
    from mapsage.diskspace import free_mb, is_disk_full

    for p in (path, path.with_name(path.name + ".wal")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    if is_disk_full(exc) or "No space left" in str(exc):
        raise StoreError(f"disk full in {path.parent}: {free_mb(path.parent):.1f} MB free; cannot create the store "
                         f"{path.name}. Free space there; the run folders keep every record") from exc


def _pass_gate(path: Path, deadline: float) -> None:
    # the turnstile: a waiting writer holds it exclusively, so new readers queue behind that writer
    release(acquire(lock_path("db.gate"), exclusive=False, timeout=max(0.0, deadline - time.monotonic())))


class _ReaderCache:
    """One read-only connection a process keeps open between queries (opening a DuckDB database costs tens of
    milliseconds; the app queries many times a second).

    The connection is kept together with the shared ``db.lock`` it was opened under, so no write can happen while
    it is open and it never shows stale data. It is closed -- and the lock released -- as soon as a writer waits
    at the turnstile (checked before each reuse and every ``poll_s`` by a daemon thread), after ``keep_s`` idle
    seconds, when the workspace changes, and in a forked child."""

    poll_s = 0.03

    def __init__(self):
        self.mutex = threading.Lock()
        self.con: duckdb.DuckDBPyConnection | None = None
        self.fd: int | None = None
        self.key: tuple | None = None
        self.gate: Path | None = None
        self.users = 0
        self.last_used = 0.0
        self.thread: threading.Thread | None = None
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)
        atexit.register(self.close)

    @staticmethod
    def keep_s() -> float:
        try:
            return float(os.environ.get("MAPSAGE_STORE_READER_KEEP_S", "5"))
        except ValueError:
            return 5.0

    def _after_fork(self) -> None:
        # the child must neither use the parent's DuckDB instance nor keep its lock alive; the connection object
        # is parked, not closed (closing the parent's instance from a forked child is not safe)
        if self.con is not None:
            _parked_after_fork.append(self.con)
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.mutex = threading.Lock()
        self.con = self.fd = self.key = self.gate = self.thread = None
        self.users = 0

    def close(self) -> None:
        with self.mutex:
            self._close_locked()

    def _close_locked(self) -> None:
        con, fd = self.con, self.fd
        self.con = self.fd = self.key = self.gate = None
        if con is not None:
            with contextlib.suppress(Exception):
                con.close()
        if fd is not None:
            release(fd)

    def drop_idle(self) -> bool:
        """Close the cached connection if nobody uses it; True when none is left open."""
        with self.mutex:
            if self.con is not None and self.users == 0:
                self._close_locked()
            return self.con is None

    def borrow(self, key: tuple) -> duckdb.DuckDBPyConnection | None:
        with self.mutex:
            if self.con is None or self.key != key or is_held(self.gate):
                if self.con is not None and self.users == 0:
                    self._close_locked()
                return None
            self.users += 1
            return self.con

    def give_back(self) -> None:
        with self.mutex:
            self.users -= 1
            self.last_used = time.monotonic()

    def adopt(self, key: tuple, con: duckdb.DuckDBPyConnection, fd: int) -> bool:
        """Keep a freshly opened connection (and its lock) for later reuse; False if one is cached already."""
        if self.keep_s() <= 0:
            return False
        with self.mutex:
            if self.con is not None:
                return False
            self.con, self.fd, self.key, self.users = con, fd, key, 1
            self.gate = lock_path("db.gate")
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._reaper, name="mapsage-store-reader", daemon=True)
                self.thread.start()
            return True

    def _reaper(self) -> None:
        while True:
            time.sleep(self.poll_s)
            with self.mutex:
                if self.con is None:
                    self.thread = None
                    return
                if self.users == 0 and (time.monotonic() - self.last_used > self.keep_s()
                                        or is_held(self.gate)):
                    self._close_locked()


_parked_after_fork: list = []
_readers = _ReaderCache()


@contextlib.contextmanager
def write_connection(timeout: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """An exclusive read-write connection, held as briefly as the caller's block."""
    timeout = _timeout("write") if timeout is None else timeout
    path = db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    deadline = start + timeout
    try:
        gate = acquire(lock_path("db.gate"), exclusive=True, timeout=timeout)
        try:
            # our own process's cached reader would otherwise hold the lock we wait for
            _readers.drop_idle()
            db = acquire(lock_path("db"), exclusive=True, timeout=max(0.0, deadline - time.monotonic()))
        finally:
            release(gate)
    except LockTimeout as exc:
        raise StoreBusy(f"{path}: the store stayed busy for {timeout:.0f} s (another process is writing); "
                        f"try again, or raise MAPSAGE_STORE_TIMEOUT_S") from exc
    try:
        con = _open(path, read_only=False, deadline=deadline)
        try:
            yield con
        finally:
            con.close()
    finally:
        release(db)


@contextlib.contextmanager
def read_connection(timeout: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection (a cursor on the process's cached one when it is still valid). Waits (bounded)
    while a writer holds the store; raises :class:`StoreBusy` after ``timeout`` seconds."""
    timeout = _timeout("read") if timeout is None else timeout
    path = db_path()
    try:
        key = (str(path), path.stat().st_ino)
    except FileNotFoundError:
        key = (str(path), None)
    cached = _readers.borrow(key)
    if cached is not None:
        cur = cached.cursor()
        try:
            yield cur
        finally:
            cur.close()
            _readers.give_back()
        return
    deadline = time.monotonic() + timeout
    try:
        _pass_gate(path, deadline)
        fd = acquire(lock_path("db"), exclusive=False, timeout=max(0.0, deadline - time.monotonic()))
    except LockTimeout as exc:
        raise StoreBusy(f"{path}: the store stayed busy for {timeout:.0f} s (a long ingest?); try again, or raise "
                        f"MAPSAGE_STORE_TIMEOUT_S") from exc
    try:
        con = _open(path, read_only=True, deadline=deadline)
    except BaseException:
        release(fd)
        raise
    if _readers.adopt(key, con, fd):
        cur = con.cursor()
        try:
            yield cur
        finally:
            cur.close()
            _readers.give_back()
        return
    try:
        yield con
    finally:
        con.close()
        release(fd)
