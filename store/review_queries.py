"""Reads behind the Review page: which runs have masks to review, the layers of each tile, the latest verdicts.

Pandas DataFrames through the store's short-lived read-only connections (``store.db.read_connection``), like
every other read in :mod:`store.queries`; verdicts are written by :func:`store.add_verdict`.

* :func:`review_runs` -- one row per run with prediction masks (artifact kinds ``pred`` / ``refined`` with a tile):
  how many tiles and which variants, whether the image and label are registered, how many tiles have a verdict.
* :func:`review_layers` -- a run's per-tile layers: the latest ``image``, ``label``, ``pred`` and ``refined``
  artifact per (tile, kind, variant), with ``abs_path`` resolved against the run folder and ``meta`` parsed.
* :func:`latest_verdicts` -- the last verdict per tile of one comparison (variant against baseline), by anyone,
  with how many verdicts the tile has had.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from mapsage.event_records import json_dict
from mapsage.workspace import run_dir

from .db import read_connection
from .schema import ensure_schema

MASK_KINDS = ("pred", "refined")
LAYER_KINDS = ("image", "label", "pred", "refined")
REVIEW_RUN_COLUMNS = ["run_id", "name", "kind", "plan_stage", "status", "dataset", "split", "created_at",
                      "n_tiles", "variants", "n_refined", "n_images", "n_labels", "n_reviewed", "n_verdicts"]


def _query(sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
    ensure_schema()
    with read_connection() as con:
        return con.execute(sql, list(params)).df()


def review_runs(run_id: Optional[str | Sequence[str]] = None) -> pd.DataFrame:
    """Runs with prediction masks to review, refinement runs first, then newest first.

    Columns: ``run_id, name, kind, plan_stage, status, dataset, split, created_at`` (UTC), ``n_tiles`` (tiles
    with at least one mask), ``variants`` (sorted list of mask variants, e.g. ``['refine=crf', 'refine=raw']``),
    ``n_refined`` (tiles with a refined mask), ``n_images`` / ``n_labels`` (tiles whose image / label is
    registered), ``n_reviewed`` (tiles with a verdict) and ``n_verdicts``."""
    params: list[Any] = []
    where = ""
    if run_id is not None:
        ids = [run_id] if isinstance(run_id, str) else list(run_id)
        if not ids:
            return pd.DataFrame(columns=REVIEW_RUN_COLUMNS)
        where = f" AND a.run_id IN ({', '.join('?' for _ in ids)})"
        params.extend(ids)
    kinds = ", ".join(f"'{k}'" for k in LAYER_KINDS)
    masks = ", ".join(f"'{k}'" for k in MASK_KINDS)
    sql = f"""
        WITH a AS (
            SELECT a.run_id, a.kind, a.tile, a.variant FROM artifacts a
            WHERE a.kind IN ({kinds}) AND a.tile IS NOT NULL{where}
        ), per_run AS (
            SELECT run_id,
                   count(DISTINCT tile) FILTER (WHERE kind IN ({masks})) AS n_tiles,
                   list(DISTINCT variant ORDER BY variant) FILTER (WHERE kind IN ({masks}) AND variant IS NOT NULL)
                       AS variants,
                   count(DISTINCT tile) FILTER (WHERE kind = 'refined') AS n_refined,
                   count(DISTINCT tile) FILTER (WHERE kind = 'image') AS n_images,
                   count(DISTINCT tile) FILTER (WHERE kind = 'label') AS n_labels
            FROM a GROUP BY run_id
        ), v AS (
            SELECT run_id, count(DISTINCT tile) AS n_reviewed, count(*) AS n_verdicts FROM verdicts GROUP BY run_id
        )
        SELECT p.run_id, coalesce(r.name, p.run_id) AS name, r.kind, r.plan_stage, r.status, r.dataset, r.split,
               r.created_at, p.n_tiles, p.variants, p.n_refined, p.n_images, p.n_labels,
               coalesce(v.n_reviewed, 0) AS n_reviewed, coalesce(v.n_verdicts, 0) AS n_verdicts
        FROM per_run p LEFT JOIN runs r ON r.run_id = p.run_id LEFT JOIN v ON v.run_id = p.run_id
        WHERE p.n_tiles > 0
        ORDER BY (r.kind = 'refine') DESC NULLS LAST, r.created_at DESC NULLS LAST, p.run_id
    """
    df = _query(sql, params)
    if df.empty:
        return pd.DataFrame(columns=REVIEW_RUN_COLUMNS)
    df["created_at"] = pd.to_datetime(df["created_at"], unit="s", utc=True)
    df["variants"] = df["variants"].map(lambda v: [str(x) for x in v] if v is not None else [])
    for c in ("n_tiles", "n_refined", "n_images", "n_labels", "n_reviewed", "n_verdicts"):
        df[c] = df[c].fillna(0).astype(int)
    return df[REVIEW_RUN_COLUMNS].reset_index(drop=True)


def review_layers(run_id: str, tile: Optional[str] = None) -> pd.DataFrame:
    """The latest ``image`` / ``label`` / ``pred`` / ``refined`` artifact per (tile, kind, variant) of one run.

    Columns: ``tile, kind, variant, path, abs_path`` (resolved against the run folder), ``split``, ``domain``
    and ``meta`` (the artifact's metadata as a dict: ``color``, ``miou``, ``mbiou``, ``d_mbiou_points`` ...),
    ``seq``. Sorted by tile, then kind, then variant."""

    kinds = ", ".join(f"'{k}'" for k in LAYER_KINDS)
    params: list[Any] = [run_id]
    extra = ""
    if tile is not None:
        extra = " AND tile = ?"
        params.append(tile)
    sql = f"""
        SELECT tile, kind, variant, path, meta_json, seq FROM artifacts
        WHERE run_id = ? AND kind IN ({kinds}) AND tile IS NOT NULL{extra}
        QUALIFY row_number() OVER (PARTITION BY tile, kind, coalesce(variant, '') ORDER BY seq DESC) = 1
        ORDER BY tile, kind, variant NULLS FIRST
    """
    df = _query(sql, params)
    cols = ["tile", "kind", "variant", "path", "abs_path", "split", "domain", "meta", "seq"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    base = run_dir(run_id)
    df["abs_path"] = [str(p if Path(p).is_absolute() else base / p) if p else None for p in df["path"]]
    df["meta"] = df["meta_json"].map(json_dict)
    df["split"] = df["meta"].map(lambda m: m.get("split"))
    df["domain"] = df["meta"].map(lambda m: m.get("domain") or None)
    return df[cols].reset_index(drop=True)


def latest_verdicts(run_id: str, variant: Optional[str] = None, baseline: Optional[str] = None) -> pd.DataFrame:
    """Per tile, the latest verdict (by anyone) on ``variant`` against ``baseline`` (None matches SQL NULL), with
    ``n_verdicts`` (how many verdicts that tile has had for this comparison).

    Columns: ``tile, verdict, comment, reviewer, time`` (UTC), ``verdict_id, n_verdicts``."""
    sql = """
        SELECT tile, verdict, comment, reviewer, ts, verdict_id,
               count(*) OVER (PARTITION BY tile) AS n_verdicts
        FROM verdicts
        WHERE run_id = ? AND variant IS NOT DISTINCT FROM ? AND baseline IS NOT DISTINCT FROM ?
        QUALIFY row_number() OVER (PARTITION BY tile ORDER BY verdict_id DESC) = 1
        ORDER BY tile
    """
    df = _query(sql, [run_id, variant, baseline])
    cols = ["tile", "verdict", "comment", "reviewer", "time", "verdict_id", "n_verdicts"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df["time"] = pd.to_datetime(df["ts"], unit="s", utc=True)
    df["n_verdicts"] = df["n_verdicts"].astype(int)
    return df[cols].reset_index(drop=True)
