"""External scores: a benchmark's figure for a run (e.g. LoveDA's CodaLab test mIoU), recorded by hand
(``mapsage runs score`` or the app's form), never from event files; a rebuild keeps them.

Values are stored as fractions (0.524); :func:`add_external_score` takes points (52.4) or a fraction.
:func:`val_test_gaps` sets the latest external score of each run beside its best validation figure: the gap
between what validation promised and what the benchmark measured."""
from __future__ import annotations

import getpass
import time
from typing import Optional, Sequence

import pandas as pd

from mapsage.errors import UserError
from mapsage.metric_names import HEADLINE

from .db import write_connection
from .schema import ensure_schema

METRICS = HEADLINE          # a benchmark's figure is one of the headline five (mapsage/metric_names.py)


def as_fraction(value: float) -> float:
    """52.4 (points) or 0.524 (a fraction) -> 0.524; refuses what is neither."""
    v = float(value)
    if not 0.0 <= v <= 100.0:
        raise UserError(f"--value {value}: a score is points between 0 and 100 (52.4) or a fraction (0.524)")
    return v / 100.0 if v > 1.0 else v


def add_external_score(run_id: str, split: str, value: float, source: str, metric: str = "miou",
                       note: str = "", submission: Optional[str] = None, recorded_by: Optional[str] = None) -> int:
    """Record one external score of ``run_id``; returns its id."""
    if not run_id:
        raise UserError("an external score needs the run it belongs to")
    if metric not in METRICS:
        raise UserError(f"--metric {metric!r} is not one of {list(METRICS)}")
    if not split:
        raise UserError("--split names the split the benchmark scored (e.g. test)")
    if not source:
        raise UserError("--source names where the score comes from (e.g. codalab)")
    frac = as_fraction(value)
    if recorded_by is None:
        try:
            recorded_by = getpass.getuser()
        except (KeyError, OSError):
            recorded_by = "unknown"
    ensure_schema()
    with write_connection() as con:
        row = con.execute(
            "INSERT INTO external_scores (run_id, split, metric, value, source, submission, note, recorded_by, ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING score_id",
            [run_id, split, metric, frac, source, submission, note or "", recorded_by, time.time()]).fetchone()
    return int(row[0])


def external_scores(run_id: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Every recorded external score (newest first)."""
    from .queries import _query, _times

    params: list = []
    where = ""
    if run_id is not None:
        ids = [run_id] if isinstance(run_id, str) else list(run_id)
        where = f" WHERE run_id IN ({', '.join('?' * len(ids))})"
        params = ids
    return _times(_query(f"SELECT * FROM external_scores{where} ORDER BY ts DESC, score_id DESC", params))


def val_test_gaps(run_id: str | Sequence[str] | None = None, metric: str = "miou") -> pd.DataFrame:
    """One row per run with an external score of ``metric``: the latest such score per (run, split), the run's best
    validation figure and the gap (external − validation, fractions)."""
    from .queries import _query

    params: list = [metric]
    extra = ""
    if run_id is not None:
        ids = [run_id] if isinstance(run_id, str) else list(run_id)
        extra = f" AND s.run_id IN ({', '.join('?' * len(ids))})"
        params += ids
    col = {"miou": "best_val_miou", "mbiou": "best_val_mbiou"}.get(metric)
    val = f"r.{col}" if col else "NULL"
    return _query(
        "SELECT s.run_id, s.split, s.metric, s.value AS external_value, s.source, s.submission, s.ts, "
        f"{val} AS val_value, s.value - {val} AS gap FROM ("
        "  SELECT *, row_number() OVER (PARTITION BY run_id, split ORDER BY ts DESC, score_id DESC) AS k"
        "  FROM external_scores WHERE metric = ?) s LEFT JOIN runs r ON r.run_id = s.run_id "
        f"WHERE s.k = 1{extra} ORDER BY s.run_id, s.split", params)
