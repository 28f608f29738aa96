"""``demo_job``: a real but light stage (no torch) that exercises the whole job lifecycle.

It estimates pi by Monte-Carlo sampling, ``stage.demo_steps`` steps of ``stage.demo_step_seconds`` each. Every
step draws a fixed number of points from a generator seeded by (``train.seed``, step), so the estimate after step
k is the same whether the run went straight through or was killed and resumed -- which is what the resume test
checks. Per step it writes scalars (``pi_estimate``, ``abs_error``, ``samples``), a progress heartbeat and an
atomic JSON checkpoint ``checkpoints/last.json`` (plus an ``artifact`` event). It resumes from
``ctx.resume_from``, raises at step ``stage.demo_fail_at``, honours ``ctx.should_stop()`` (unless
``stage.demo_ignore_stop``, which simulates a hung stage), and with ``stage.demo_spawn_child`` starts a child
process that stays in the job's process group (as data-loader workers do) so that cancel must end the group.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .stage import StageContext

SAMPLES_PER_STEP = 200_000


class DemoFailure(RuntimeError):
    """The failure ``stage.demo_fail_at`` asks for."""


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, path)     # atomic: a kill mid-write never leaves a torn checkpoint


def _spawn_child(ctx: StageContext) -> subprocess.Popen:
    code = "import time\nwhile True:\n    time.sleep(1)\n"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)
    (ctx.run_dir / "child.pid").write_text(str(child.pid), encoding="utf-8")
    ctx.events.log(f"started child process {child.pid} in process group {os.getpgid(0)}")
    return child


def run(ctx: StageContext) -> None:
    cfg = ctx.cfg.stage
    steps = int(cfg.demo_steps)
    seed = int(ctx.cfg.train.seed)
    hits = total = 0
    start = 0
    if ctx.resume_from:
        state = json.loads(Path(ctx.resume_from).read_text(encoding="utf-8"))
        hits, total, start = int(state["hits"]), int(state["total"]), int(state["step"]) + 1
        ctx.events.log(f"resumed from {ctx.resume_from} after step {state['step']} ({total} samples)")
    child = _spawn_child(ctx) if cfg.demo_spawn_child and ctx.is_main else None
    ckpt = ctx.checkpoints_dir / "last.json"
    try:
        for step in range(start, steps):
            if ctx.should_stop() and not cfg.demo_ignore_stop:
                ctx.events.log(f"stop requested: stopping before step {step}; checkpoint kept at {ckpt.name}")
                return
            if cfg.demo_fail_at is not None and step == int(cfg.demo_fail_at):
                raise DemoFailure(f"stage.demo_fail_at={cfg.demo_fail_at}: failing at step {step} as configured")
            t0 = time.perf_counter()
            rng = np.random.default_rng([seed, step])
            xy = rng.random((SAMPLES_PER_STEP, 2))
            hits += int(np.count_nonzero((xy * xy).sum(axis=1) <= 1.0))
            total += SAMPLES_PER_STEP
            rest = float(cfg.demo_step_seconds) - (time.perf_counter() - t0)
            if rest > 0:
                time.sleep(rest)
            estimate = 4.0 * hits / total
            ctx.events.scalars({"pi_estimate": estimate, "abs_error": abs(estimate - math.pi),
                                "samples": float(total), "step_time": time.perf_counter() - t0},
                               epoch=step, step=step, split="train")
            if ctx.is_main:    # under torchrun every rank computes, rank 0 saves
                _save(ckpt, {"step": step, "hits": hits, "total": total, "estimate": estimate})
                ctx.events.artifact("checkpoint", ckpt, step=step)
            ctx.progress(force=True, epoch=step + 1, epochs=steps, step=step + 1, steps=steps,
                         frac=(step + 1) / steps, phase="sampling", message=f"pi ≈ {estimate:.5f}")
    finally:
        if child is not None and not ctx.should_stop():
            child.kill()      # a normal ending cleans up; on cancel the group signal is what must end it
            child.wait()
