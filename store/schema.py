"""The store's tables, versioned. ``MIGRATIONS`` is an ordered list of (version, description, statements); a
database records every applied version in ``schema_version`` and :func:`migrate` applies the missing ones, each in
its own transaction. A database written by a newer MapSage (a version above the newest known here) is refused with
a message instead of being misread.

Tables filled from run event files (``ingest``) carry ``(run_id, seq)``, the identity of the event they came from:
``events`` (the ledger: one row per ingested event; the JSON payload is kept for the types without a table of
their own -- heartbeat, run_info and unknown types), ``statuses``, ``scalars``, ``evaluations`` (one metrics
record: the summary, plus the per-class IoU / BIoU vectors for fast wide tables), ``class_metrics`` (its
per-class rows), ``confusion``,
``tiles`` (per-tile areas for paired bootstrap), ``ab_rows``, ``artifacts``, ``health``, ``logs``. ``runs`` holds
one row per run folder (config facts plus the latest status, heartbeat, progress and best validation figures).
``ingest_state`` keeps each event file's byte offset and next ``seq``. ``verdicts`` is written by the review page,
never from event files, and survives a rebuild.
"""
from __future__ import annotations

import time

import duckdb

from mapsage.workspace import db_path

from .db import StoreError, read_connection, write_connection

# What an evaluation measured, beside run_id / split / domain / variant / epoch / n_images (mapsage.evalid)
_IDENTITY_COLUMNS: list[tuple[str, str]] = [
    ("dataset", "VARCHAR"), ("tile_count", "INTEGER"), ("tile_hash", "VARCHAR"), ("split_size", "INTEGER"),
    ("checkpoint", "VARCHAR"), ("ckpt_run", "VARCHAR"), ("ckpt_epoch", "INTEGER"), ("ckpt_hash", "VARCHAR"),
    ("weights", "VARCHAR"), ("device", "VARCHAR"), ("params", "BIGINT")]
_BEST_COLUMNS: list[tuple[str, str]] = [("best_seq", "BIGINT"), ("best_role", "VARCHAR")]

