"""Small read queries the app needs that the general query set does not offer, through the store's own
connection helpers (short-lived read-only connections, bounded waits).

* ``evaluated_splits()``: the splits that have at least one evaluation (the Runs page's split selector) --
  ``SELECT DISTINCT`` instead of reading every evaluation row (100,000 rows with 1,000 runs x 100 epochs).
"""
from __future__ import annotations

from .db import read_connection
from .schema import ensure_schema


def evaluated_splits() -> list[str]:
    """Distinct ``split`` values of the evaluations, ``val`` first, then alphabetical."""
    ensure_schema()
    with read_connection() as con:
        rows = con.execute("SELECT DISTINCT split FROM evaluations WHERE split IS NOT NULL").fetchall()
    return sorted((r[0] for r in rows), key=lambda s: (s != "val", s))
