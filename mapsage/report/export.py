"""Writing a report: the HTML file, its tables as CSV files and the Markdown summary.

CSV files keep the store's units and full float precision (``repr``), one file per table; text cells that a
spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or CR) get a leading ``'``, numbers
are written as numbers."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from ..errors import UserError
from .data import ReportData
from .tables import ReportTables, build_tables

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _guard_text(v):
    if isinstance(v, str) and v.startswith(_FORMULA_START):
        return "'" + v
    return v


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells -- and column names (run labels head the config-diff columns) -- cannot start a
    spreadsheet formula (numbers untouched)."""
    out = df.copy()
    out.columns = [_guard_text(str(c)) for c in out.columns]
    for c in out.columns:
        if out[c].dtype == object or pd.api.types.is_string_dtype(out[c]):
            out[c] = out[c].map(_guard_text).astype(object)
    return out


def _umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_umask())        # mkstemp makes 0600; a report is a file like any other
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_csv_tables(tables: ReportTables, csv_dir: str | Path) -> dict[str, Path]:
    """One ``<name>.csv`` per table under ``csv_dir``; returns name -> path."""
    d = Path(csv_dir)
    if d.exists() and not d.is_dir():
        raise UserError(f"--csv-dir {d} exists and is not a folder; name a folder for the CSV tables")
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, df in tables.csv_tables().items():
        path = d / f"{name}.csv"
        _atomic_write(path, csv_safe(df).to_csv(index=False, float_format=None))
        out[name] = path
    return out


@dataclass
class ReportFiles:
    html: Optional[Path] = None
    csv: dict[str, Path] = field(default_factory=dict)
    markdown: Optional[Path] = None
    html_bytes: int = 0
    tables: Optional[ReportTables] = None


def render_report(data: ReportData) -> tuple[str, ReportTables]:
    """``(html, tables)`` of a report (the tables are what the CSV files hold)."""
    from .htmlreport import render

    tables = build_tables(data)
    return render(data, tables), tables


def write_report(data: ReportData, out_html: str | Path | None, csv_dir: str | Path | None = None,
                 md_path: str | Path | None = None) -> ReportFiles:
    """Write the HTML report (``out_html``), and optionally the CSV tables and the Markdown summary."""
    from .markdown import render_markdown

    files = ReportFiles()
    if out_html is not None:
        out_html = Path(out_html)
        if out_html.is_dir():
            raise UserError(f"--out {out_html} is a folder; name the HTML file to write (e.g. {out_html}/report.html)")
        html, tables = render_report(data)
        _atomic_write(out_html, html)
        files.html, files.html_bytes = out_html, len(html.encode("utf-8"))
    else:
        tables = build_tables(data)
    files.tables = tables
    if csv_dir is not None:
        files.csv = write_csv_tables(tables, csv_dir)
        from .reliability import reliability_table
        rel = reliability_table(data)
        if not rel.empty:                       # corruption x severity figures of the runs' reliability cards
            path = Path(csv_dir) / "reliability.csv"
            rel.to_csv(path, index=False)
            files.csv["reliability"] = path
    if md_path is not None:
        md_path = Path(md_path)
        _atomic_write(md_path, render_markdown(data, tables))
        files.markdown = md_path
    return files
