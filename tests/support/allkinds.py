"""Fixture: one workspace holding a REAL run of every stage kind of the plan, made once per test session.

health, train (the baseline), distill (logit + feature distillation from the baseline's checkpoint, with its
no-teacher sibling), evaluate, tta_ab, post (an evaluate run with ``post.enabled``), ensemble (the baseline's raw
and EMA weights), refine (raw / crf), lr_find, reliability (two corruptions), export (ONNX FP32), predict (a folder of
unlabelled tiles) and classify (the scene classifier, one epoch), each through ``tests.support.app.run_in_process`` (the job worker and the
real stage code), on the bundled Dubai tiles with tiny settings (128 px crops, 2 steps, 2-3 whole tiles), then
ingested. About three minutes of one CPU core.

The ``allkinds_store`` fixture (``tests/app/conftest.py``) calls :func:`build`.
``MAPSAGE_ALLKINDS_WS=/some/dir`` keeps the workspace there and reuses it when it already holds the runs (for
iterating on the tests only; a plain ``pytest`` always makes fresh runs).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.support.app import DEMO, HEALTH, QUICK, run_in_process

DISTILL = "configs/stage2_losses_aug_distill/distill_logits_demo_segformer_mit-b0_dubai.yaml"
EVALUATE = "configs/stage3_inference/evaluate_demo_segformer_mit-b0_dubai.yaml"
POST = "configs/stage3_inference/post_demo_segformer_mit-b0_dubai.yaml"
TTA = "configs/stage3_inference/tta_ab_demo_segformer_mit-b0_dubai.yaml"
ENSEMBLE = "configs/stage3_inference/ensemble_demo_segformer_mit-b0_dubai.yaml"
REFINE = "configs/stage4_refine_ensemble/refine_demo_segformer_mit-b0_dubai.yaml"
RELIABILITY = "configs/stage3_inference/reliability_demo_segformer_mit-b0_dubai.yaml"
EXPORT = "configs/stage4_refine_ensemble/export_demo_segformer_mit-b0_dubai.yaml"
CLASSIFY = "configs/stage1_classification/cls_test-byobnet_dubai-scenes_cpu.yaml"

PREDICT_ON = Path(__file__).resolve().parents[2] / "data/demo/dubai-aerial/Semantic segmentation dataset/Tile 2/images"
INFER = ["dataset.max_samples=3", "eval.mode=whole", "train.num_workers=0", "runtime.threads=1",
         "runtime.device=cpu", "runtime.gpus=0"]


def _make() -> dict[str, str]:
    import torch

    threads = torch.get_num_threads()
    runs: dict[str, str] = {}
    try:
        runs["train"] = base = run_in_process(DEMO, QUICK + ["stage.name=kinds-baseline"])
        runs["health"] = run_in_process(HEALTH, [
            "stage.name=kinds-health", "health.checks=[ids, normalisation, alignment, eval_consistency, metric]",
            "health.scan_max_masks=4", "runtime.threads=1", "runtime.device=cpu"])
        runs["distill"] = run_in_process(DISTILL, QUICK + [
            "stage.name=kinds-distill", "train.epochs=1", "train.val_every=1", "train.ema.enabled=false",
            "model.freeze.unfreeze_every=1", f"distill.teacher.weights={base}"])
        runs["evaluate"] = run_in_process(EVALUATE, INFER + ["stage.name=kinds-evaluate", f"stage.checkpoint={base}",
                                                             "eval.save_predictions=true"])
        runs["tta_ab"] = run_in_process(TTA, INFER + [
            "stage.name=kinds-tta-ab", f"stage.checkpoint={base}", "eval.save_predictions=false",
            "tta_ab.variants=[{name: flip, scales: [1.0], hflip: true}]"])
        runs["post"] = run_in_process(POST, INFER + ["stage.name=kinds-post", f"stage.checkpoint={base}",
                                                     "eval.save_predictions=false"])
        runs["ensemble"] = run_in_process(ENSEMBLE, INFER + [
            "stage.name=kinds-ensemble", "eval.save_predictions=false",
            f"ensemble.members=[{{checkpoint: {base}/best.pth, weight: 0.6}}, "
            f"{{checkpoint: {base}/best_ema.pth, weight: 0.4}}]"])
        runs["refine"] = run_in_process(REFINE, INFER + [
            "stage.name=kinds-refine", f"stage.checkpoint={base}", "refine.chains=[raw, crf]",
            "refine.max_tiles=3"])
        runs["lr_find"] = run_in_process(DEMO, QUICK + [
            "stage.name=kinds-lr-find", "stage.kind=lr_find", "lr_find.steps=8", "train.ema.enabled=false"])
        runs["reliability"] = run_in_process(RELIABILITY, INFER + [
            "stage.name=kinds-reliability", f"stage.checkpoint={base}", "reliability.corruptions=[haze, cloud]",
            "reliability.severities=[3]", "reliability.max_tiles=2", "reliability.extent_tiles=1",
            "reliability.n_boot=200"])
        runs["export"] = run_in_process(EXPORT, INFER + [
            "stage.name=kinds-export", f"stage.checkpoint={base}", "export.targets=[onnx:fp32]",
            "export.calib_tiles=2", "export.calib_size=[128,128]", "export.speed_size=[128,128]",
            "export.speed_repeats=1", "export.speed_threads=1"])
        from runners.predict_spec import predict_spec

        config, overrides = predict_spec(base, str(PREDICT_ON), INFER + ["stage.name=kinds-predict"])
        runs["predict"] = run_in_process(str(config), overrides)
        runs["classify"] = run_in_process(CLASSIFY, [
            "stage.name=kinds-classify", "train.epochs=1", "classify.img_size=32", "classify.max_images=160",
            "classify.gradcam_images=2", "classify.errors_top_k=6", "runtime.threads=1"])
    finally:
        torch.set_num_threads(threads)
    import store

    store.ingest_all()
    return runs


def build(tmp_path_factory) -> dict:
    keep = os.environ.get("MAPSAGE_ALLKINDS_WS")
    ws = Path(keep) if keep else tmp_path_factory.mktemp("allkinds-ws")
    ws.mkdir(parents=True, exist_ok=True)
    saved = ws / "allkinds_runs.json"
    if keep and saved.exists():
        return {"workspace": ws, "runs": json.loads(saved.read_text()), "seconds": 0.0}
    old = {k: os.environ.get(k) for k in ("MAPSAGE_WORKSPACE", "MAPSAGE_WORKER_INGEST_S")}
    os.environ["MAPSAGE_WORKSPACE"] = str(ws)
    os.environ["MAPSAGE_WORKER_INGEST_S"] = "0"
    t0 = time.perf_counter()
    try:
        runs = _make()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if keep:
        saved.write_text(json.dumps(runs))
    return {"workspace": ws, "runs": runs, "seconds": time.perf_counter() - t0}


