"""Reads behind the review queue: the per-tile files its uncertainty scores come from, and which tiles a reviewer
has already seen.

* :func:`queue_files` -- the latest ``prob`` (class probabilities, ``<tile>_prob.npz``), ``pred`` and ``refined``
  (id masks) artifact per (tile, kind, variant) of one run, with ``abs_path`` resolved against the run folder.
* :func:`reviewed_tiles` -- per tile of one run: how many verdicts it has had, the latest one, by whom and when.
"""
from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from mapsage.workspace import run_dir

from .db import read_connection
from .schema import ensure_schema

QUEUE_KINDS = ("prob", "pred", "refined")
FILE_COLUMNS = ["tile", "kind", "variant", "abs_path", "seq"]
REVIEWED_COLUMNS = ["tile", "n_verdicts", "verdict", "reviewer", "time"]


def _query(sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
    ensure_schema()
    with read_connection() as con:
        return con.execute(sql, list(params)).df()


def queue_files(run_id: str) -> pd.DataFrame:
    """The newest probability and mask file per (tile, kind, variant) of a run, sorted by tile, kind, variant."""
    from pathlib import Path


    kinds = ", ".join(f"'{k}'" for k in QUEUE_KINDS)
    df = _query(f"""
        SELECT tile, kind, coalesce(variant, '') AS variant, path, seq FROM artifacts
        WHERE run_id = ? AND kind IN ({kinds}) AND tile IS NOT NULL AND path IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY tile, kind, coalesce(variant, '') ORDER BY seq DESC) = 1
        ORDER BY tile, kind, variant
    """, [run_id])
    if df.empty:
        return pd.DataFrame(columns=FILE_COLUMNS)
    base = run_dir(run_id)
    df["abs_path"] = [str(p if Path(p).is_absolute() else base / p) for p in df["path"]]
    df["tile"] = df["tile"].astype(str)
    return df[FILE_COLUMNS].reset_index(drop=True)


def reviewed_tiles(run_id: str) -> pd.DataFrame:
    """Tiles of a run with at least one verdict (any variant): ``tile, n_verdicts, verdict`` (the latest),
    ``reviewer``, ``time`` (UTC)."""
    df = _query("""
        SELECT tile, count(*) AS n_verdicts, arg_max(verdict, ts) AS verdict, arg_max(reviewer, ts) AS reviewer,
               max(ts) AS ts
        FROM verdicts WHERE run_id = ? GROUP BY tile ORDER BY tile
    """, [run_id])
    if df.empty:
        return pd.DataFrame(columns=REVIEWED_COLUMNS)
    df["time"] = pd.to_datetime(df["ts"], unit="s", utc=True)
    df["n_verdicts"] = df["n_verdicts"].astype(int)
    return df[REVIEWED_COLUMNS]
