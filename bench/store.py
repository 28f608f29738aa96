"""Store benchmark: ingest throughput and the latency of the run list and leaderboard queries.

    .venv/bin/python bench/store.py                       # 1,000 runs x 100 epochs x 7 classes (the target size)
    .venv/bin/python bench/store.py --runs 100 --epochs 20

It fills a temporary workspace with run folders the way the runner leaves them -- a resolved ``config.yaml``
(the LoveDA SegFormer template with encoder, LR, crop size and loss mix varied per run) and an ``events.jsonl``
with, per epoch, train and val scalars, a heartbeat with progress and a validation ``metrics`` record (7 classes,
per-class IoU/Acc/precision/F1/BIoU, a 7x7 confusion matrix) -- then times:

* a cold ``store.ingest_all()`` of every folder (events/s),
* a warm incremental ingest after 8 runs append one more epoch (what a refresh costs while jobs run),
* a no-op ingest scan (nothing new: what every status refresh costs),
* ``store.list_runs()`` and ``store.leaderboard()`` (median and 95th percentile of repeated calls, each through a
  fresh read-only connection, as the app does it). Target: under 200 ms each.

The metrics records are real: the metrics engine run on the three real LoveDA masks against copies shifted by
1..40 px (see tests/conftest_store.py); each run walks its own path through those shifts over its epochs. The
scalar values are derived from those figures (train loss = 1 - aAcc of the epoch, ...) only to give the rows
realistic volume.
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
sys.path.insert(0, str(ROOT / "tests"))


def _real_metric_payloads(n_shifts: int) -> list[dict]:
    from conftest_store import loveda_metrics

    out = []
    for shift in range(1, n_shifts + 1):
        res = loveda_metrics(shift).result()
        out.append(res.to_event("val", "all", "ema", None))
    return out


def _configs(n: int) -> list[dict]:
    import hashlib

    from mapsage.config import git_commit, load_config, to_dict

    base = to_dict(load_config(ROOT / "configs" / "stage1_baselines" / "segformer_mit-b2_loveda.yaml"))
    commit = git_commit()
    encoders = ["mit_b0", "mit_b2", "mit_b5"]
    crops = [[512, 512], [640, 640], [768, 768]]
    mixes = [[{"from_epoch": 0, "terms": {"ce": 0.7, "dice": 0.3}}],
             [{"from_epoch": 0, "terms": {"ce": 0.7, "dice": 0.3}},
              {"from_epoch": 20, "terms": {"ce": 0.6, "dice": 0.3, "lovasz": 0.1}}],
             [{"from_epoch": 0, "terms": {"ohem": 0.7, "dice": 0.3}}]]
    out = []
    for i in range(n):
        cfg = json.loads(json.dumps(base))
        cfg["model"]["encoder"] = encoders[i % 3]
        cfg["augment"]["crop_size"] = crops[(i // 3) % 3]
        cfg["loss"]["schedule"] = mixes[(i // 9) % 3]
        cfg["train"]["lr"] = [6e-5, 1e-4, 3e-4, 6e-4][(i // 27) % 4]
        cfg["train"]["epochs"] = None  # set by the caller
        out.append(cfg)
    for cfg in out:
        cfg["meta"] = {"code_commit": commit, "source": "bench/store.py"}
        cfg["meta"]["config_hash"] = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
    return out


def _write_runs(runs_root: Path, n_runs: int, epochs: int, payloads: list[dict]) -> int:
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    configs = _configs(n_runs)
    t0 = 1.7e9
    total = 0
    for i, cfg in enumerate(configs):
        cfg["train"]["epochs"] = epochs
        rid = f"bench-{i:04d}_{cfg['model']['encoder']}"
        cfg["meta"]["run_name"] = rid
        d = runs_root / rid
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(yaml.dump(cfg, Dumper=dumper, sort_keys=False))
        lines = []
        seq = 0
        ts = t0 + i * 3600

        def emit(typ, **payload):
            nonlocal seq, ts
            ts += 0.5
            lines.append(json.dumps({"seq": seq, "ts": ts, "type": typ, **payload}, separators=(",", ":")))
            seq += 1

        emit("status", status="queued", message="queued")
        emit("run_info", kind="train", plan_stage=1, gpus=[str(i % 8)])
        emit("status", status="running", message="bench")
        # each run improves from a coarse shift towards its own best shift
        best = 1 + (i * 7) % (len(payloads) // 2)
        for e in range(epochs):
            k = max(best, len(payloads) - 1 - (e * (len(payloads) - best)) // max(1, epochs - 1))
            m = payloads[k - 1]
            s = m["summary"]
            emit("scalars", epoch=e, step=(e + 1) * 100, split="train",
                 values={"loss": 1 - s["aacc"], "lr": cfg["train"]["lr"], "grad_norm": 1 + s["mbiou"],
                         "epoch_time": 60.0, "data_time": 5.0, "peak_mem_mb": 9000.0})
            emit("scalars", epoch=e, step=(e + 1) * 100, split="val", values={"loss": 1 - s["macc"]})
            emit("metrics", **{**m, "epoch": e})
            emit("heartbeat", pid=1000 + i, host="bench", progress={"epoch": e + 1, "epochs": epochs})
        emit("status", status="succeeded", message="")
        (d / "events.jsonl").write_text("\n".join(lines) + "\n")
        total += seq
    return total


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


def _load() -> str:
    try:
        return "load average %.1f on %d CPUs" % (os.getloadavg()[0], os.cpu_count() or 1)
    except OSError:
        return "load average unknown"


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
        payloads = _real_metric_payloads(40)
        print(f"real metrics records (LoveDA masks, 40 shifts): {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        n_events = _write_runs(runs_dir(), args.runs, args.epochs, payloads)
        size_mb = sum(p.stat().st_size for p in runs_dir().glob("*/events.jsonl")) / 1e6
        print(f"wrote {args.runs} runs x {args.epochs} epochs x 7 classes: {n_events:,} events "
              f"({size_mb:.0f} MB of event files) in {time.perf_counter() - t:.1f} s")

        t, c = time.perf_counter(), time.process_time()
        report = store.ingest_all()
        cold, cold_cpu = time.perf_counter() - t, time.process_time() - c
        assert report.events == n_events, (report.events, n_events)
        print(f"cold ingest ({_load()}): {report.events:,} events from {report.runs_changed} runs in {cold:.1f} s "
              f"wall = {report.events / cold:,.0f} events/s; CPU {cold_cpu:.1f} s = "
              f"{report.events / cold_cpu:,.0f} events per CPU-second  (database {db_path().stat().st_size / 1e6:.0f} "
              f"MB)")
        counts = store.table_counts()
        print("rows: " + ", ".join(f"{k} {v:,}" for k, v in counts.items() if v))

        warm = []
        for r in range(5):
            ids = [f"bench-{(r * 8 + j) % args.runs:04d}" for j in range(8)]
            ids = [p.name for p in runs_dir().iterdir() if any(p.name.startswith(i) for i in ids)]
            _append_epoch(runs_dir(), ids, payloads[0], args.epochs + r)
            t = time.perf_counter()
            rep = store.ingest_all()
            warm.append(time.perf_counter() - t)
            assert rep.events == len(ids)
        print(f"incremental ingest (8 runs x 1 new metrics record, {args.runs} folders scanned): "
              f"median {1000 * statistics.median(warm):.0f} ms")
        med, p95, cpu, _ = _timeit(store.ingest_all, 5)
        print(f"no-op ingest scan: median {1000 * med:.0f} ms")

        print(f"queries ({_load()}; wall = what a caller waits, CPU = this process's CPU time):")
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