# Columns of the per-event tables, in insert order (ingest builds Arrow tables with exactly these names).
EVENT_TABLES: dict[str, list[tuple[str, str]]] = {
    "events": [("run_id", "VARCHAR"), ("seq", "BIGINT"), ("ts", "DOUBLE"), ("type", "VARCHAR"),
               ("payload", "VARCHAR")],
    "statuses": [("run_id", "VARCHAR"), ("seq", "BIGINT"), ("ts", "DOUBLE"), ("status", "VARCHAR"),
                 ("message", "VARCHAR"), ("traceback", "VARCHAR")],
    "scalars": [("run_id", "VARCHAR"), ("seq", "BIGINT"), ("ts", "DOUBLE"), ("epoch", "INTEGER"),
                ("step", "BIGINT"), ("split", "VARCHAR"), ("name", "VARCHAR"), ("value", "DOUBLE")],
    "evaluations": [("run_id", "VARCHAR"), ("seq", "BIGINT"), ("ts", "DOUBLE"), ("eval_key", "VARCHAR"),
                    ("split", "VARCHAR"), ("domain", "VARCHAR"), ("variant", "VARCHAR"), ("epoch", "INTEGER"),
                    ("miou", "DOUBLE"), ("macc", "DOUBLE"), ("aacc", "DOUBLE"), ("mf1", "DOUBLE"),
                    ("mbiou", "DOUBLE"), ("per_image_miou", "DOUBLE"), ("images_per_s", "DOUBLE"),
                    ("n_images", "INTEGER"), ("boundary_px", "INTEGER"), ("num_classes", "INTEGER"),
                    ("excluded_classes", "VARCHAR[]"), ("class_names", "VARCHAR[]"), ("class_iou", "DOUBLE[]"),
                    ("class_biou", "DOUBLE[]"), ("extra_json", "VARCHAR"),
                    # the evaluation's identity (migration 2; store.ranking)
                    *_IDENTITY_COLUMNS],
    "class_metrics": [("run_id", "VARCHAR"), ("seq", "BIGINT"), ("split", "VARCHAR"), ("domain", "VARCHAR"),
                      ("variant", "VARCHAR"), ("epoch", "INTEGER"), ("class_id", "INTEGER"),
                      ("class_name", "VARCHAR"), ("iou", "DOUBLE"), ("acc", "DOUBLE"), ("precision", "DOUBLE"),
                      ("f1", "DOUBLE"), ("biou", "DOUBLE"), ("excluded", "BOOLEAN")],
    "confusion": [("run_id", "VARCHAR"), ("seq", "BIGINT"), ("split", "VARCHAR"), ("domain", "VARCHAR"),
                  ("variant", "VARCHAR"), ("epoch", "INTEGER"), ("num_classes", "INTEGER"),
                  ("class_names", "VARCHAR[]"), ("matrix", "BIGINT[][]")],
    "tiles": [("run_id", "VARCHAR"), ("seq", "BIGINT"), ("split", "VARCHAR"), ("variant", "VARCHAR"),
              ("tile", "VARCHAR"), ("domain", "VARCHAR"), ("intersect", "BIGINT[]"), ("union_area", "BIGINT[]"),
              ("label_area", "BIGINT[]"), ("pred_area", "BIGINT[]"), ("b_intersect", "BIGINT[]"),
              ("b_union", "BIGINT[]")],
    "ab_rows": [("run_id", "VARCHAR"), ("seq", "BIGINT"), ("ts", "DOUBLE"), ("ab_kind", "VARCHAR"),
                ("variant", "VARCHAR"), ("baseline", "VARCHAR"), ("split", "VARCHAR"), ("gain", "DOUBLE"),
                ("criterion", "VARCHAR"), ("threshold", "DOUBLE"), ("decision", "VARCHAR"),
                ("images_per_s", "DOUBLE"), ("wall_s", "DOUBLE"), ("miou", "DOUBLE"), ("mbiou", "DOUBLE"),
                ("baseline_miou", "DOUBLE"), ("baseline_mbiou", "DOUBLE"), ("summary_json", "VARCHAR"),
                ("baseline_summary_json", "VARCHAR"), ("details_json", "VARCHAR")],
    "artifacts": [("run_id", "VARCHAR"), ("seq", "BIGINT"), ("ts", "DOUBLE"), ("kind", "VARCHAR"),
                  ("path", "VARCHAR"), ("tile", "VARCHAR"), ("variant", "VARCHAR"), ("meta_json", "VARCHAR")],
    "health": [("run_id", "VARCHAR"), ("seq", "BIGINT"), ("ts", "DOUBLE"), ("check_name", "VARCHAR"),
               ("status", "VARCHAR"), ("verdict", "VARCHAR"), ("evidence_json", "VARCHAR"),
               ("picture", "VARCHAR")],
    "logs": [("run_id", "VARCHAR"), ("seq", "BIGINT"), ("ts", "DOUBLE"), ("level", "VARCHAR"),
             ("message", "VARCHAR")],
    # one row per off-diagonal confusion cell of a tile (the ``confusion`` list of a ``tiles`` row; migration 5)
    "tile_confusion": [("run_id", "VARCHAR"), ("seq", "BIGINT"), ("split", "VARCHAR"), ("variant", "VARCHAR"),
                       ("epoch", "INTEGER"), ("tile", "VARCHAR"), ("domain", "VARCHAR"), ("true_id", "INTEGER"),
                       ("pred_id", "INTEGER"), ("pixels", "BIGINT")],
}

