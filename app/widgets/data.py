"""The app's reads of the store, with caching where it is safe.

Every function calls the store's public read functions (``store.list_runs``, ``store.metrics``, ...); nothing
here writes SQL. Per-run reads are cached under the key ``(workspace, run_id, n_events)``: a run's rows change only
when new events are ingested, which changes ``n_events``, so a cached view is never stale and a finished run's
page is served from memory on the next rerun. Lists that change with every heartbeat (the run list) are cached
for one second only, so that one script run -- and the fragment ticks -- reuse one query."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import pandas as pd
import streamlit as st

import store
from mapsage.workspace import workspace_root

from .palette import ClassPalette, palette_from_config


def _ws() -> str:
    return str(workspace_root())


def workspace_key() -> str:
    """The workspace folder, as part of cache keys (a cached view never leaks into another workspace)."""
    return _ws()


@st.cache_data(ttl=1.0, show_spinner=False, max_entries=8)
def _runs(ws: str) -> pd.DataFrame:
    return store.list_runs()


def runs(fresh: bool = False) -> pd.DataFrame:
    """Every run, newest first (``store.list_runs``): status, progress, experiment columns, best figures.
    ``fresh`` drops the cached list first (a run asked for by id that the cached list does not hold yet)."""
    if fresh:
        _runs.clear()
    return _runs(_ws())


@st.cache_data(ttl=1.0, show_spinner=False, max_entries=32)
def _leaderboard(ws: str, split: str, metric: str, domain: str) -> pd.DataFrame:
    return store.leaderboard(split=split, metric=metric, domain=domain, per_class=True)


def leaderboard(split: str = "val", metric: str = "miou", domain: str = "all") -> pd.DataFrame:
    """Per run, its best evaluation on ``split`` by ``metric`` with per-class IoU columns (``store.leaderboard``)."""
    return _leaderboard(_ws(), split, metric, domain)


@st.cache_data(ttl=1.0, show_spinner=False, max_entries=32)
def _ranking(ws: str, split: str, metric: str, subsets: bool, in_progress: bool) -> pd.DataFrame:
    return store.ranking(split=split, metric=metric, include_subsets=subsets, include_in_progress=in_progress,
                         per_class=True)


def ranking(split: str = "val", metric: str = "miou", include_subsets: bool = False,
            include_in_progress: bool = False) -> pd.DataFrame:
    """Per run, its headline evaluation on ``split`` by the one ranking rule (``store.ranking``)."""
    return _ranking(_ws(), split, metric, include_subsets, include_in_progress)


@st.cache_data(ttl=1.0, show_spinner=False, max_entries=64)
def _run_evals(ws: str, run_id: str, n_events: int) -> pd.DataFrame:
    return store.evaluations_with_roles(run_id, domain=None)


def run_evaluations(run_id: str, n_events: Optional[int]) -> pd.DataFrame:
    """A run's evaluations with role, completeness and short identity (``store.evaluations_with_roles``)."""
    return _run_evals(_ws(), run_id, int(n_events or 0))


@st.cache_data(ttl=1.0, show_spinner=False, max_entries=8)
def _splits(ws: str) -> list[str]:
    from store.app_queries import evaluated_splits as q

    return q()


def evaluated_splits() -> list[str]:
    """The splits that have at least one evaluation in the store (``val`` first)."""
    return _splits(_ws())


def run_row(run_id: str) -> Optional[dict]:
    """Every stored fact of one run (``store.run``); not cached (status and progress move)."""
    return store.run(run_id)


@st.cache_data(show_spinner=False, max_entries=64)
def _bundle(ws: str, run_id: str, n_events: int) -> dict[str, Any]:
    return {
        "scalars": store.scalars(run_id),
        "metrics": store.metrics(run_id),
        "per_class": store.per_class(run_id, split=None, domain=None, epoch=None),
    }


def bundle(run_id: str, n_events: Optional[int]) -> dict[str, Any]:
    """The per-run tables every curve and comparison draws from (scalars, metrics, per-class rows of every
    evaluation), cached by ``(run_id, n_events)``."""
    return _bundle(_ws(), run_id, int(n_events or 0))


_TABLES = {"health": lambda r: store.health(r), "ab": lambda r: store.ab_rows(r),
           "artifacts": lambda r: store.artifacts(r), "statuses": lambda r: store.statuses(r),
           "logs": lambda r: store.logs(r)}


@st.cache_data(show_spinner=False, max_entries=256)
def _table(ws: str, run_id: str, n_events: int, name: str):
    return _TABLES[name](run_id)


def table(run_id: str, n_events: Optional[int], name: str):
    """One more per-run table, read only when a tab needs it: health, ab, artifacts, statuses or logs."""
    return _table(_ws(), run_id, int(n_events or 0), name)


@st.cache_data(show_spinner=False, max_entries=128)
def _confusion(ws: str, run_id: str, n_events: int, split: str, domain: str, variant: str,
               epoch: Any) -> Optional[tuple]:
    got = store.confusion_matrix(run_id, split=split, domain=domain, variant=variant, epoch=epoch)
    if got is None:
        return None
    m, names = got
    return m.tolist(), list(names)


def confusion(run_id: str, n_events: Optional[int], split: str, domain: str, variant: str, epoch: Any
              ) -> Optional[tuple[list, list[str]]]:
    """(matrix as nested lists, class names) of one evaluation, rows = label."""
    return _confusion(_ws(), run_id, int(n_events or 0), split, domain, variant, epoch)


@st.cache_data(show_spinner=False, max_entries=128)
def _tiles(ws: str, run_id: str, n_events: int, split: str, variant: str) -> pd.DataFrame:
    return store.tiles(run_id, split=split, variant=variant, latest=True)


def tiles(run_id: str, n_events: Optional[int], split: str, variant: str) -> pd.DataFrame:
    """Per-tile areas of a run's latest evaluation of ``variant`` on ``split`` (for the paired bootstrap)."""
    return _tiles(_ws(), run_id, int(n_events or 0), split, variant)


def palette_of(run: Optional[dict], class_names: Sequence[str] | None = None) -> ClassPalette:
    """The class colours of a run, from its resolved config."""
    cfg = (run or {}).get("config") or {}
    names = class_names or (run or {}).get("class_names") or []
    return palette_from_config(cfg, list(names))


def ab_rows(ab_kind: Optional[str] = None) -> pd.DataFrame:
    return store.ab_rows(ab_kind=ab_kind)


def clear() -> None:
    """Forget cached reads (after a launch or cancel, so the next view shows the change at once)."""
    _runs.clear()
    _leaderboard.clear()
    _ranking.clear()
    _run_evals.clear()
    _splits.clear()
