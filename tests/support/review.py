"""Fixture of the Review page tests: a workspace holding a REAL refinement run, made once per test session.

1. a tiny training run of the demo template (SegFormer-B0 on the bundled Dubai tiles: 1 epoch of 2 steps on
   128 px crops, validated on 2 whole tiles) through the job worker and the real training stage;
2. the refinement A/B stage (the stage 4 demo template) on that run's checkpoint: chains raw, crf and sam on the
   first 3 validation tiles (Tile 3 parts 1-3, 682x658) -- no SAM checkpoint exists here, so the stage reports
   ``sam`` unavailable and CRF runs;
3. an evaluation (stage 3 template) of the same checkpoint on 1 validation tile with ``eval.save_predictions``:
   a run with prediction masks but no image/label artifacts, which the page completes from the dataset config;
4. ingest into the store.

Every run goes through ``tests.support.app.run_in_process`` (the run folder as ``runners.jobs.submit`` writes it,
then ``runners.worker.main``, the job process's own entry point, called in this process).

The ``review_store`` fixture (``tests/conftest.py``) calls :func:`build`.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from tests.support.app import DEMO, run_in_process

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REFINE = "configs/stage4_refine_ensemble/refine_demo_segformer_mit-b0_dubai.yaml"
TRAIN_NAME = "review-test-train"
REFINE_NAME = "review-test-refine-crf"
REFINE_TILES = 3
EVALUATE = "configs/stage3_inference/evaluate_demo_segformer_mit-b0_dubai.yaml"
EVALUATE_NAME = "review-test-evaluate"

TRAIN = ["train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2", "train.num_workers=0",
         "augment.crop_size=[128, 128]", "dataset.max_samples=2", "eval.mode=whole", "eval.save_predictions=false",
         "train.ema.enabled=false", "runtime.threads=1", "runtime.device=cpu", f"stage.name={TRAIN_NAME}"]


def refine_overrides(checkpoint: str) -> list[str]:
    return [f"stage.name={REFINE_NAME}", f"stage.checkpoint={checkpoint}", "refine.chains=[raw, crf, sam]",
            f"refine.max_tiles={REFINE_TILES}", f"dataset.max_samples={REFINE_TILES}", "eval.mode=whole",
            "train.num_workers=0", "runtime.threads=1", "runtime.device=cpu", "runtime.gpus=0"]


def evaluate_overrides(checkpoint: str) -> list[str]:
    return [f"stage.name={EVALUATE_NAME}", f"stage.checkpoint={checkpoint}", "dataset.max_samples=1",
            "eval.mode=whole", "eval.save_predictions=true", "train.num_workers=0", "runtime.threads=1",
            "runtime.device=cpu", "runtime.gpus=0"]



def build(tmp_path_factory) -> dict:
    ws = tmp_path_factory.mktemp("review-ws")
    old = os.environ.get("MAPSAGE_WORKSPACE")
    old_ingest = os.environ.get("MAPSAGE_WORKER_INGEST_S")
    os.environ["MAPSAGE_WORKSPACE"] = str(ws)
    os.environ["MAPSAGE_WORKER_INGEST_S"] = "0"
    t0 = time.perf_counter()
    try:
        import torch

        threads = torch.get_num_threads()
        train = run_in_process(DEMO, TRAIN)
        refine = run_in_process(REFINE, refine_overrides(train))
        evaluate = run_in_process(EVALUATE, evaluate_overrides(train))
        torch.set_num_threads(threads)
        import store

        store.ingest_all()
        seconds = time.perf_counter() - t0
    finally:
        for key, value in (("MAPSAGE_WORKSPACE", old), ("MAPSAGE_WORKER_INGEST_S", old_ingest)):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {"workspace": ws, "train": train, "refine": refine, "evaluate": evaluate, "seconds": seconds}
