"""What the sweep machinery adds to a trial's wall time, against a plain launch of the same config.

Both paths go through the real scheduler and a detached worker process: ``jobs.launch`` + ``jobs.wait`` (plain)
and a one-trial sweep (``runners.sweep.start(..., detach=False)``: Optuna study in the workspace, ask, trial config,
submit, per-epoch report + pruner check in the trial, tell). The sweep's values are fixed (one-value grid) so both
train the same config. Prints the wall times of each repetition and the ratio sweep / plain.

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

    rows = []
    for rep in range(args.reps):
        t0 = time.perf_counter()
        rid = jobs.launch(CONFIG, common)
        status = jobs.wait(rid)
        plain_wall = time.perf_counter() - t0
        assert status == "succeeded", (rid, status)
        plain_run, _ = trial_facts(rid)
        t0 = time.perf_counter()
        sid = sweep.start(CONFIG, common + fixed, detach=False)
        sweep_wall = time.perf_counter() - t0
        (t,) = sweep.read_state(sid)["trials"].values()
        assert t["status"] == "succeeded" and t["state"] == "complete", t
        trial_run, report_s = trial_facts(t["run_id"])
        machinery = float(t.get("driver_s") or 0.0) + report_s
        rows.append((plain_wall, sweep_wall, plain_run, trial_run, machinery))
        print(f"rep {rep + 1}: end to end  plain {plain_wall:6.2f} s  sweep {sweep_wall:6.2f} s  ratio "
              f"{sweep_wall / plain_wall:.3f} | run wall  plain {plain_run:6.2f} s  trial {trial_run:6.2f} s | "
              f"sweep machinery {machinery:.3f} s (driver ask/tell {float(t.get('driver_s') or 0):.3f} s, trial "
              f"reports {report_s:.3f} s)", flush=True)
    med = [statistics.median(c) for c in zip(*rows)]
    print(f"median of {args.reps}: end to end plain {med[0]:.2f} s vs sweep {med[1]:.2f} s, ratio "
          f"{med[1] / med[0]:.3f}; run wall plain {med[2]:.2f} s vs trial {med[3]:.2f} s, ratio "
          f"{med[3] / med[2]:.3f}; sweep machinery {med[4]:.3f} s = {100 * med[4] / med[2]:.2f} % of the plain "
          f"run's wall (ratio {(med[2] + med[4]) / med[2]:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
