"""Page plumbing shared by every page: the page registry, store refresh, error display and number formatting.

Pages link to each other by file (``st.switch_page(PAGE_FILES[...], query_params=...)``); a run is addressed by
the ``run`` query parameter on the Run detail page and by ``runs`` (comma-separated) on Compare, so every view can
be bookmarked and reloaded."""
from __future__ import annotations

import math
import time
from typing import Any, Optional

import pandas as pd
import streamlit as st

from mapsage.errors import UserError
from mapsage.progress import view
from mapsage.runids import is_run_id
from mapsage.workspace import workspace_root
from runners import api

PAGE_FILES = {
    "home": "views/home.py",
    "plan": "views/plan.py",
    "runs": "views/runs.py",
    "detail": "views/run_detail.py",
    "compare": "views/compare.py",
    "tta": "views/tta_ab.py",
}

STATUS_ICONS = {"queued": ":material/schedule:", "running": ":material/autorenew:",
                "succeeded": ":material/check_circle:", "failed": ":material/error:",
                "cancelled": ":material/cancel:", "died": ":material/heart_broken:",
                "pruned": ":material/content_cut:"}
STATUS_COLORS = {"queued": "gray", "running": "blue", "succeeded": "green", "failed": "red", "cancelled": "orange",
                 "died": "red", "pruned": "violet"}
ACTIVE = ("queued", "running")


# ------------------------------------------------------------------------------------------------------------
# store access


def refresh(ingest: bool | str = True) -> Optional[dict]:
    """Run the scheduler (finds dead jobs, starts queued ones) and ingest new events without waiting for another
    ingesting process -- the app's one cheap write path (throttled to once a second per process). The entry
    script calls it with ``ingest="background"`` (a page render never waits for an ingest; what it loads shows on
    the next read); the live fragment ingests in the call, so each tick shows the events of the one before.
    Errors the user can act on are shown, never raised."""

    try:
        return api.refresh(min_interval=1.0, ingest=ingest)
    except UserError as exc:
        st.warning(f"Store not refreshed: {exc}", icon=":material/warning:")
    return None


def guard(fn, *args, default=None, what: str = "", **kwargs):
    """Call a store/runner function; a UserError is shown with ``st.error`` and ``default`` returned."""
    try:
        return fn(*args, **kwargs)
    except UserError as exc:
        show_error(exc, what)
        return default


def show_error(exc: BaseException, what: str = "") -> None:
    prefix = f"{what}: " if what else ""
    st.error(f"{prefix}{exc}", icon=":material/error:")


def workspace_label() -> str:
    return str(workspace_root())


# ------------------------------------------------------------------------------------------------------------
# navigation


def open_run(run_id: str) -> None:
    st.switch_page(PAGE_FILES["detail"], query_params={"run": run_id})


def query_list(name: str) -> list[str]:
    raw = st.query_params.get_all(name) if hasattr(st.query_params, "get_all") else [st.query_params.get(name)]
    out: list[str] = []
    for item in raw or []:
        if item:
            out.extend(p for p in str(item).split(",") if p)
    if name in RUN_PARAMS:   # run ids from a URL: only names of folders inside workspace/runs/

        bad = [p for p in out if not is_run_id(p)]
        if bad:
            st.warning(f"Ignored `?{name}=` value(s) that are not run ids: {', '.join(repr(b) for b in bad[:3])} "
                       f"(a run id names one folder inside workspace/runs/).", icon=":material/block:")
            out = [p for p in out if p not in bad]
    return list(dict.fromkeys(out))


RUN_PARAMS = ("run", "runs")


# ------------------------------------------------------------------------------------------------------------
# formatting


def isnum(v: Any) -> bool:
    try:
        return v is not None and not (isinstance(v, float) and math.isnan(v)) and not pd.isna(v)
    except (TypeError, ValueError):
        return False


def pct(v: Any, digits: int = 2) -> str:
    """A fraction as points (``0.4312`` -> ``43.12``); ``–`` when missing."""
    return f"{float(v) * 100:.{digits}f}" if isnum(v) else "–"


def duration(seconds: Any) -> str:
    if not isnum(seconds):
        return "–"
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def ago(ts: Any) -> str:
    if not isnum(ts) and not isinstance(ts, pd.Timestamp):
        return "–"
    t = ts.timestamp() if isinstance(ts, pd.Timestamp) else float(ts)
    return duration(time.time() - t) + " ago"


def status_text(status: Optional[str]) -> str:
    """A coloured badge with an icon (Markdown, for st.markdown / labels)."""
    color = STATUS_COLORS.get(status or "", "gray")
    icon = STATUS_ICONS.get(status or "", ":material/help:")
    return f":{color}-badge[{icon} {status or 'unknown'}]"


def progress_text(progress: Optional[dict], status: Optional[str] = None) -> str:
    """One line from a heartbeat's progress (``mapsage.progress.view``: fraction, phase, epoch, rate, ETA)."""

    return view(progress, status)["text"] if progress or status == "succeeded" else ""


def progress_fraction(progress: Optional[dict], status: Optional[str] = None) -> Optional[float]:
    """The monotonic fraction every reader shows (``mapsage.progress.view``; 1.0 once the run succeeded)."""

    return view(progress, status)["frac"]
