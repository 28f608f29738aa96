"""Reports are files like any other: written with the user's umask (not mkstemp's 0600)."""
from __future__ import annotations


def test_reports_are_written_with_the_users_umask(tmp_path):
    import os

    from mapsage.report.export import _atomic_write

    old = os.umask(0o022)
    try:
        _atomic_write(tmp_path / "r.html", "<html></html>")
        assert (tmp_path / "r.html").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        _atomic_write(tmp_path / "s.md", "x")
        assert (tmp_path / "s.md").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
