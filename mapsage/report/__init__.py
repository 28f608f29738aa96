"""Comparison reports: one self-contained HTML file (plus CSV tables and a Markdown summary) rendered from plain
data about runs.

The library never reads the store: the caller gathers the data (``store.report_queries.report_frames(run_ids)``)
and passes it in::

    from mapsage.report import ReportData, write_report
    data = ReportData.from_mapping(store.report_queries.report_frames(run_ids), generator_commit=git_commit())
    write_report(data, "report.html", csv_dir="report_csv", md_path="report.md")

Public API:

* :class:`ReportData` -- runs (dicts) and DataFrames of their stored figures; report options (title, bootstrap
  resamples / seed / alpha, thumbnails per variant and their size).
* :func:`build_tables` -> :class:`ReportTables` -- the report's tables in the store's units (what the CSVs hold).
* :func:`render_html` -> str, :func:`render_markdown` -> str, :func:`write_report` -> :class:`ReportFiles`,
  :func:`write_csv_tables`.
* :func:`tile_thumbnails` -- the side-by-side pictures of the tiles an A/B variant changed most.
"""
from .data import ReportData
from .export import ReportFiles, csv_safe, render_report, write_csv_tables, write_report
from .markdown import md_code, md_escape, render_markdown
from .tables import ReportTables, build_tables, tile_scores
from .thumbs import tile_thumbnails


def render_html(data: ReportData) -> str:
    """The report as one self-contained HTML string."""
    from .htmlreport import render

    return render(data)


__all__ = ["ReportData", "ReportTables", "ReportFiles", "build_tables", "render_html", "render_markdown",
           "render_report", "write_report", "write_csv_tables", "csv_safe", "md_code", "md_escape", "tile_scores",
           "tile_thumbnails"]
