"""The test suite's own rules: tests import helpers from ``tests/support`` (never another test module or a
``conftest.py``), and under xdist the files that share a session store really run on one worker."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


def test_tests_import_support_modules_never_tests_or_conftests():
    bad = []
    for path in sorted(TESTS.rglob("*.py")):
        if "data" in path.relative_to(TESTS).parts[:1]:
            continue
        for name in _imports(path):
            last = name.rsplit(".", 1)[-1]
            if last.startswith("test_") or last.startswith("conftest"):
                bad.append(f"{path.relative_to(TESTS)} imports {name}")
    assert not bad, "import helpers from tests.support instead:\n" + "\n".join(bad)


def test_every_test_file_sits_in_a_folder_shaped_like_the_package():
    """tests/<package>/<subpackage>/test_*.py: each folder under tests/ (but support and data) names a package or
    subpackage of the project."""
    root = TESTS.parent
    for path in TESTS.rglob("test_*.py"):
        folder = path.parent.relative_to(TESTS)
        if folder.parts[:1] in (("data",), ("support",)) or not folder.parts:
            continue
        assert (root / folder).is_dir(), f"{path.relative_to(TESTS)}: {folder} is not a folder of the project"


def test_xdist_groups_take_effect(request):
    """Under ``-n 2 --dist loadgroup`` xdist groups tests by a suffix it adds to their node ids; with pytest 9.2
    that suffix silently stopped taking effect (pytest-dev/pytest-xdist#1386) and every shared store was built on
    both workers. A run outside xdist has nothing to check."""
    if not os.environ.get("PYTEST_XDIST_WORKER") or not request.config.getvalue("loadgroup"):
        pytest.skip("not running under xdist --dist loadgroup")
    assert request.node.nodeid.endswith("@test_suite_layout.py"), request.node.nodeid