# runs: static facts (config, launch) + latest-of facts (status, heartbeat) + aggregates (best figures)
RUN_COLUMNS: list[tuple[str, str]] = [
    ("run_id", "VARCHAR PRIMARY KEY"), ("name", "VARCHAR"), ("kind", "VARCHAR"), ("plan_stage", "INTEGER"),
    ("title", "VARCHAR"), ("config_json", "VARCHAR"), ("config_hash", "VARCHAR"), ("code_commit", "VARCHAR"),
    ("dataset", "VARCHAR"), ("split", "VARCHAR"), ("num_classes", "INTEGER"), ("class_names", "VARCHAR[]"),
    ("status", "VARCHAR"), ("status_message", "VARCHAR"), ("traceback", "VARCHAR"),
    ("created_at", "DOUBLE"), ("started_at", "DOUBLE"), ("ended_at", "DOUBLE"), ("updated_at", "DOUBLE"),
    ("pid", "INTEGER"), ("pgid", "INTEGER"), ("host", "VARCHAR"), ("gpus", "VARCHAR"),
    ("parent_run", "VARCHAR"), ("parent_relation", "VARCHAR"), ("resume_from", "VARCHAR"),
    ("last_heartbeat", "DOUBLE"), ("progress_json", "VARCHAR"), ("progress_frac", "DOUBLE"),
    ("progress_epoch", "INTEGER"), ("progress_epochs", "INTEGER"), ("progress_phase", "VARCHAR"),
    ("progress_message", "VARCHAR"), ("epochs", "INTEGER"),
    ("arch", "VARCHAR"), ("backbone", "VARCHAR"), ("pretrain", "VARCHAR"), ("loss", "VARCHAR"),
    ("aug", "VARCHAR"), ("lr_schedule", "VARCHAR"), ("size", "VARCHAR"), ("tta", "VARCHAR"), ("post", "VARCHAR"),
    ("best_val_miou", "DOUBLE"), ("best_val_mbiou", "DOUBLE"), ("best_epoch", "INTEGER"),
    ("best_variant", "VARCHAR"), ("last_val_miou", "DOUBLE"), ("fps", "DOUBLE"), ("n_evaluations", "INTEGER"),
    ("n_events", "BIGINT"), ("info_json", "VARCHAR"),
    *_BEST_COLUMNS,
]


def _create(table: str, cols: list[tuple[str, str]]) -> str:
    body = ", ".join(f'"{c}" {t}' for c, t in cols)
    return f"CREATE TABLE IF NOT EXISTS {table} ({body})"


_V1 = [
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, description VARCHAR, "
    "applied_at DOUBLE)",
    "CREATE TABLE IF NOT EXISTS ingest_state (run_id VARCHAR PRIMARY KEY, path VARCHAR, byte_offset BIGINT, "
    "next_seq BIGINT, inode BIGINT, file_size BIGINT, n_events BIGINT, updated_at DOUBLE)",
    _create("runs", RUN_COLUMNS),
    *[_create(t, cols) for t, cols in EVENT_TABLES.items()],
    "CREATE SEQUENCE IF NOT EXISTS verdict_ids START 1",
    "CREATE TABLE IF NOT EXISTS verdicts (verdict_id BIGINT PRIMARY KEY DEFAULT nextval('verdict_ids'), "
    "run_id VARCHAR NOT NULL, tile VARCHAR NOT NULL, variant VARCHAR, baseline VARCHAR, verdict VARCHAR NOT NULL, "
    "comment VARCHAR, reviewer VARCHAR, ts DOUBLE)",
]

def _v2() -> list[str]:
    """Evaluation identity columns, filled for evaluations already in the store (tile sets from their ``tiles``
    rows, dataset from the run, weights from raw/ema variants); runs' best figures re-derived by the ranking
    rule. Nothing is dropped."""
    from .ranked import best_sql, tile_set_sql

    return [
        *[f'ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS "{c}" {t}' for c, t in _IDENTITY_COLUMNS],
        *[f'ALTER TABLE runs ADD COLUMN IF NOT EXISTS "{c}" {t}' for c, t in _BEST_COLUMNS],
        "UPDATE evaluations SET dataset = r.dataset FROM runs r WHERE evaluations.run_id = r.run_id "
        "AND evaluations.dataset IS NULL",
        "UPDATE evaluations SET weights = variant WHERE weights IS NULL AND variant IN ('raw', 'ema')",
        tile_set_sql("runs"),
        best_sql("runs"),
    ]


