"""``mapsage report RUN_ID [RUN_ID ...] --out FILE.html [--csv-dir DIR] [--md FILE]``: a comparison report.

One self-contained HTML file (plotly.js inlined once, thumbnails inlined, no external URL) with the experiment
table, per-class IoU and Boundary IoU, confusion matrices, TTA / post-processing / refinement / ensemble A/B
decisions, curves, paired-bootstrap intervals of the differences, thumbnails of the tiles that changed most, config
differences and provenance; its tables as CSV files (``--csv-dir``) and a Markdown summary (``--md``). The first run
is the reference of the run-to-run comparisons. A RUN_ID may be shortened to any unique prefix.

The runs' new events are ingested first (``--no-ingest`` skips that), so a report of a run that just ended is
complete. :func:`report_html` is the same report as a string, for the app's download buttons."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from mapsage.errors import UserError
from mapsage.workspace import runs_dir


def register(sub) -> None:
    p = sub.add_parser("report", help="export a self-contained HTML comparison report (+ CSV tables, Markdown)",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="runs to report on; the first is the reference")
    p.add_argument("--out", required=True, metavar="FILE.html", help="the HTML file to write")
    p.add_argument("--csv-dir", default=None, metavar="DIR", help="also write the report's tables as CSV files here")
    p.add_argument("--md", default=None, metavar="FILE.md", help="also write a Markdown summary")
    p.add_argument("--title", default=None, help="report title (default: the run names)")
    p.add_argument("--n-boot", type=int, default=2000, metavar="N",
                   help="paired-bootstrap resamples per comparison (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--thumbs", type=int, default=4, metavar="K",
                   help="tiles shown per A/B variant, the ones that changed most (default 4; 0 = none)")
    p.add_argument("--no-ingest", action="store_true", help="do not ingest the runs' new events first")
    p.set_defaults(func=report_command)


def resolve_run_ids(run_ids: Sequence[str]) -> list[str]:
    """Full run ids for ids or unique prefixes (run folders first, then the store's runs)."""
    import store

    root = runs_dir()
    folders = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []
    try:
        stored = list(store.list_runs()["run_id"])
    except UserError:
        stored = []
    known = sorted(set(folders) | set(stored))
    out = []
    for rid in run_ids:
        if rid in known:
            out.append(rid)
            continue
        matches = [k for k in known if k.startswith(rid)]
        if len(matches) == 1:
            out.append(matches[0])
        elif not matches:
            raise UserError(f"no run {rid!r} in the workspace {root.parent} (see `mapsage runs list`)")
        else:
            raise UserError(f"{rid!r} matches {len(matches)} runs ({', '.join(matches[:4])}, ...); give more of "
                            f"the id")
    return list(dict.fromkeys(out))


def gather(run_ids: Sequence[str], *, ingest: bool = True, title: Optional[str] = None, n_boot: int = 2000,
           seed: int = 0, thumbs: int = 4):
    """The :class:`mapsage.report.ReportData` of ``run_ids`` from the store (ingesting their new events first)."""
    import store
    from mapsage.config import git_commit
    from mapsage.report import ReportData
    from store.report_queries import report_frames

    if thumbs < 0:
        raise UserError(f"--thumbs must be 0 or more, got {thumbs}")
    if n_boot < 1:
        raise UserError(f"--n-boot must be at least 1 (bootstrap resamples; 2000 is usual), got {n_boot}")
    ids = resolve_run_ids(run_ids)
    if ingest:
        store.ingest_all(wait=True, run_ids=ids)
    return ReportData.from_mapping(report_frames(ids), title=title, n_boot=n_boot, seed=seed, thumb_tiles=thumbs,
                                   generator_commit=git_commit())


def report_html(run_ids: Sequence[str], **options) -> str:
    """The HTML report of ``run_ids`` as a string (``options``: see :func:`gather`)."""
    from mapsage.report import render_html

    return render_html(gather(run_ids, **options))


def report_command(args) -> int:
    from mapsage.report import write_report

    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {out}: the report is an HTML file; give a name ending in .html")
    data = gather(args.run_ids, ingest=not args.no_ingest, title=args.title, n_boot=args.n_boot, seed=args.seed,
                  thumbs=args.thumbs)
    files = write_report(data, out, csv_dir=args.csv_dir, md_path=args.md)
    t = files.tables
    print(f"report: {files.html} ({files.html_bytes / 1e6:.2f} MB; {len(data.runs)} runs, "
          f"{len(t.experiments) + len(t.cls_experiments)} evaluations, {len(t.differences)} bootstrap comparisons, {len(t.ab)} A/B rows, "
          f"{len(t.changed_tiles)} changed tiles)")
    for p in t.bootstrap_problems:
        print(f"  not compared: {p.get('run_b')} vs {p.get('run_a')}: {p['reason']}", file=sys.stderr)
    if files.csv:
        print(f"csv: {len(files.csv)} tables in {Path(args.csv_dir)}")
    if files.markdown:
        print(f"markdown: {files.markdown}")
    return 0
