"""Two-process DDP (gloo on CPU) through the real entry point ``python -m mapsage.train`` under torchrun: it
trains, only rank 0 writes, and its all-reduced validation metrics equal a single process's evaluation of the same
weights on the same tiles."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from mapsage.events import read_events
from tests.support.train import LOVEDA_CFG, PROJECT_ROOT, TINY, tiny_cfg


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_metrics_equal_single_process(tmp_path, one_thread):
    # one thread here as in each rank: a 2-step model's logits are near ties, so even the summation order of a
    # multi-threaded GEMM would flip argmaxes; with the same arithmetic the areas must match exactly
    from mapsage.data import build_dataset
    from mapsage.infer import evaluate
    from mapsage.train import load_for_inference

    ws = tmp_path / "ws"
    overrides = [*TINY, "train.epochs=1", "train.batch_size=1", "dataset.val_split=train"]
    env = dict(os.environ, MAPSAGE_WORKSPACE=str(ws), MAPSAGE_RUN_ID="ddp-run", OMP_NUM_THREADS="1",
               PYTHONPATH=str(PROJECT_ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "mapsage.train", str(LOVEDA_CFG)]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rdir = ws / "runs" / "ddp-run"
    records, _ = read_events(rdir / "events.jsonl")
    statuses = [r["status"] for r in records if r["type"] == "status"]
    assert statuses == ["running", "succeeded"]                         # rank 0 only: no duplicates
    info = next(r for r in records if r["type"] == "run_info" and "world_size" in r)
    assert info["world_size"] == 2 and info["global_batch"] == 2
    metrics = {r["variant"]: r for r in records if r["type"] == "metrics" and r["domain"] == "all"}
    assert set(metrics) == {"raw", "ema"} and all(m["n_images"] == 2 for m in metrics.values())
    tiles = [r for r in records if r["type"] == "tiles"]
    assert len(tiles) == 2 and all(len(t["rows"]) == 2 for t in tiles)   # both ranks' tiles gathered

    cfg = tiny_cfg("dataset.val_split=train")
    data = build_dataset(cfg, "train")
    assert len(data) == 2
    for variant in ("raw", "ema"):
        model, _ = load_for_inference(rdir / "checkpoints" / "last.pth", weights=variant)
        single = evaluate(model, data, cfg, split="train", variant=variant, device="cpu", show_bar=False)
        logged = metrics[variant]
        assert np.array_equal(np.asarray(single.confusion), np.asarray(logged["confusion"])), variant
        assert single.miou == pytest.approx(logged["summary"]["miou"], abs=1e-12)
        assert single.mbiou == pytest.approx(logged["summary"]["mbiou"], abs=1e-12)
