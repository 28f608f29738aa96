"""Store benchmark: ingest throughput and the latency of the run list and leaderboard queries.

    .venv/bin/python bench/store.py                       # 1,000 runs x 100 epochs x 7 classes (the target size)
    .venv/bin/python bench/store.py --runs 100 --epochs 20

It fills a temporary workspace with run folders the way the runner leaves them (``bench/run_folders.py``: a
resolved ``config.yaml`` per run and an ``events.jsonl`` with, per epoch, the engine's scalars, real validation
``metrics`` records for the split and each domain, the ``tiles`` record and a heartbeat) -- then times:

* a cold ``store.ingest_all()`` of every folder (events/s),
* a warm incremental ingest after 8 runs append one more epoch (what a refresh costs while jobs run),
* a no-op ingest scan (nothing new: what every status refresh costs),
* ``store.list_runs()`` and ``store.leaderboard()`` (median and 95th percentile of repeated calls, each through a
  fresh read-only connection, as the app does it). Target: under 200 ms each.
"""
from __future__ import annotations

import argparse
import json
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


def _append_epoch(runs_root: Path, run_ids: list[str], payload: dict, epoch: int) -> int:
    n = 0
    for rid in run_ids:
        path = runs_root / rid / "events.jsonl"
        last = json.loads(path.read_text().splitlines()[-1])
        rec = {"seq": last["seq"] + 1, "ts": last["ts"] + 1, "type": "metrics", **{**payload, "epoch": epoch}}
        with open(path, "a") as fh:
            fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
        n += 1
    return n


def _timeit(fn, repeat: int) -> tuple[float, float, float, object]:
    """(median wall, p95 wall, median CPU seconds of this process -- DuckDB's threads included --, result)."""
    times, cpu, out = [], [], None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return statistics.median(times), p95, statistics.median(cpu), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=20, help="query repetitions")
    ap.add_argument("--workspace", default=None, help="use this folder (default: a temporary one, removed after)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = ap.parse_args(argv)

    ws = Path(args.workspace) if args.workspace else Path(tempfile.mkdtemp(prefix="mapsage-bench-store-"))
    os.environ["MAPSAGE_WORKSPACE"] = str(ws)
    import store
    from mapsage.workspace import db_path, runs_dir

    try:
        t = time.perf_counter()
        records = real_metric_records(40)
        print(f"real metrics records (3 LoveDA masks x 40 shifts): {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        n_events = write_runs(runs_dir(), args.runs, args.epochs, records)
        size_mb = sum(p.stat().st_size for p in runs_dir().glob("*/events.jsonl")) / 1e6
        print(f"wrote {args.runs} runs x {args.epochs} epochs x 7 classes: {n_events:,} events "
              f"({size_mb:.0f} MB of event files) in {time.perf_counter() - t:.1f} s")

        t, c = time.perf_counter(), time.process_time()
        report = store.ingest_all()
        cold, cold_cpu = time.perf_counter() - t, time.process_time() - c
        assert report.events == n_events, (report.events, n_events)
        print(f"cold ingest ({load_text()}): {report.events:,} events from {report.runs_changed} runs in {cold:.1f} s "
              f"wall = {report.events / cold:,.0f} events/s; CPU {cold_cpu:.1f} s = "
              f"{report.events / cold_cpu:,.0f} events per CPU-second  (database {db_path().stat().st_size / 1e6:.0f} "
              f"MB)")
        counts = store.table_counts()
        print("rows: " + ", ".join(f"{k} {v:,}" for k, v in counts.items() if v))

        warm = []
        folders = sorted(p.name for p in runs_dir().iterdir())
        for r in range(5):
            ids = [folders[(r * 8 + j) % len(folders)] for j in range(8)]
            _append_epoch(runs_dir(), ids, records[0][0][0], args.epochs + r)
            t = time.perf_counter()
            rep = store.ingest_all()
            warm.append(time.perf_counter() - t)
            assert rep.events == len(ids)
        print(f"incremental ingest (8 runs x 1 new metrics record, {args.runs} folders scanned): "
              f"median {1000 * statistics.median(warm):.0f} ms")
        med, p95, cpu, _ = _timeit(store.ingest_all, 5)
        print(f"no-op ingest scan: median {1000 * med:.0f} ms")

        print(f"queries ({load_text()}; wall = what a caller waits, CPU = this process's CPU time):")
        results = {}
        for label, fn in [("list_runs", store.list_runs), ("leaderboard", store.leaderboard)]:
            med, p95, cpu, df = _timeit(fn, args.repeat)
            results[label] = med
            print(f"  {label:<12} {len(df):>5} rows x {len(df.columns)} columns: wall median {1000 * med:6.1f} ms, "
                  f"p95 {1000 * p95:6.1f} ms; CPU median {1000 * cpu:5.1f} ms  [target < 200 ms]")
        rid = store.list_runs()["run_id"].iloc[0]
        for label, fn in [("per-class curves of one run", lambda: store.per_class(rid, epoch=None)),
                          ("scalars of one run", lambda: store.scalars(rid)),
                          ("confusion of one run", lambda: store.confusion_matrix(rid))]:
            med, p95, cpu, out = _timeit(fn, args.repeat)
            print(f"  {label}: wall median {1000 * med:.1f} ms; CPU {1000 * cpu:.1f} ms")
        ok = max(results.values()) < 0.2
        print("targets met (median wall < 200 ms)" if ok else "TARGET MISSED (median wall >= 200 ms)")
        return 0 if ok else 1
    finally:
        if not args.workspace and not args.keep:
            shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
