"""Fixtures of the app tests: a workspace filled by REAL short runs, made once per test session.

Each run goes through the real code path of a job: a run folder with the resolved config and the ``queued``
record, exactly as ``runners.jobs.submit`` writes them, then ``runners.worker.main`` (the job process's own entry
point: status records, heartbeats, the stage function of ``stage.kind``, the final status and the ingest into the
store) -- called in this process instead of a detached one, so torch is imported once and the whole fixture stays
within about a minute of CPU. The templates are the bundled demo templates with ``--set`` overrides for a couple
of epochs, a few steps, small crops and a few validation tiles.

The ``app_store`` fixture (``tests/app/conftest.py``) calls :func:`build`.

For iterating on the app tests only: ``MAPSAGE_APP_TEST_WS=/some/dir`` keeps the filled workspace there and reuses
it when it already holds the runs (a plain ``pytest`` never sets it and always makes fresh runs).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO = "configs/stage1_baselines/demo_segformer_mit-b0_dubai.yaml"
LOVEDA_DEMO = "configs/stage1_baselines/demo_segformer_mit-b0_loveda-samples.yaml"
HEALTH = "configs/stage0_health/health_dubai.yaml"     # the quick checks only (no sanity fit, no split hashing)

# Dubai: the first 3 tiles of each split (train: Tile 1 parts, val: Tile 3 parts, 682x658, evaluated whole)
QUICK = ["train.epochs=2", "train.steps_per_epoch=2", "train.batch_size=2", "train.num_workers=0",
         "augment.crop_size=[128, 128]", "dataset.max_samples=3", "eval.mode=whole", "eval.save_predictions=false",
         "runtime.threads=1", "runtime.device=cpu"]


def run_in_process(template: str, overrides: list[str], name: str | None = None) -> str:
    """Create a run folder as ``runners.jobs.submit`` does and run the job's worker in this process.

    Returns the run id. The worker writes every status, ingests the run into the store and frees its slot."""
    from mapsage.config import config_hash, git_commit, load_config, run_name, save_resolved
    from mapsage.events import EventWriter
    from mapsage.workspace import run_dir
    from runners import worker

    cfg = load_config(PROJECT_ROOT / template, overrides)
    name = name or run_name(cfg)
    rid = f"{name}_{time.strftime('%Y%m%d-%H%M%S')}_{os.getpid() % 10000:04d}"
    rdir = run_dir(rid)
    rdir.mkdir(parents=True)
    save_resolved(cfg, rdir)
    ev = EventWriter(rdir)
    ev.status("queued", message="queued (test fixture: run in-process)")
    ev.emit("run_info", name=name, kind=cfg.stage.kind, plan_stage=cfg.stage.plan_stage,
            title=cfg.stage.title or None, config_hash=config_hash(cfg), code_commit=git_commit(),
            dataset=cfg.dataset.name, created_at=time.time(), gpus_requested=int(cfg.runtime.gpus),
            config_source=str(cfg.meta.get("source", "")), launched_by="pytest")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        # stdout/stderr into the run's stdout.log, as the scheduler does for a detached job
        with open(rdir / "stdout.log", "a", encoding="utf-8") as log, \
                contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            code = worker.main([str(rdir)])
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    if code != 0:
        log = (rdir / "events.jsonl").read_text(encoding="utf-8")[-3000:]
        raise AssertionError(f"fixture run {rid} ended with exit code {code}; events tail:\n{log}")
    return rid


def _make_runs() -> dict[str, str]:
    import torch

    threads = torch.get_num_threads()
    runs = {}
    try:
        runs["baseline"] = run_in_process(DEMO, QUICK + ["stage.name=app-test-baseline-ce-dice"])
        runs["lovasz"] = run_in_process(DEMO, QUICK + [
            "stage.name=app-test-ce-dice-lovasz", "train.ema.enabled=false",
            "loss.schedule=[{from_epoch: 0, terms: {ce: 0.6, dice: 0.3, lovasz: 0.1}}]"])
        runs["tta"] = run_in_process(DEMO, QUICK + [
            "stage.name=app-test-tta-ab", "stage.kind=tta_ab", "stage.plan_stage=3",
            f"stage.checkpoint={runs['baseline']}", "tta_ab.variants=[{name: flip, scales: [1.0], hflip: true}]"])
        runs["health"] = run_in_process(HEALTH, [
            "stage.name=app-test-health", "health.checks=[ids, normalisation, eval_consistency, metric]",
            "health.scan_max_masks=6", "runtime.threads=1", "runtime.device=cpu"])
        runs["loveda"] = run_in_process(LOVEDA_DEMO, [
            "stage.name=app-test-loveda-rural", "train.epochs=1", "train.steps_per_epoch=1", "train.batch_size=2",
            "augment.crop_size=[128, 128]", "train.ema.enabled=false", "eval.save_predictions=false",
            "runtime.threads=1", "runtime.device=cpu"])
    finally:
        torch.set_num_threads(threads)
    import store

    store.ingest_all()
    return runs


def build(tmp_path_factory) -> dict:
    """A workspace with real runs, ingested: {workspace, runs (role -> run id), seconds}.

    ``MAPSAGE_WORKSPACE`` points at it only while the runs are made; tests set it themselves (monkeypatch), so
    other areas' tests never see this workspace."""
    keep = os.environ.get("MAPSAGE_APP_TEST_WS")
    ws = Path(keep) if keep else tmp_path_factory.mktemp("app-ws")
    ws.mkdir(parents=True, exist_ok=True)
    saved = ws / "app_test_runs.json"
    if keep and saved.exists():
        return {"workspace": ws, "runs": json.loads(saved.read_text()), "seconds": 0.0}
    old = os.environ.get("MAPSAGE_WORKSPACE")
    os.environ["MAPSAGE_WORKSPACE"] = str(ws)
    t0 = time.perf_counter()
    try:
        runs = _make_runs()
    finally:
        if old is None:
            os.environ.pop("MAPSAGE_WORKSPACE", None)
        else:
            os.environ["MAPSAGE_WORKSPACE"] = old
    if keep:
        saved.write_text(json.dumps(runs))
    return {"workspace": ws, "runs": runs, "seconds": time.perf_counter() - t0}
