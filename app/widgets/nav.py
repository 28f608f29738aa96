"""The page registry (``st.navigation``), the entry script's routine (:func:`route`) and the guard that keeps every
page under it.

Streamlit treats a ``pages/`` folder beside the entry script as a legacy (v1) multipage app until the first
``st.navigation`` call of the server process (and AppTest resets that flag before every run). A request straight to
a page URL (``/plan``) can therefore run ``pages/plan.py`` alone -- without the page set-up, the store refresh and
the real menu. :func:`ensure_routed` (the first call of every page) notices that :func:`route` is not running this
page and runs it in place -- the page then renders once, routed, inside it -- and stops the unrouted run. No extra
rerun, so a widget event (a button click) is handled by the routed run, not lost."""
from __future__ import annotations

import threading
from pathlib import Path

import streamlit as st

from .common import PAGE_FILES

APP_DIR = Path(__file__).resolve().parents[1]
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
    # The map review page belongs to the refinement work (issue 9); it joins the menu once its file exists.
    if (APP_DIR / "pages" / "review.py").exists():
        pages["Results"].append(st.Page("pages/review.py", title="Review", icon=":material/layers:"))
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
    from .common import refresh, workspace_label

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
