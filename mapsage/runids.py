"""Run ids are names of folders directly inside ``workspace/runs/``, and nothing else.

Every place that turns a run id from outside (a CLI argument, an app query parameter, an API call, a job file)
into a path goes through :func:`check_run_id` / :func:`run_path` (``mapsage.workspace.run_dir`` calls it): an id
is one path component of word characters, ``-`` and ``.`` (never ``.``/``..``, a separator, an absolute path, a
glob character or a NUL), and an existing run folder must resolve inside the runs folder (a symlink out of it is
refused)."""
from __future__ import annotations

import re
from pathlib import Path

from .errors import UserError

_ID = re.compile(r"^[^\W][\w.\-]{0,254}$")


class RunIdError(UserError):
    """A run id that does not name a folder inside workspace/runs/."""


def check_run_id(run_id) -> str:
    """Return ``run_id`` when it is a well-formed run id, else raise :class:`RunIdError`."""
    if not isinstance(run_id, str) or not _ID.match(run_id) or run_id in (".", ".."):
        raise RunIdError(f"{run_id!r} is not a run id: a run id is the name of one folder inside workspace/runs/ "
                         f"(letters, digits, '_', '-', '.'; no '/', '..' or absolute paths); see `mapsage runs "
                         f"list`")
    return run_id


def run_path(runs_root: Path, run_id) -> Path:
    """``runs_root / run_id`` after checking the id, and that an existing folder does not lead out of
    ``runs_root`` through a symlink."""
    check_run_id(run_id)
    path = runs_root / run_id
    if path.is_symlink() or path.exists():
        try:
            path.resolve().relative_to(runs_root.resolve())
        except ValueError:
            raise RunIdError(f"{path}: the run folder leads outside {runs_root} (a symlink to "
                             f"{path.resolve()}); refused") from None
    return path


def is_run_id(run_id) -> bool:
    try:
        check_run_id(run_id)
        return True
    except RunIdError:
        return False


__all__ = ["RunIdError", "check_run_id", "run_path", "is_run_id"]
