"""Fixture of the review-queue tests: the session's review workspace (``tests/support/review.py``: a real tiny
training run, a refinement run with raw and CRF masks on 3 Dubai tiles, an evaluation) plus a REAL evaluation of
the same checkpoint on 3 validation tiles with ``eval.save_probabilities=true``, whose ``<tile>_prob.npz`` files
the queue scores. Built once per session in its own copy of the workspace.

The ``queue_store`` fixture (``tests/conftest.py``) calls :func:`build`."""
from __future__ import annotations

import os
import shutil
import time

from tests.support.review import EVALUATE

QUEUE_EVAL_NAME = "queue-test-evaluate-probs"
QUEUE_TILES = 3


def probs_overrides(checkpoint: str) -> list[str]:
    return [f"stage.name={QUEUE_EVAL_NAME}", f"stage.checkpoint={checkpoint}", f"dataset.max_samples={QUEUE_TILES}",
            "eval.mode=whole", "eval.save_predictions=true", "eval.save_probabilities=true",
            "train.num_workers=0", "runtime.threads=1", "runtime.device=cpu", "runtime.gpus=0"]


def build(review_store, tmp_path_factory) -> dict:
    from tests.support.app import run_in_process

    ws = tmp_path_factory.mktemp("queue-ws") / "workspace"
    shutil.copytree(review_store["workspace"], ws)
    old = os.environ.get("MAPSAGE_WORKSPACE")
    old_ingest = os.environ.get("MAPSAGE_WORKER_INGEST_S")
    os.environ["MAPSAGE_WORKSPACE"] = str(ws)
    os.environ["MAPSAGE_WORKER_INGEST_S"] = "0"
    t0 = time.perf_counter()
    try:
        import torch

        threads = torch.get_num_threads()
        probs = run_in_process(EVALUATE, probs_overrides(review_store["train"]))
        torch.set_num_threads(threads)
        import store

        store.ingest_all()
    finally:
        for key, value in (("MAPSAGE_WORKSPACE", old), ("MAPSAGE_WORKER_INGEST_S", old_ingest)):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {**review_store, "workspace": ws, "probs": probs, "queue_seconds": time.perf_counter() - t0}
