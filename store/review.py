"""Review verdicts, written by the app's review page (never from event files)."""
from __future__ import annotations

import getpass
import time

from mapsage.errors import UserError
from mapsage.registries import VERDICTS

from .db import write_connection
from .schema import ensure_schema

__all__ = ["VERDICTS", "add_verdict"]       # VERDICTS: the registry's (mapsage/registries.py), re-exported


def add_verdict(run_id: str, tile: str, verdict: str, comment: str = "", reviewer: str | None = None,
                variant: str | None = None, baseline: str | None = None) -> int:
    """Record a reviewer's verdict on one tile of a run (``variant`` against ``baseline``, e.g. ``sam+crf`` against
    ``raw``). Returns the verdict id. Verdicts are appended; readers can take the latest per tile."""
    if verdict not in VERDICTS:
        raise UserError(f"verdict must be one of {list(VERDICTS)}, got {verdict!r}")
    if not run_id or not tile:
        raise UserError("a verdict needs the run id and the tile it is about")
    if reviewer is None:
        try:
            reviewer = getpass.getuser()
        except (KeyError, OSError):
            reviewer = "unknown"
    ensure_schema()
    with write_connection() as con:
        row = con.execute(
            "INSERT INTO verdicts (run_id, tile, variant, baseline, verdict, comment, reviewer, ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING verdict_id",
            [run_id, tile, variant, baseline, verdict, comment or "", reviewer, time.time()]).fetchone()
    return int(row[0])
