"""What the sweep machinery adds to a trial's wall time, against a plain launch of the same config.

Both paths go through the real scheduler and a detached worker process: ``jobs.launch`` + ``jobs.wait`` (plain)
and a one-trial sweep (``runners.sweep.start(..., detach=False)``: Optuna study in the workspace, ask, trial config,
submit, per-epoch report + pruner check in the trial, tell). The sweep's values are fixed (one-value grid) so both
train the same config; the order alternates between repetitions. Prints the wall times of each repetition, the
ratio sweep / plain, and the sweep's own work: the trial's report time plus the CPU the driver's process took
beyond what the plain path's launching process took.

    PYTHONPATH=$PWD python bench/sweep.py [--reps 2] [--epochs 3] [--steps 4]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIG = ROOT / "configs/sweeps/sweep_demo_segformer_mit-b0_dubai.yaml"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    os.environ["MAPSAGE_WORKSPACE"] = tempfile.mkdtemp(prefix="mapsage-bench-sweep-")
    os.environ.setdefault("MAPSAGE_WORKER_INGEST_S", "0")
    from runners import jobs, sweep

    common = [f"train.epochs={args.epochs}", f"train.steps_per_epoch={args.steps}", "train.batch_size=2",
              "train.num_workers=0", "dataset.max_samples=3", "eval.mode=whole", "eval.save_predictions=false",
              "runtime.device=cpu", "runtime.threads=1", "train.ema.enabled=false", "train.lr=0.001", "loss.schedule=[{from_epoch: 0, terms: {ce: 0.7, dice: 1.0}}]", "augment.crop_size=[96, 96]"]
    fixed = ["sweep.sampler=grid", "sweep.n_trials=1", "sweep.pruner=median",
             "sweep.parameters={train.lr: [0.001], loss.schedule.0.terms.dice: [1.0], augment.crop_size: [96]}"]
    from mapsage.events import read_events
    from mapsage.workspace import run_dir

    def trial_facts(rid: str) -> tuple[float, float]:
        """(the run's own wall: running -> final status, seconds its sweep reports took)."""
        recs, _ = read_events(run_dir(rid) / "events.jsonl", 0)
        st = {r["status"]: r["ts"] for r in recs if r.get("type") == "status"}
        rep = sum(r["values"].get("report_s", 0.0) for r in recs if r.get("type") == "scalars"
                  and r.get("split") == "sweep")
        return st["succeeded"] - st["running"], rep

    def plain() -> tuple[float, float, str]:
        t0, c0 = time.perf_counter(), time.process_time()
        rid = jobs.launch(CONFIG, common)
        status = jobs.wait(rid)
        assert status == "succeeded", (rid, status)
        return time.perf_counter() - t0, time.process_time() - c0, rid

    def swept() -> tuple[float, float, dict]:
        t0, c0 = time.perf_counter(), time.process_time()
        sid = sweep.start(CONFIG, common + fixed, detach=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        (t,) = sweep.read_state(sid)["trials"].values()
        assert t["status"] == "succeeded" and t["state"] == "complete", t
        return wall, cpu, t

    rows = []
    for rep in range(args.reps):
        # alternate the order, so a drift in the machine's load does not favour one side
        if rep % 2 == 0:
            plain_wall, plain_cpu, rid = plain()
            sweep_wall, sweep_cpu, t = swept()
        else:
            sweep_wall, sweep_cpu, t = swept()
            plain_wall, plain_cpu, rid = plain()
        plain_run, _ = trial_facts(rid)
        trial_run, report_s = trial_facts(t["run_id"])
        # the sweep's own work: the trial's reports (in the worker) and the driver's CPU beyond what a plain
        # launch + wait takes in the launching process (both spawn the same worker through the scheduler)
        machinery = max(0.0, sweep_cpu - plain_cpu) + report_s
        rows.append((plain_wall, sweep_wall, plain_run, trial_run, machinery))
        print(f"rep {rep + 1}: end to end  plain {plain_wall:6.2f} s  sweep {sweep_wall:6.2f} s  ratio "
              f"{sweep_wall / plain_wall:.3f} | run wall  plain {plain_run:6.2f} s  trial {trial_run:6.2f} s | "
              f"sweep machinery {machinery:.3f} s (launching process CPU plain {plain_cpu:.3f} s, sweep driver "
              f"{sweep_cpu:.3f} s of which ask/tell {float(t.get('driver_s') or 0):.3f} s; trial reports "
              f"{report_s:.3f} s)", flush=True)
    med = [statistics.median(c) for c in zip(*rows)]
    print(f"median of {args.reps}: end to end plain {med[0]:.2f} s vs sweep {med[1]:.2f} s, ratio "
          f"{med[1] / med[0]:.3f}; run wall plain {med[2]:.2f} s vs trial {med[3]:.2f} s, ratio "
          f"{med[3] / med[2]:.3f}; sweep machinery {med[4]:.3f} s = {100 * med[4] / med[2]:.2f} % of the plain "
          f"run's wall (ratio {(med[2] + med[4]) / med[2]:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
