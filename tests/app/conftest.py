"""Fixtures of the app's tests: workspaces filled by real short runs through the job worker, built once per
session (``tests/support/app.py``: the demo templates; ``tests/support/allkinds.py``: one run of every stage
kind). ``MAPSAGE_WORKSPACE`` points at them only while the runs are made: tests set it themselves."""
from __future__ import annotations

import pytest

from tests.support import allkinds, app


@pytest.fixture(scope="session")
def app_store(tmp_path_factory):
    """{workspace, runs (role -> run id), seconds}."""
    return app.build(tmp_path_factory)


@pytest.fixture(scope="session")
def allkinds_store(tmp_path_factory):
    """{workspace, runs (kind -> run id), seconds}."""
    return allkinds.build(tmp_path_factory)
