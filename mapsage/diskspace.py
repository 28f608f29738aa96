"""Disk space facts for runs: recognising a full disk, wording it, and cleaning half-written temporary files.

A full disk is reported as ``disk full in PATH: N MB free, M MB needed`` (a
:class:`~mapsage.errors.DiskFullError`), and the temporary file that could not be finished is removed so that the
space it took is free again for the final status and for every reader."""
from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

from .errors import DiskFullError

_TMP = re.compile(r"^\..+\.tmp(\d+)$")


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC / EDQUOT, also when torch wraps it in a RuntimeError ('No space left on device')."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "No space left on device" in text or "Disk quota exceeded" in text or "file write failed" in text:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def free_mb(path: str | Path) -> float:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free / 2**20
    except OSError:
        return float("nan")


def mount_point(path: str | Path) -> Path:
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def disk_full_error(path: str | Path, needed_bytes: int | None = None) -> DiskFullError:
    """``disk full in PATH: N MB free, M MB needed`` for a write into ``path`` that ran out of space."""
    need = f", {needed_bytes / 2**20:.1f} MB needed" if needed_bytes else ""
    return DiskFullError(f"disk full in {path}: {free_mb(path):.1f} MB free{need} (filesystem {mount_point(path)}); "
                         f"free space there or move the workspace (MAPSAGE_WORKSPACE), then resume the run")


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie is not running
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete ``.<name>.tmp<pid>`` files in ``folder`` whose writer (pid) no longer runs. Returns what went."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_running(int(m.group(1))):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


__all__ = ["is_disk_full", "free_mb", "disk_full_error", "remove_stale_temps", "mount_point"]
