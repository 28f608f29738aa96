"""Reads behind the error drill-down: the tiles behind one confusion-matrix cell, ranked by its pixels.

The rows come from ``tile_confusion`` (one row per off-diagonal confusion cell of a tile, from the ``confusion``
list of a ``tiles`` event, which :class:`mapsage.metrics.SegMetrics` writes), so the ranking counts exactly the
pixels the run's confusion matrix summed.

* :func:`confusion_tiles` -- the tiles of one cell (label ``true_id`` predicted as ``pred_id``) of one
  evaluation (run, split, variant, epoch; the latest ``tiles`` record of it), most pixels first, with the tile's
  label pixels of the true class and the share of them that went to the predicted class.
* :func:`tile_confusion_cells` -- every off-diagonal cell of one tile of that evaluation.
* :func:`confusion_change` -- two evaluations' per-tile confusion side by side on the tiles both scored (B minus
  A per tile and cell): which tiles a confusion rose or dropped on (the Compare page's drill-down).
* :func:`has_tile_confusion` -- whether an evaluation has per-tile confusion rows at all (runs ingested before
  they were written have none).
"""
from __future__ import annotations

from typing import Any, Optional

import pandas as pd

from .db import read_connection
from .schema import ensure_schema

CONFUSION_TILE_COLUMNS = ["tile", "domain", "pixels", "label_pixels", "share", "rank", "seq"]


def _query(sql: str, params: list[Any]) -> pd.DataFrame:
    ensure_schema()
    with read_connection() as con:
        return con.execute(sql, params).df()


def tiles_seq(run_id: str, split: str, variant: str, eval_seq: Any = None) -> Optional[int]:
    """The ``tiles`` record of an evaluation: the first one after its ``metrics`` record ``eval_seq`` (an
    evaluation writes its metrics, then its tiles), or the latest one of (run, split, variant) without it."""
    if eval_seq is None or (isinstance(eval_seq, float) and pd.isna(eval_seq)):
        sql = "SELECT max(seq) AS s FROM tiles WHERE run_id = ? AND split = ? AND variant = ?"
        params = [run_id, split, variant]
    else:
        sql = "SELECT min(seq) AS s FROM tiles WHERE run_id = ? AND split = ? AND variant = ? AND seq > ?"
        params = [run_id, split, variant, int(eval_seq)]
    df = _query(sql, params)
    if df.empty or pd.isna(df["s"].iloc[0]):
        return None
    return int(df["s"].iloc[0])


def has_tile_confusion(run_id: str, split: str, variant: str, eval_seq: Any = None) -> bool:
    """Whether the evaluation's ``tiles`` record carried per-tile confusion (ingested runs written before it was
    recorded have none; a record whose every tile is perfect has no cells either)."""
    seq = tiles_seq(run_id, split, variant, eval_seq)
    if seq is None:
        return False
    df = _query("SELECT count(*) AS n FROM tile_confusion WHERE run_id = ? AND seq = ?", [run_id, seq])
    return int(df["n"].iloc[0]) > 0


def confusion_tiles(run_id: str, split: str, variant: str, true_id: int, pred_id: int, eval_seq: Any = None,
                    domain: Optional[str] = None, limit: Optional[int] = None) -> pd.DataFrame:
    """Tiles where label ``true_id`` was predicted as ``pred_id``, most pixels first (ties by tile id), in the
    ``tiles`` record of the evaluation whose ``metrics`` record is ``eval_seq`` (default: the latest).

    Columns: ``tile, domain, pixels`` (of that cell), ``label_pixels`` (the tile's label pixels of ``true_id``,
    from the same ``tiles`` record), ``share`` (pixels / label_pixels), ``rank`` (1-based), ``seq`` (the
    ``tiles`` event). ``domain``: only tiles of that domain (``all`` or None: every tile)."""
    seq = tiles_seq(run_id, split, variant, eval_seq)
    if seq is None:
        return pd.DataFrame(columns=CONFUSION_TILE_COLUMNS)
    params: list[Any] = [int(true_id), run_id, seq, int(true_id), int(pred_id)]
    dom = ""
    if domain and domain != "all":
        dom = " AND c.domain = ?"
        params.append(domain)
    sql = f"""
        SELECT c.tile, c.domain, c.pixels, t.label_area[? + 1] AS label_pixels, c.seq
        FROM tile_confusion c
        LEFT JOIN tiles t ON t.run_id = c.run_id AND t.seq = c.seq AND t.tile = c.tile
        WHERE c.run_id = ? AND c.seq = ? AND c.true_id = ? AND c.pred_id = ?{dom}
        ORDER BY c.pixels DESC, c.tile
    """
    df = _query(sql, params)
    if df.empty:
        return pd.DataFrame(columns=CONFUSION_TILE_COLUMNS)
    df["pixels"] = df["pixels"].astype("int64")
    df["share"] = [p / lp if pd.notna(lp) and lp > 0 else float("nan") for p, lp in zip(df["pixels"],
                                                                                         df["label_pixels"])]
    df["rank"] = range(1, len(df) + 1)
    if limit is not None:
        df = df.head(int(limit))
    return df[CONFUSION_TILE_COLUMNS].reset_index(drop=True)


def tile_confusion_cells(run_id: str, split: str, variant: str, tile: str, eval_seq: Any = None) -> pd.DataFrame:
    """Every off-diagonal confusion cell of one tile: ``true_id, pred_id, pixels``, most pixels first."""
    seq = tiles_seq(run_id, split, variant, eval_seq)
    if seq is None:
        return pd.DataFrame(columns=["true_id", "pred_id", "pixels"])
    return _query("SELECT true_id, pred_id, pixels FROM tile_confusion WHERE run_id = ? AND seq = ? AND tile = ? "
                  "ORDER BY pixels DESC, true_id, pred_id", [run_id, seq, tile])


