"""The DuckDB store: schema and migrations, ingest of run event files, read queries that return DataFrames.

Never imports torch, streamlit, ``app`` or ``runners``. The database is ``mapsage.workspace.db_path()``
(``$MAPSAGE_WORKSPACE/mapsage.duckdb``), looked up at each call.

Writing
    ``ingest_all(wait=True)`` / ``ingest_run(run_id)``: load new events of run folders (idempotent, incremental,
    serialised across processes by a file lock; ``wait=False`` returns at once when someone else is ingesting).
    ``rebuild()``: forget and re-ingest everything (verdicts kept). ``add_verdict(...)``: a review verdict.

Reading (pandas DataFrames through short-lived read-only connections with bounded waits)
    ``list_runs``, ``run``, ``statuses``, ``events``, ``event_counts``, ``scalars``, ``metrics`` (alias
    ``evaluations``), ``per_class``, ``confusion``, ``confusion_matrix``, ``tiles``, ``ab_rows``, ``artifacts``,
    ``health``, ``logs``, ``verdicts``, ``verdict_summary``, ``leaderboard``, ``table_counts``.
    ``ranking`` (the one ranking rule: evaluations by role -- result, adopted, lineage, rejected, pending --
    completeness and comparable tile sets), ``evaluations_with_roles``, ``headline``, ``short_identity``.

Errors: ``StoreBusy`` (the store stayed locked past the bounded wait) and ``StoreError``, both ``UserError``.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Names are loaded on first use (PEP 562): ``import store`` stays cheap for processes that only need a lock or an
# ingest (no pandas until a read function is called).
_EXPORTS = {
    "StoreBusy": "db", "StoreError": "db", "read_connection": "db", "write_connection": "db",
    "IngestReport": "ingest", "ingest_all": "ingest", "ingest_run": "ingest", "rebuild": "ingest",
    "EXPERIMENT_COLUMNS": "queries", "LIST_COLUMNS": "queries", "ab_rows": "queries", "artifacts": "queries",
    "confusion": "queries", "confusion_matrix": "queries", "event_counts": "queries", "evaluations": "queries",
    "events": "queries", "health": "queries", "leaderboard": "queries", "list_runs": "queries", "logs": "queries",
    "metrics": "queries", "per_class": "queries", "run": "queries", "scalars": "queries", "statuses": "queries",
    "table_counts": "queries", "tiles": "queries", "verdict_summary": "queries", "verdicts": "queries",
    "ensure_schema": "schema", "latest_version": "schema", "migrate": "schema",
    "VERDICTS": "review", "add_verdict": "review",
    "ranking": "ranked", "evaluations_with_roles": "ranked", "headline": "ranked",
    "short_identity": "ranked", "tiles_of": "ranked",
    "add_external_score": "scores", "external_scores": "scores", "val_test_gaps": "scores",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'store' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover
    from .db import StoreBusy, StoreError, read_connection, write_connection  # noqa: F401
    from .ingest import IngestReport, ingest_all, ingest_run, rebuild  # noqa: F401
    from .queries import (  # noqa: F401
        EXPERIMENT_COLUMNS,
        LIST_COLUMNS,
        ab_rows,
        artifacts,
        confusion,
        confusion_matrix,
        evaluations,
        event_counts,
        events,
        health,
        leaderboard,
        list_runs,
        logs,
        metrics,
        per_class,
        run,
        scalars,
        statuses,
        table_counts,
        tiles,
        verdict_summary,
        verdicts,
    )
    from .review import VERDICTS, add_verdict  # noqa: F401
    from .schema import ensure_schema, latest_version, migrate  # noqa: F401
