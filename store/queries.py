"""Read functions: each returns a pandas DataFrame through a short-lived read-only connection.

``run_id`` arguments take one id or a list of ids. Times are UTC ``datetime64`` columns (``*_at``); every metric row
carries its ``split`` (and ``domain`` and ``variant``) so no number is shown without the split it was measured on.
An empty or missing workspace gives empty frames with the documented columns.
"""
from __future__ import annotations

import json
import time
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mapsage.metric_names import HEADLINE as _HEADLINE
from mapsage.metric_names import METRICS as _METRIC_NAMES
from mapsage.registries import EXPERIMENT_COLUMNS as _EXPERIMENT_COLUMNS
from mapsage.workspace import run_dir

from .db import read_connection
from .review import VERDICTS
from .schema import EVENT_TABLES, ensure_schema
from .scores import val_test_gaps

TIME_COLUMNS = ("created_at", "started_at", "ended_at", "updated_at", "last_heartbeat")
# the figures of the metric registry (mapsage/metric_names.py) with a column of their own in evaluations: the
# headline five and per-image mIoU
METRICS = (*_HEADLINE, "per_image_miou")
# the registry's other figures, kept in an evaluation's extra_json: mmseg mFscore, face-parsing mean F-score and
# the image-classification figures (metric_names.CLASSIFICATION)
JSON_METRICS = tuple(m for m in _METRIC_NAMES if m not in METRICS)


def _metric_sql(metric: str) -> str:
    if metric in JSON_METRICS:
        return f"TRY_CAST(json_extract_string(e.extra_json, '$.{metric}') AS DOUBLE)"
    return f"e.{metric}"

# the experiment table's columns, in the plan's order
EXPERIMENT_COLUMNS = list(_EXPERIMENT_COLUMNS)
LIST_COLUMNS = ["run_id", "name", "kind", "plan_stage", "title", "status", "progress_frac", "progress_epoch",
                "progress_epochs", "progress_phase", "progress_message", "split", "best_val_miou",
                "best_val_mbiou", "best_epoch", "best_variant", "best_seq", "best_role", "last_val_miou", "fps", "arch",
                *EXPERIMENT_COLUMNS,
                "dataset", "epochs", "created_at", "started_at", "ended_at", "duration_s", "last_heartbeat",
                "heartbeat_age_s", "host", "pid", "gpus", "parent_run", "parent_relation", "config_hash",
                "code_commit", "status_message", "n_evaluations", "n_events"]
# from the external_scores table (store/scores.py): the latest external mIoU (test split first) and its gap
EXTERNAL_COLUMNS = ["external_split", "external_miou", "external_source", "val_test_gap"]
LIST_COLUMNS += EXTERNAL_COLUMNS


def _ids(run_id: str | Sequence[str] | None) -> list[str] | None:
    if run_id is None:
        return None
    if isinstance(run_id, str):
        return [run_id]
    return [str(r) for r in run_id]


