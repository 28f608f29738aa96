"""The repository passes ``ruff check`` with the rules configured in ``pyproject.toml``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    beside = Path(sys.executable).with_name("ruff")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("ruff")
    if found:
        return [found]
    try:
        import ruff  # noqa: F401  (the wheel ships the binary; ``python -m ruff`` runs it)
    except ImportError:
        pytest.fail("ruff is not installed: pip install -e '.[test]' (it is one of the test extras)")
    return [sys.executable, "-m", "ruff"]


def test_ruff_check_passes():
    proc = subprocess.run([*_ruff(), "check", "--no-cache", "--output-format", "concise", str(ROOT)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"ruff check found problems (fix: ruff check --fix .):\n{proc.stdout}{proc.stderr}"


def test_ruff_reads_the_project_configuration():
    proc = subprocess.run([*_ruff(), "check", "--show-settings", str(ROOT / "mapsage" / "__init__.py")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "line_length = 120" in proc.stdout
    # one rule of each family: pycodestyle errors and warnings, pyflakes, isort, bugbear
    for rule in ("(E711)", "(W291)", "(F401)", "(I001)", "(B006)"):
        assert rule in proc.stdout, f"rule {rule} is not enabled"
