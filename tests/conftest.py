"""Shared test set-up. Every test session gets its own workspace, so tests never touch ./workspace."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DUBAI_ROOT = PROJECT_ROOT / "data" / "demo" / "dubai-aerial" / "Semantic segmentation dataset"
LOVEDA_ROOT = PROJECT_ROOT / "tests" / "data" / "loveda"
CHROMIUM = Path("/usr/bin/chromium")

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


def chromium_available() -> bool:
    return CHROMIUM.exists()


# Parallel runs (pytest-xdist, `-n 2 --dist loadgroup` in pyproject's addopts): a file's tests stay on one worker
# (module fixtures are built once), and files that share a session fixture built from real runs share a worker.
_SHARED_FIXTURE_GROUPS = {
    "test_app_every_view.py": "allkinds", "test_browser_deeplinks.py": "allkinds",
    "test_review_app.py": "review", "test_review_data.py": "review", "test_review_browser.py": "review",
    "test_slurm.py": "slurm",          # one local SLURM cluster per machine
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group(_SHARED_FIXTURE_GROUPS.get(name, name)))
