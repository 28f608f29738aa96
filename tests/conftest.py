"""Shared test set-up. Every test session gets its own workspace, so tests never touch ./workspace.

Tests live in folders shaped like the package (``tests/mapsage/<subpackage>``, ``tests/store``, ``tests/runners``,
``tests/app``); each folder's ``conftest.py`` holds the fixtures its tests share, and ``tests/support`` the helpers
and builders of real runs they call. Here: the fixtures every folder uses, and the two session stores built from
real runs that the app, store and runner tests share (the review workspace and the review queue's)."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support import queue, review
from tests.support.paths import DUBAI_ROOT, LOVEDA_ROOT, PROJECT_ROOT

_session_ws = tempfile.mkdtemp(prefix="mapsage-test-ws-")
os.environ.setdefault("MAPSAGE_WORKSPACE", _session_ws)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_session_ws, ignore_errors=True)


@pytest.fixture
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture
def dubai_root() -> Path:
    return DUBAI_ROOT


@pytest.fixture
def loveda_root() -> Path:
    return LOVEDA_ROOT


@pytest.fixture
def tmp_workspace(tmp_path, monkeypatch) -> Path:
    """A fresh, empty workspace for one test."""
    ws = tmp_path / "workspace"
    ws.mkdir()
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(ws))
    return ws


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests write screenshots and reports for people to look at (git-ignored)."""
    out = PROJECT_ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    return out


@pytest.fixture(autouse=True)
def _real_main_module():
    """Streamlit's AppTest runs a page as ``__main__`` and leaves it in ``sys.modules``; multiprocessing's spawn
    start method would then re-run that page (or AppTest's deleted temporary script) in every child process of a
    later test on the same worker. Each test ends with the real ``__main__`` back in place."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def review_store(tmp_path_factory):
    """A workspace with a tiny training run, a real refinement run and an evaluation on its checkpoint, ingested
    (``tests/support/review.py``): ``workspace``, ``train``, ``refine`` and ``evaluate`` (run ids), ``seconds``.
    Tests point at ``workspace`` themselves (and work on a copy when they write verdicts)."""
    return review.build(tmp_path_factory)


@pytest.fixture(scope="session")
def queue_store(review_store, tmp_path_factory):
    """``review_store`` plus ``probs`` (an evaluation with probabilities) in a workspace of its own
    (``tests/support/queue.py``). Tests that write copy it first."""
    return queue.build(review_store, tmp_path_factory)


# Parallel runs (pytest-xdist, `-n 2 --dist loadgroup` in pyproject's addopts): a file's tests stay on one worker
# (module fixtures are built once), and files that share a session fixture built from real runs share a worker.
_SHARED_FIXTURE_GROUPS = {
    "test_app_every_view.py": "allkinds", "test_browser_deeplinks.py": "allkinds",
    "test_review_app.py": "review", "test_review_data.py": "review", "test_review_browser.py": "review",
    "test_slurm.py": "slurm",          # one local SLURM cluster per machine
}


@pytest.hookimpl(tryfirst=True)      # before xdist's own hook, which turns the marks into the groups it schedules by
def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group(_SHARED_FIXTURE_GROUPS.get(name, name)))