def tile_errors(run_id: str, split: str, variant: str, eval_seq: Any = None) -> pd.DataFrame:
    """Per tile of one evaluation: ``tile, domain, valid`` (label pixels that count), ``wrong`` (misclassified
    pixels: the sum of the tile's off-diagonal cells) and ``error_rate`` -- what the error atlas draws."""
    seq = tiles_seq(run_id, split, variant, eval_seq)
    cols = ["tile", "domain", "valid", "wrong", "error_rate"]
    if seq is None:
        return pd.DataFrame(columns=cols)
    df = _query("""
        SELECT t.tile, t.domain, list_sum(t.label_area) AS valid, coalesce(w.wrong, 0) AS wrong
        FROM tiles t LEFT JOIN (SELECT tile, sum(pixels) AS wrong FROM tile_confusion WHERE run_id = ? AND seq = ?
                                GROUP BY tile) w ON w.tile = t.tile
        WHERE t.run_id = ? AND t.seq = ? ORDER BY t.tile
    """, [run_id, seq, run_id, seq])
    if df.empty:
        return pd.DataFrame(columns=cols)
    df["error_rate"] = [w / v if v else float("nan") for w, v in zip(df["wrong"], df["valid"])]
    return df[cols]


CHANGE_COLUMNS = ["tile", "domain", "true_id", "pred_id", "pixels_a", "pixels_b", "delta"]


def confusion_change(run_a: str, variant_a: str, run_b: str, variant_b: str, split: str, eval_seq_a: Any = None,
                     eval_seq_b: Any = None, true_id: Optional[int] = None, pred_id: Optional[int] = None
                     ) -> pd.DataFrame:
    """Per tile and off-diagonal cell, how evaluation B's confusion differs from evaluation A's, on the tiles both
    scored (the ``tiles`` record of each evaluation; see :func:`tiles_seq`).

    Columns: ``tile, domain, true_id, pred_id, pixels_a, pixels_b`` (0 where that evaluation has no such pixel)
    and ``delta`` (``pixels_b - pixels_a``); rows where both are 0 are left out. ``true_id`` / ``pred_id``: one
    cell only, sorted by ``delta`` descending (most risen first; ties by tile); otherwise sorted by cell and
    tile. Summing ``delta`` per cell gives B's confusion matrix minus A's over the shared tiles."""
    sa = tiles_seq(run_a, split, variant_a, eval_seq_a)
    sb = tiles_seq(run_b, split, variant_b, eval_seq_b)
    if sa is None or sb is None:
        return pd.DataFrame(columns=CHANGE_COLUMNS)
    cell = ""
    cell_params: list[Any] = []
    if true_id is not None and pred_id is not None:
        cell = " AND true_id = ? AND pred_id = ?"
        cell_params = [int(true_id), int(pred_id)]
    sql = f"""
        WITH shared AS (
            SELECT ta.tile, ta.domain FROM tiles ta
            JOIN (SELECT tile FROM tiles WHERE run_id = ? AND seq = ?) tb ON tb.tile = ta.tile
            WHERE ta.run_id = ? AND ta.seq = ?
        ), ca AS (
            SELECT tile, true_id, pred_id, pixels FROM tile_confusion WHERE run_id = ? AND seq = ?{cell}
        ), cb AS (
            SELECT tile, true_id, pred_id, pixels FROM tile_confusion WHERE run_id = ? AND seq = ?{cell}
        ), c AS (
            SELECT coalesce(ca.tile, cb.tile) AS tile, coalesce(ca.true_id, cb.true_id) AS true_id,
                   coalesce(ca.pred_id, cb.pred_id) AS pred_id, coalesce(ca.pixels, 0) AS pixels_a,
                   coalesce(cb.pixels, 0) AS pixels_b
            FROM ca FULL OUTER JOIN cb ON ca.tile = cb.tile AND ca.true_id = cb.true_id AND ca.pred_id = cb.pred_id
        )
        SELECT s.tile, s.domain, c.true_id, c.pred_id, c.pixels_a, c.pixels_b, c.pixels_b - c.pixels_a AS delta
        FROM c JOIN shared s ON s.tile = c.tile
        ORDER BY {'delta DESC, s.tile' if cell else 'c.true_id, c.pred_id, s.tile'}
    """
    params = [run_b, sb, run_a, sa, run_a, sa, *cell_params, run_b, sb, *cell_params]
    df = _query(sql, params)
    if df.empty:
        return pd.DataFrame(columns=CHANGE_COLUMNS)
    for c in ("true_id", "pred_id", "pixels_a", "pixels_b", "delta"):
        df[c] = df[c].astype("int64")
    return df[CHANGE_COLUMNS].reset_index(drop=True)


def shared_tile_count(run_a: str, variant_a: str, run_b: str, variant_b: str, split: str, eval_seq_a: Any = None,
                      eval_seq_b: Any = None) -> int:
    """How many tiles both evaluations scored."""
    sa = tiles_seq(run_a, split, variant_a, eval_seq_a)
    sb = tiles_seq(run_b, split, variant_b, eval_seq_b)
    if sa is None or sb is None:
        return 0
    df = _query("SELECT count(*) AS n FROM tiles a JOIN tiles b ON a.tile = b.tile WHERE a.run_id = ? AND a.seq = ? "
                "AND b.run_id = ? AND b.seq = ?", [run_a, sa, run_b, sb])
    return int(df["n"].iloc[0])