def _query(sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
    ensure_schema()
    with read_connection() as con:
        return con.execute(sql, list(params)).df()


def _where(clauses: list[str], params: list, column: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, (list, tuple, set)):
        value = list(value)
        clauses.append(f"{column} IN ({', '.join('?' for _ in value)})" if value else "FALSE")
        params.extend(value)
    else:
        clauses.append(f"{column} = ?")
        params.append(value)


def _sql_where(clauses: list[str]) -> str:
    return (" WHERE " + " AND ".join(clauses)) if clauses else ""


def _times(df: pd.DataFrame) -> pd.DataFrame:
    for c in TIME_COLUMNS:
        if c in df.columns:
            df[c] = pd.to_datetime(df[c], unit="s", utc=True)
    if "ts" in df.columns:
        df["time"] = pd.to_datetime(df["ts"], unit="s", utc=True)
    return df


def _pylist(v: Any, conv=int) -> list | None:
    """A DuckDB LIST cell as a Python list (None for SQL NULL)."""
    if v is None or (np.ndim(v) == 0 and pd.isna(v)):
        return None
    return [conv(x) for x in v]


def _epoch_filter(clauses: list[str], params: list, epoch: Any, column: str = "epoch") -> None:
    """``epoch``: None (all), an int, "final" (epoch null), or a list of ints."""
    if epoch is None or epoch == "all":
        return
    if epoch == "final":
        clauses.append(f"{column} IS NULL")
    else:
        _where(clauses, params, column, epoch)


def _eval_where(run_id, split, domain, variant, epoch) -> tuple[str, list]:
    """The WHERE clause (with its parameters) selecting evaluation-keyed rows: evaluations, class_metrics and
    confusion share run_id / split / domain / variant / epoch."""
    clauses, params = [], []
    _where(clauses, params, "run_id", _ids(run_id))
    _where(clauses, params, "split", split)
    _where(clauses, params, "domain", domain)
    _where(clauses, params, "variant", variant)
    _epoch_filter(clauses, params, epoch)
    return _sql_where(clauses), params


# ---------------------------------------------------------------------------------------------------------------
# runs


def list_runs(status: str | Sequence[str] | None = None, kind: str | Sequence[str] | None = None,
              plan_stage: int | Sequence[int] | None = None, search: str | None = None,
              run_ids: Sequence[str] | None = None, limit: int | None = None) -> pd.DataFrame:
    """The runs, newest first, with latest status, progress, best figures on the run's split and the experiment
    table's columns (backbone, pretrain, loss, aug, LR schedule, size, TTA, post, FPS)."""
    clauses, params = [], []
    _where(clauses, params, "status", status)
    _where(clauses, params, "kind", kind)
    _where(clauses, params, "plan_stage", plan_stage)
    _where(clauses, params, "run_id", _ids(run_ids))
    if search:
        clauses.append("(lower(run_id) LIKE ? OR lower(coalesce(name, '')) LIKE ? OR lower(coalesce(title, '')) "
                       "LIKE ?)")
        params.extend([f"%{search.lower()}%"] * 3)
    cols = [c for c in LIST_COLUMNS if c not in ("duration_s", "heartbeat_age_s", *EXTERNAL_COLUMNS)]
    sql = (f"SELECT {', '.join(cols)} FROM runs{_sql_where(clauses)} "
           f"ORDER BY coalesce(created_at, updated_at) DESC, run_id DESC")
    if limit:
        sql += f" LIMIT {int(limit)}"
    df = _query(sql, params)
    now = time.time()
    end = df["ended_at"].where(df["ended_at"].notna(), np.where(df["status"].eq("running"), now, np.nan))
    df["duration_s"] = (end - df["started_at"]).astype("float64")
    df["heartbeat_age_s"] = (now - df["last_heartbeat"]).astype("float64")
    df = _with_external(df)
    return _times(df)[LIST_COLUMNS]


def _with_external(df: pd.DataFrame) -> pd.DataFrame:
    """The latest external mIoU per run (the test split's when there is one) and its gap to the best val mIoU."""

    for c in EXTERNAL_COLUMNS:
        df[c] = np.nan if c in ("external_miou", "val_test_gap") else None
    if df.empty:
        return df
    gaps = val_test_gaps(list(df["run_id"]))
    if gaps.empty:
        return df
    gaps = gaps.assign(_test=gaps["split"].eq("test")).sort_values(["run_id", "_test", "ts"]).groupby("run_id").tail(1)
    ext = gaps.set_index("run_id")
    idx = df["run_id"]
    df["external_split"] = idx.map(ext["split"])
    df["external_miou"] = idx.map(ext["external_value"]).astype("float64")
    df["external_source"] = idx.map(ext["source"])
    df["val_test_gap"] = idx.map(ext["gap"]).astype("float64")
    return df


def run(run_id: str) -> dict | None:
    """Every stored fact of one run as a dict (``config`` and ``info`` parsed), or None when unknown."""
    df = _query("SELECT * FROM runs WHERE run_id = ?", [run_id])
    if df.empty:
        return None
    row = _times(df).iloc[0].to_dict()
    row["config"] = json.loads(row["config_json"]) if isinstance(row.get("config_json"), str) else None
    row["info"] = json.loads(row["info_json"]) if isinstance(row.get("info_json"), str) else {}
    row["progress"] = json.loads(row["progress_json"]) if isinstance(row.get("progress_json"), str) else None
    if row.get("class_names") is not None:
        row["class_names"] = [str(c) for c in row["class_names"]]
    return {k: (None if _isna(v) else v) for k, v in row.items()}


def _isna(v: Any) -> bool:
    try:
        return bool(pd.isna(v)) if np.ndim(v) == 0 else False
    except (TypeError, ValueError):
        return False


def statuses(run_id: str | Sequence[str]) -> pd.DataFrame:
    """The status history (queued, running, ... with messages and tracebacks)."""
    clauses, params = [], []
    _where(clauses, params, "run_id", _ids(run_id))
    return _times(_query(f"SELECT * FROM statuses{_sql_where(clauses)} ORDER BY run_id, seq", params))


def events(run_id: str | Sequence[str], types: str | Sequence[str] | None = None,
           since_seq: int | None = None) -> pd.DataFrame:
    """The raw event ledger (one row per ingested event, payload as JSON text)."""
    clauses, params = [], []
    _where(clauses, params, "run_id", _ids(run_id))
    _where(clauses, params, "type", types)
    if since_seq is not None:
        clauses.append("seq >= ?")
        params.append(int(since_seq))
    return _times(_query(f"SELECT * FROM events{_sql_where(clauses)} ORDER BY run_id, seq", params))


def event_counts() -> pd.DataFrame:
    """Per run: events stored, distinct seqs, min/max seq (a check that every event is there exactly once)."""
    return _query("SELECT run_id, count(*) AS n, count(DISTINCT seq) AS n_distinct, min(seq) AS min_seq, "
                  "max(seq) AS max_seq FROM events GROUP BY run_id ORDER BY run_id")


# ---------------------------------------------------------------------------------------------------------------
# numbers


def scalars(run_id: str | Sequence[str], names: str | Sequence[str] | None = None,
            split: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Long table: run_id, epoch, step, split, name, value, ts, time."""
    clauses, params = [], []
    _where(clauses, params, "run_id", _ids(run_id))
    _where(clauses, params, "name", names)
    _where(clauses, params, "split", split)
    return _times(_query(f"SELECT run_id, seq, ts, epoch, step, split, name, value FROM scalars"
                         f"{_sql_where(clauses)} ORDER BY run_id, seq, name", params))


def metrics(run_id: str | Sequence[str] | None = None, split: str | Sequence[str] | None = None,
            domain: str | Sequence[str] | None = None, variant: str | Sequence[str] | None = None,
            epoch: Any = None) -> pd.DataFrame:
    """Evaluation summaries (one row per metrics record): eval_key, split, domain, variant, epoch (null for a
    final evaluation), miou, macc, aacc, mf1, mbiou, per_image_miou, images_per_s, n_images, boundary_px,
    excluded_classes, and the per-class vectors class_names / class_iou / class_biou (NaN: class excluded)."""
    where, params = _eval_where(run_id, split, domain, variant, epoch)
    df = _query(f"SELECT * FROM evaluations{where} ORDER BY run_id, seq", params)
    df["excluded_classes"] = df["excluded_classes"].map(lambda v: _pylist(v, str) or [])
    df["class_names"] = df["class_names"].map(lambda v: _pylist(v, str))
    for c in ("class_iou", "class_biou"):
        df[c] = df[c].map(lambda v: _pylist(v, _float))
    return _times(df)


evaluations = metrics


def _latest_seq_clause(run_id, split, domain, variant, epoch) -> tuple[str, list]:
    """SQL selecting the seq of the latest matching evaluation per run (for 'the' per-class table / confusion)."""
    where, params = _eval_where(run_id, split, domain, variant, epoch)
    return (f"SELECT run_id, max(seq) AS seq FROM evaluations{where} GROUP BY run_id", params)


def per_class(run_id: str | Sequence[str], split: str | None = "val", domain: str | None = "all",
              variant: str | None = None, epoch: Any = "latest") -> pd.DataFrame:
    """Per-class rows (class_id, class_name, iou, acc, precision, f1, biou, excluded) with split, domain, variant,
    epoch. ``epoch="latest"`` (default): the latest matching evaluation of each run; None: every evaluation
    (curves over epochs); an int or "final": that one."""
    if epoch == "latest":
        sub, params = _latest_seq_clause(run_id, split, domain, variant, None)
        sql = (f"SELECT c.* FROM class_metrics c JOIN ({sub}) l ON c.run_id = l.run_id AND c.seq = l.seq "
               f"ORDER BY c.run_id, c.class_id")
        return _query(sql, params)
    where, params = _eval_where(run_id, split, domain, variant, epoch)
    return _query(f"SELECT * FROM class_metrics{where} ORDER BY run_id, seq, class_id", params)


def confusion(run_id: str | Sequence[str], split: str | None = "val", domain: str | None = "all",
              variant: str | None = None, epoch: Any = "latest") -> pd.DataFrame:
    """Confusion matrices (rows = label, columns = prediction) as a ``matrix`` column of lists of lists."""
    if epoch == "latest":
        sub, params = _latest_seq_clause(run_id, split, domain, variant, None)
        sql = (f"SELECT c.* FROM confusion c JOIN ({sub}) l ON c.run_id = l.run_id AND c.seq = l.seq "
               f"ORDER BY c.run_id")
    else:
        where, params = _eval_where(run_id, split, domain, variant, epoch)
        sql = f"SELECT * FROM confusion{where} ORDER BY run_id, seq"
    df = _query(sql, params)
    df["matrix"] = df["matrix"].map(lambda m: _pylist(m, _pylist))
    df["class_names"] = df["class_names"].map(lambda v: _pylist(v, str))
    return df


def confusion_matrix(run_id: str, split: str | None = "val", domain: str | None = "all",
                     variant: str | None = None, epoch: Any = "latest") -> tuple[np.ndarray, list[str]] | None:
    """The latest matching confusion matrix of one run as (int64 array C×C, class names), or None."""
    df = confusion(run_id, split=split, domain=domain, variant=variant, epoch=epoch)
    if df.empty:
        return None
    row = df.iloc[-1]
    m = np.asarray(row["matrix"], dtype=np.int64)
    names = row["class_names"] or [str(i) for i in range(m.shape[0])]
    return m, names


_TILE_ARRAYS = ("intersect", "union", "label_area", "pred_area", "b_intersect", "b_union")


def tiles(run_id: str | Sequence[str], split: str | Sequence[str] | None = None,
          variant: str | Sequence[str] | None = None, latest: bool = True) -> pd.DataFrame:
    """Per-tile areas for paired bootstrap: tile, domain, and per-class lists intersect, union, label_area,
    pred_area, b_intersect, b_union (the ``tiles`` event's names, so the frame feeds
    ``mapsage.metrics.paired_bootstrap`` directly). ``latest``: only the latest tiles record per (run, split,
    variant)."""
    clauses, params = [], []
    _where(clauses, params, "run_id", _ids(run_id))
    _where(clauses, params, "split", split)
    _where(clauses, params, "variant", variant)
    where = _sql_where(clauses)
    if latest:
        sql = (f"SELECT t.* FROM tiles t JOIN (SELECT run_id, split, variant, max(seq) AS seq FROM tiles{where} "
               f"GROUP BY run_id, split, variant) l ON t.run_id = l.run_id AND t.seq = l.seq "
               f"ORDER BY t.run_id, t.split, t.variant, t.tile")
    else:
        sql = f"SELECT * FROM tiles{where} ORDER BY run_id, seq, tile"
    df = _query(sql, params).rename(columns={"union_area": "union"})
    for c in _TILE_ARRAYS:
        df[c] = df[c].map(_pylist)
    return df


def ab_rows(run_id: str | Sequence[str] | None = None, ab_kind: str | Sequence[str] | None = None,
            split: str | Sequence[str] | None = None) -> pd.DataFrame:
    """A/B decision rows (TTA, post-processing, refinement, ensemble, distillation): variant vs baseline, gain in
    points of ``criterion``, threshold, decision, images/s, wall time, with both summaries (JSON text) and the
    variant's and baseline's mIoU / mBIoU as columns."""
    clauses, params = [], []
    _where(clauses, params, "run_id", _ids(run_id))
    _where(clauses, params, "ab_kind", ab_kind)
    _where(clauses, params, "split", split)
    return _times(_query(f"SELECT * FROM ab_rows{_sql_where(clauses)} ORDER BY run_id, seq", params))


def artifacts(run_id: str | Sequence[str], kind: str | Sequence[str] | None = None,
              tile: str | None = None, variant: str | Sequence[str] | None = None,
              absolute: bool = True) -> pd.DataFrame:
    """Artifacts (checkpoints, prediction masks, figures ...). ``absolute``: add ``abs_path`` resolved against
    the run folder."""
    clauses, params = [], []
    _where(clauses, params, "run_id", _ids(run_id))
    _where(clauses, params, "kind", kind)
    _where(clauses, params, "tile", tile)
    _where(clauses, params, "variant", variant)
    df = _times(_query(f"SELECT * FROM artifacts{_sql_where(clauses)} ORDER BY run_id, seq", params))
    if absolute:
        from pathlib import Path


        df["abs_path"] = [str(p if Path(p).is_absolute() else run_dir(r) / p) if p is not None else None
                          for r, p in zip(df["run_id"], df["path"])]
    return df


def health(run_id: str | Sequence[str] | None = None, latest: bool = True) -> pd.DataFrame:
    """Health check rows: check_name, status (pass | warn | fail), verdict, evidence (JSON text), picture.
    ``latest``: the last row per (run, check)."""
    clauses, params = [], []
    _where(clauses, params, "run_id", _ids(run_id))
    where = _sql_where(clauses)
    if latest:
        sql = (f"SELECT * FROM health{where} QUALIFY row_number() OVER (PARTITION BY run_id, check_name "
               f"ORDER BY seq DESC) = 1 ORDER BY run_id, seq")
    else:
        sql = f"SELECT * FROM health{where} ORDER BY run_id, seq"
    return _times(_query(sql, params))


def logs(run_id: str | Sequence[str], level: str | Sequence[str] | None = None,
         tail: int | None = None) -> pd.DataFrame:
    """Log records of runs (``tail``: the last N)."""
    clauses, params = [], []
    _where(clauses, params, "run_id", _ids(run_id))
    _where(clauses, params, "level", level)
    df = _query(f"SELECT * FROM logs{_sql_where(clauses)} ORDER BY run_id, seq", params)
    if tail:
        df = df.groupby("run_id", group_keys=False).tail(int(tail))
    return _times(df).reset_index(drop=True)


def verdicts(run_id: str | Sequence[str] | None = None, tile: str | None = None,
             latest: bool = False) -> pd.DataFrame:
    """Review verdicts (better | worse | same, comment, reviewer, time). ``latest``: the last verdict per (run,
    tile, variant, reviewer)."""
    clauses, params = [], []
    _where(clauses, params, "run_id", _ids(run_id))
    _where(clauses, params, "tile", tile)
    where = _sql_where(clauses)
    if latest:
        sql = (f"SELECT * FROM verdicts{where} QUALIFY row_number() OVER (PARTITION BY run_id, tile, "
               f"coalesce(variant, ''), coalesce(reviewer, '') ORDER BY verdict_id DESC) = 1 "
               f"ORDER BY run_id, verdict_id")
    else:
        sql = f"SELECT * FROM verdicts{where} ORDER BY run_id, verdict_id"
    return _times(_query(sql, params))


def verdict_summary(run_id: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Per run and variant: tiles reviewed and how many were better / worse / same (latest verdict per tile and
    reviewer)."""
    df = verdicts(run_id, latest=True)
    cols = ["run_id", "variant", "reviewed", *VERDICTS]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df["variant"] = df["variant"].fillna("")
    out = df.pivot_table(index=["run_id", "variant"], columns="verdict", values="tile", aggfunc="count",
                         fill_value=0)
    for v in VERDICTS:
        if v not in out.columns:
            out[v] = 0
    out["reviewed"] = out[list(VERDICTS)].sum(axis=1)
    return out.reset_index()[cols]


def leaderboard(split: str = "val", metric: str = "miou", domain: str = "all",
                variant: str | Sequence[str] | None = None, kind: str | Sequence[str] | None = None,
                final_only: bool = False, per_class: bool = True, limit: int | None = None) -> pd.DataFrame:
    """One row per run: its best evaluation on ``split``/``domain`` by ``metric`` (miou | mbiou | macc | mf1 |
    aacc; ties go to the later evaluation), with the experiment table's columns, the figures of that evaluation
    and, with ``per_class``, one ``iou_<class>`` column per class (class-id order). Ranked best first
    (``rank``)."""
    if metric not in METRICS + JSON_METRICS:
        raise ValueError(f"metric must be one of {METRICS + JSON_METRICS}, got {metric!r}")
    msql = _metric_sql(metric)
    clauses, params = ["e.split = ?", "e.domain = ?", f"{msql} IS NOT NULL"], [split, domain]
    _where(clauses, params, "e.variant", variant)
    if final_only:
        clauses.append("e.epoch IS NULL")
    outer, outer_params = [], []
    _where(outer, outer_params, "r.kind", kind)
    cols = ", ".join(f"r.{c}" for c in ["name", "kind", "plan_stage", "status", "arch", *EXPERIMENT_COLUMNS,
                                         "fps", "dataset", "config_hash", "created_at"])
    ensure_schema()
    with read_connection() as con:
        k = 0
        if per_class:   # per-class IoU as plain columns (list indexing in SQL is far cheaper than lists in pandas)
            k = int(con.execute("SELECT coalesce(max(num_classes), 0) FROM evaluations WHERE split = ? AND "
                                "domain = ?", [split, domain]).fetchone()[0])
        extra = "".join(f", e.class_iou[{i + 1}] AS _c{i}" for i in range(k))
        if k:
            extra += ", array_to_string(e.class_names, chr(31)) AS _names"
        sql = f"""
            WITH best AS (
                SELECT e.run_id, arg_max(e.seq, {{'m': {msql}, 's': e.seq}}) AS seq
                FROM evaluations e {_sql_where(clauses)} GROUP BY e.run_id
            )
            SELECT e.run_id, {cols}, e.split, e.domain, e.variant, e.epoch, e.miou, e.mbiou, e.macc, e.mf1,
                   e.aacc, e.n_images{f", {msql} AS {metric}" if metric in JSON_METRICS else ""}{extra}
            FROM best b JOIN evaluations e ON e.run_id = b.run_id AND e.seq = b.seq
            JOIN runs r ON r.run_id = e.run_id {_sql_where(outer)}
            ORDER BY {msql} DESC, e.run_id
            {f'LIMIT {int(limit)}' if limit else ''}
        """
        df = con.execute(sql, params + outer_params).df()
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    if k:
        raw = [f"_c{i}" for i in range(k)]
        out: dict[str, np.ndarray] = {}
        for key in pd.unique(df["_names"].fillna("")):   # one group per class list (usually one dataset)
            names = key.split("\x1f") if key else []
            mask = (df["_names"].fillna("") == key).to_numpy()
            for i, name in enumerate(names[:k]):
                col = out.setdefault(f"iou_{name}", np.full(len(df), np.nan))
                col[mask] = df[raw[i]].to_numpy(dtype=np.float64, na_value=np.nan)[mask]
        df = df.drop(columns=[*raw, "_names"])
        for name, values in out.items():
            df[name] = values
    return _times(df)


def _float(x: Any) -> float:
    return np.nan if x is None or x is np.ma.masked else float(x)


def table_counts() -> dict[str, int]:
    """Rows per table (diagnostics)."""
    ensure_schema()
    with read_connection() as con:
        return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                for t in ["runs", *EVENT_TABLES, "verdicts", "ingest_state"]}
