"""Export a comparison report of some runs from any page: ``report_button(run_ids, key=...)``.

A popover offers the self-contained HTML report, its Markdown summary and its tables as CSV files (zip) -- the same
report as ``mapsage report RUN_ID ... --out FILE.html --csv-dir DIR --md FILE``. The report is built only when a
button is clicked (Streamlit's deferred download data, off the page script), from the store as it is then; the page
itself never waits for it. A problem the user can fix (the store busy, a run unknown) comes back as the downloaded
file's content, saying what happened, since a deferred download cannot draw on the page."""
from __future__ import annotations

import datetime as _dt
import html
import io
import re
import zipfile
from typing import Callable, Optional, Sequence

import streamlit as st

from mapsage.errors import UserError
from runners.commands.report_cmd import gather

FORMATS = {"html": ("text/html", "html"), "md": ("text/markdown", "md"), "csv": ("application/zip", "zip")}


def _gather(run_ids: Sequence[str], title: Optional[str]):
    # the app's refresh ingests continuously; the report reads the store as it is
    return gather(run_ids, ingest=False, title=title)


def report_bytes(run_ids: Sequence[str], fmt: str = "html", title: Optional[str] = None) -> bytes:
    """The report of ``run_ids`` as a file's bytes: ``html`` (the report), ``md`` (the summary) or ``csv`` (a zip
    of the CSV tables)."""
    from mapsage.report import build_tables, csv_safe, render_markdown
    from mapsage.report.htmlreport import render

    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got {fmt!r}")
    data = _gather(run_ids, title)
    tables = build_tables(data)
    if fmt == "html":
        return render(data, tables).encode("utf-8")
    if fmt == "md":
        return render_markdown(data, tables).encode("utf-8")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, df in tables.csv_tables().items():
            zf.writestr(f"{name}.csv", csv_safe(df).to_csv(index=False))
    return buf.getvalue()


def _problem(fmt: str, exc: BaseException) -> bytes:
    text = f"The MapSage report could not be built: {exc}"
    if fmt == "html":
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Report not built</title></head><body>"
                f"<h1>Report not built</h1><p>{html.escape(text)}</p></body></html>").encode("utf-8")
    if fmt == "md":
        return f"# Report not built\n\n{text}\n".encode("utf-8")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("REPORT_NOT_BUILT.txt", text + "\n")
    return buf.getvalue()


def deferred(run_ids: Sequence[str], fmt: str, title: Optional[str] = None) -> Callable[[], bytes]:
    """A zero-argument builder for ``st.download_button(data=...)``: the report's bytes, or a file explaining a
    problem the user can fix."""
    ids = list(run_ids)

    def build() -> bytes:
        try:
            return report_bytes(ids, fmt, title)
        except UserError as exc:
            return _problem(fmt, exc)

    return build


def file_name(names: Sequence[str], fmt: str, now: Optional[_dt.datetime] = None) -> str:
    """``mapsage-report_<first run>[_+N]_<UTC time>.<ext>`` with only safe characters."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    first = re.sub(r"[^A-Za-z0-9._-]+", "-", str(names[0]) if names else "runs").strip("-.")[:60] or "runs"
    more = f"_+{len(names) - 1}" if len(names) > 1 else ""
    return f"mapsage-report_{first}{more}_{now.strftime('%Y%m%d-%H%M')}.{FORMATS[fmt][1]}"


def report_button(run_ids: Sequence[str], *, key: str, label: str = "Export report",
                  title: Optional[str] = None, names: Optional[Sequence[str]] = None) -> None:
    """Offer the comparison report of ``run_ids`` (the first is the reference) for download: a popover with the
    HTML report, the Markdown summary and the CSV tables. ``key`` must be unique on the page; ``names`` (display
    names of the runs) only shape the file names."""
    ids = [r for r in dict.fromkeys(str(r) for r in run_ids if r)]
    if not ids:
        return
    shown = list(names) if names else ids
    what = f"{len(ids)} runs" if len(ids) > 1 else "this run"
    with st.popover(label, icon=":material/download:", help=f"A self-contained report of {what}: open it anywhere, "
                    "no workbench or network needed"):
        st.caption("One HTML file with the experiment table, per-class IoU, confusion matrices, Boundary IoU, A/B "
                   "decisions with bootstrap intervals, curves, changed-tile thumbnails, config diffs and "
                   "provenance. Built when you click (a few seconds).")
        for fmt, text, icon in (("html", "HTML report", ":material/description:"),
                                ("md", "Markdown summary", ":material/notes:"),
                                ("csv", "CSV tables (zip)", ":material/table:")):
            st.download_button(text, data=deferred(ids, fmt, title), file_name=file_name(shown, fmt),
                               mime=FORMATS[fmt][0], key=f"{key}_report_{fmt}", on_click="ignore", icon=icon,
                               width="stretch")