# external benchmark scores (written by `mapsage runs score` / the app, never from event files; kept by rebuild)
_V3 = [
    "CREATE SEQUENCE IF NOT EXISTS external_score_ids START 1",
    "CREATE TABLE IF NOT EXISTS external_scores (score_id BIGINT PRIMARY KEY DEFAULT nextval('external_score_ids'), "
    "run_id VARCHAR NOT NULL, split VARCHAR NOT NULL, metric VARCHAR NOT NULL, value DOUBLE NOT NULL, "
    "source VARCHAR, submission VARCHAR, note VARCHAR, recorded_by VARCHAR, ts DOUBLE)",
]

# tags and notes on runs (written by `mapsage tag` / `mapsage note` and the app, never from event files; kept by
# rebuild)
_V4 = [
    "CREATE TABLE IF NOT EXISTS run_tags (run_id VARCHAR NOT NULL, tag VARCHAR NOT NULL, added_by VARCHAR, "
    "ts DOUBLE, PRIMARY KEY (run_id, tag))",
    "CREATE TABLE IF NOT EXISTS run_notes (run_id VARCHAR PRIMARY KEY, note VARCHAR NOT NULL, edited_by VARCHAR, "
    "ts DOUBLE)",
]

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "runs, event tables, ingest state, verdicts", _V1),
    (2, "evaluation identity (checkpoint, tile set, split size, weights, device) and runs ranked by it", _v2()),
    (3, "external benchmark scores", _V3),
    (4, "tags and notes on runs", _V4),
    (5, "per-tile confusion cells (error drill-down)", [_create("tile_confusion", EVENT_TABLES["tile_confusion"])]),
]


def latest_version() -> int:
    return max(v for v, _, _ in MIGRATIONS)


def applied_versions(con: duckdb.DuckDBPyConnection) -> set[int]:
    exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
                         ).fetchone()[0]
    if not exists:
        return set()
    return {int(r[0]) for r in con.execute("SELECT version FROM schema_version").fetchall()}


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    return max(applied_versions(con), default=0)


def missing_versions(con: duckdb.DuckDBPyConnection) -> list[int]:
    have = applied_versions(con)
    return sorted(v for v, _, _ in MIGRATIONS if v not in have)


def check_not_newer(version: int, where: str) -> None:
    if version > latest_version():
        raise StoreError(f"{where}: the store has schema version {version}, newer than this MapSage knows "
                         f"({latest_version()}); update the code, or point MAPSAGE_WORKSPACE at another workspace")


def migrate(con: duckdb.DuckDBPyConnection, where: str = "store") -> list[int]:
    """Apply missing migrations in order, each in one transaction. Returns the versions applied."""
    check_not_newer(current_version(con), where)
    missing = set(missing_versions(con))      # every version not yet applied, also one below the highest
    applied = []
    for version, description, statements in sorted(MIGRATIONS, key=lambda m: m[0]):
        if version not in missing:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for stmt in statements:
                con.execute(stmt)
            con.execute("INSERT INTO schema_version VALUES (?, ?, ?)", [version, description, time.time()])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


_checked: set[tuple[str, int]] = set()


def ensure_schema() -> None:
    """Create or migrate the workspace's database when needed (checked once per process and file)."""


    path = db_path()
    if path.exists():
        key = (str(path), path.stat().st_ino)
        if key in _checked:
            return
        with read_connection() as con:
            version = current_version(con)
            missing = missing_versions(con)
        check_not_newer(version, str(path))
        if not missing:
            _checked.add(key)
            return
    created = not path.exists()
    try:
        with write_connection() as con:
            migrate(con, str(path))
    except Exception as exc:
        if created:                     # a store this call began (e.g. on a full disk) is not left half-made
            from .db import _forget_half_created

            _forget_half_created(path, exc)
        raise
    _checked.add((str(path), path.stat().st_ino))


def forget_checked() -> None:
    """Forget which databases were checked (tests that swap workspaces or migrations)."""
    _checked.clear()
