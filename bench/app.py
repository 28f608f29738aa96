"""App benchmark: the render time of the Runs page and the Run detail page with 1,000 runs in the store.

    .venv/bin/python bench/app.py                         # 1,000 runs x 50 epochs x 7 classes
    .venv/bin/python bench/app.py --runs 200 --epochs 20 --repeat 3

It fills a temporary workspace with 1,000 run folders the way the runner leaves them (``bench/run_folders.py``:
real metrics records, per-domain rows, tiles, per-epoch scalars), ingests them with ``store.ingest_all()``, then
renders the pages with Streamlit's AppTest (the same script run a browser session triggers, measured on the server
side; the browser's own painting is not included):

* **cold**: Streamlit's data caches cleared and the refresh throttle expired, so the run includes the scheduler
  pass and the store's ingest scan over 1,000 run folders, every store query, and building every table/chart;
* **warm**: the same page rerun at once (what a widget interaction costs; per-run data come from the cache).

Run detail opens on its default tab (Curves for a training run); the other tabs are computed when opened. On a
shared machine the wall time follows the load; the CPU time of the render is printed beside it.

Target: under 1 s per page.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from run_folders import load_text, real_metric_records, write_runs  # noqa: E402  (bench/ is the script's folder)


def render_times(page: str, repeat: int, **query) -> tuple[list[float], list[float], list[float], int]:
    """(cold seconds, warm seconds, cold CPU seconds of this process, elements) of ``page`` rendered through the
    entry script."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    cold, warm, cpu, n = [], [], [], 0
    for _ in range(repeat):
        at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=300)
        at.run()                                   # the Home page first (imports, session), not timed
        for k, v in query.items():
            at.query_params[k] = v
        at.switch_page(page)
        st.cache_data.clear()
        time.sleep(1.05)                           # the refresh throttle (1 s) expires: the cold run refreshes
        t, c = time.perf_counter(), time.process_time()
        at.run()
        cold.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        if at.exception:
            raise RuntimeError(f"{page}: {[e.message for e in at.exception]}")
        t = time.perf_counter()
        at.run()
        warm.append(time.perf_counter() - t)
        n = len(list(at.main))
    return cold, warm, cpu, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5, help="renders per page")
    ap.add_argument("--workspace", default=None, help="use (and fill, when empty) this folder")
    ap.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = ap.parse_args(argv)

    ws = Path(args.workspace) if args.workspace else Path(tempfile.mkdtemp(prefix="mapsage-bench-app-"))
    os.environ["MAPSAGE_WORKSPACE"] = str(ws)
    import store
    from mapsage.workspace import runs_dir

    try:
        if not runs_dir().exists() or not any(runs_dir().iterdir()):
            t = time.perf_counter()
            records = real_metric_records(40)
            print(f"real metrics records (3 LoveDA masks x 40 shifts): {time.perf_counter() - t:.1f} s")
            t = time.perf_counter()
            n_events = write_runs(runs_dir(), args.runs, args.epochs, records)
            print(f"wrote {args.runs} runs x {args.epochs} epochs x 7 classes: {n_events:,} events in "
                  f"{time.perf_counter() - t:.1f} s")
            t = time.perf_counter()
            rep = store.ingest_all()
            print(f"ingest: {rep.events:,} events in {time.perf_counter() - t:.1f} s")
        n_runs = len(store.list_runs())
        counts = store.table_counts()
        print(f"store: {n_runs} runs; " + ", ".join(f"{k} {v:,}" for k, v in counts.items()
                                                    if k in ("evaluations", "class_metrics", "scalars", "tiles")))
        rid = store.list_runs()["run_id"].iloc[n_runs // 2]

        print(f"render times ({load_text()}; AppTest script run through app/main.py, {args.repeat} renders each):")
        ok = True
        for label, page, query in (("Runs", "views/runs.py", {}),
                                   ("Run detail", "views/run_detail.py", {"run": rid})):
            cold, warm, cpu, n = render_times(page, args.repeat, **query)
            ok &= statistics.median(cold) < 1.0
            print(f"  {label:<10} cold median {1000 * statistics.median(cold):6.0f} ms (min {1000 * min(cold):5.0f}, "
                  f"max {1000 * max(cold):5.0f}; CPU median {1000 * statistics.median(cpu):5.0f} ms); "
                  f"warm median {1000 * statistics.median(warm):5.0f} ms; {n} top-level elements  "
                  f"[target < 1000 ms]")
        from runners import api

        t = time.perf_counter()
        api.refresh(min_interval=0.0)
        print(f"  of which the refresh (scheduler pass + ingest scan of {n_runs} run folders): "
              f"{1000 * (time.perf_counter() - t):.0f} ms")
        print("target met (cold median < 1 s)" if ok else "TARGET MISSED (cold median >= 1 s)")
        return 0 if ok else 1
    finally:
        if not args.workspace and not args.keep:
            shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
