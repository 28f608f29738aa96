"""The page registry (``st.navigation``), the entry script's routine (:func:`route`) and the guard that keeps every
page under it.

The page files live in ``app/views/``, not ``app/pages/``: Streamlit treats a ``pages/`` folder beside the entry
script as a legacy (v1) multipage app, which ran a page alone on a direct request to its URL. :func:`ensure_routed`
(the first call of every page) stays as the guard for any other way a page file runs by itself (``streamlit run
app/views/plan.py``, a test loading one page): it notices that :func:`route` is not running this page, runs it in
place -- the page then renders once, routed, with the page set-up, the store refresh and the real menu -- and stops
the unrouted run. No extra rerun, so a widget event (a button click) is handled by the routed run, not lost."""
from __future__ import annotations

import threading
from pathlib import Path

import streamlit as st

from .common import PAGE_FILES, refresh, workspace_label

_state = threading.local()


def navigation():
    pages = {
        "Workbench": [
            st.Page(PAGE_FILES["home"], title="Home", icon=":material/home:", default=True),
            st.Page(PAGE_FILES["plan"], title="Plan", icon=":material/map:"),
        ],
        "Results": [
            st.Page(PAGE_FILES["runs"], title="Runs", icon=":material/table_chart:"),
            st.Page(PAGE_FILES["detail"], title="Run detail", icon=":material/query_stats:"),
            st.Page(PAGE_FILES["compare"], title="Compare", icon=":material/compare_arrows:"),
            st.Page(PAGE_FILES["tta"], title="TTA A/B", icon=":material/science:"),
        ],
    }
    pages["Results"].append(st.Page("views/review.py", title="Review", icon=":material/layers:"))
    pages["Results"].append(st.Page("views/sweeps.py", title="Sweeps", icon=":material/tune:"))
    return st.navigation(pages)


def run_routed(page) -> None:
    """Run ``page`` (from :func:`navigation`) marked as routed by the entry script."""
    _state.routed = True
    try:
        page.run()
    finally:
        _state.routed = False


def route() -> None:
    """The entry script: page set-up, the menu, a store refresh (scheduler pass + non-blocking ingest), then the
    chosen page."""

    st.set_page_config(page_title="MapSage Workbench", page_icon=str(Path(__file__).resolve().parents[1] / "static" / "favicon.png"), layout="wide")
    page = navigation()
    refresh(ingest="background")
    with st.sidebar:
        st.caption(f"Workspace: `{workspace_label()}`")
    run_routed(page)


def ensure_routed() -> None:
    """The first call of every page: outside :func:`route`, run the page through it and stop this run."""
    if getattr(_state, "routed", False):
        return
    route()
    st.stop()
