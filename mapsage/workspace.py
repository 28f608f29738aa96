"""Where runtime data lives: ``workspace/`` (git-ignored) or ``$MAPSAGE_WORKSPACE``.

Layout: ``mapsage.duckdb``, ``runs/<run_id>/{config.yaml, events.jsonl, stdout.log, checkpoints/, predictions/}``.
An empty or missing workspace is a valid state."""
from __future__ import annotations

import os
from pathlib import Path

from .runids import run_path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def workspace_root() -> Path:
    env = os.environ.get("MAPSAGE_WORKSPACE")
    return Path(env).expanduser().resolve() if env else PROJECT_ROOT / "workspace"


def runs_dir() -> Path:
    return workspace_root() / "runs"


def run_dir(run_id: str) -> Path:
    """``runs/<run_id>``; a run id that is not one folder inside ``runs/`` raises ``RunIdError``
    (``mapsage.runids``)."""

    return run_path(runs_dir(), run_id)


def db_path() -> Path:
    return workspace_root() / "mapsage.duckdb"
