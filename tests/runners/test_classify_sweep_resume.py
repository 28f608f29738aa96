"""Classification runs as the segmentation ones are run: a killed classify run resumes at the epoch after its last
``last.pth`` (through the job scheduler, as ``mapsage runs resume`` does); a sweep over classify trials reports
top-1 per epoch to Optuna and each trial's value is its best stored top-1; RandAugment is a checked config key;
a classification sweep that names a segmentation metric is refused at load (slow: real runs)."""
from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from mapsage.config import ConfigError
from tests.support.runners import inprocess_launcher, until

TEMPLATE = "configs/stage1_classification/cls_test-byobnet_dubai-scenes_cpu.yaml"
QUICK = ["classify.img_size=32", "classify.max_images=120", "classify.gradcam_images=0", "classify.errors_top_k=4",
         "runtime.threads=1", "train.early_stop.patience=50"]


def _last_epoch(rid: str) -> int:
    from mapsage.workspace import run_dir

    p = run_dir(rid) / "checkpoints" / "last.pth"
    if not p.is_file():
        return -1
    try:
        return int(torch.load(p, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # noqa: BLE001 - being written: not there yet
        return -1


pytestmark = pytest.mark.slow


def test_killed_classification_run_resumes_at_the_next_epoch(rws):
    import store
    from mapsage.workspace import run_dir
    from runners import api, scheduler
    from tests.support.app import PROJECT_ROOT

    rid = api.launch(str(PROJECT_ROOT / TEMPLATE), QUICK + ["train.epochs=6", "classify.randaugment=rand-m9-mstd0.5"])
    until(lambda: _last_epoch(rid) >= 0, 240, "the first epoch's last.pth")
    os.kill(scheduler.read_job(rid)["pid"], signal.SIGKILL)
    until(lambda: api.status(rid)["status"] == "died", 60, "the died status")
    saved = _last_epoch(rid)
    assert 0 <= saved < 5
    best_before = [p.name for p in (run_dir(rid) / "checkpoints").glob("fold*_seed*_epoch*_score*.pth")]
    assert len(best_before) == 1
    new = api.resume(rid)
    assert new != rid and api.wait(new, timeout=300) == "succeeded"
    store.ingest_all(wait=True)
    child = store.run(new)
    assert child["parent_run"] == rid and child["resume_from"] == str(run_dir(rid) / "checkpoints" / "last.pth")
    # the child trained only the epochs after the saved one, and validated each of them
    ep = store.scalars(new, names="train_loss")["epoch"].tolist()
    assert ep == list(range(saved + 1, 6)), ep
    log = (run_dir(new) / "events.jsonl").read_text(encoding="utf-8")
    assert f"after epoch {saved + 1}" in log
    # its best checkpoint is the better of the parent's best and its own epochs; it was calibrated and scored
    kept = list((run_dir(new) / "checkpoints").glob("fold*_seed*_epoch*_score*.pth"))
    assert len(kept) == 1 and (run_dir(new) / "checkpoints" / "best.pth").is_file()
    assert (run_dir(new) / "calibration.json").is_file()
    assert _last_epoch(new) == 5
    # a segmentation checkpoint is not a classification run's state: one line naming the file
    from mapsage.classify import stage as cls_stage
    from mapsage.errors import UserError
    from mapsage.stage import StageContext

    bad = run_dir(new) / "not_last.pth"
    torch.save({"model": {}, "epoch": 1}, bad)
    ctx = StageContext(cfg=None, run_id=new, run_dir=run_dir(new), events=None, resume_from=bad)
    with pytest.raises(UserError, match="not a classification run's last.pth"):
        cls_stage._restore(ctx, None, None, None, None)


def test_classification_sweep_reports_top1_and_keeps_the_best_epoch(tmp_path, monkeypatch):
    import store
    from runners import sweep
    from tests.support.app import PROJECT_ROOT

    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(tmp_path / "ws"))
    over = QUICK + ["train.epochs=2", "sweep.n_trials=3", "sweep.sampler=random", "sweep.pruner=none",
                    "sweep.metric=top1", "sweep.parallel=1",
                    "sweep.parameters={train.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}, "
                    "classify.label_smoothing: {type: choice, values: [0.0, 0.1]}}"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.time()
    try:
        sid = sweep.start(PROJECT_ROOT / TEMPLATE, over, detach=False, launcher=inprocess_launcher)
    finally:
        torch.set_num_threads(threads)
    assert time.time() - t0 < 400
    df = sweep.trials_frame(sid)
    assert len(df) == 3 and set(df["state"]) == {"complete"}, df[["trial", "state", "status"]]
    store.ingest_all(wait=True)
    for row in df.to_dict("records"):
        sc = store.scalars(row["run_id"], names=["top1", "top1_ema"])
        assert len(sc) >= 2
        # the trial's value is its best epoch's top-1 (raw or EMA), as stored for the run
        assert row["value"] == pytest.approx(float(sc["value"].max()), abs=1e-9)
    top = sweep.best(sid)
    assert top["value"] == pytest.approx(df["value"].max())


def test_randaugment_and_sweep_metric_are_checked_at_load():
    from mapsage.config import load_config
    from tests.support.app import PROJECT_ROOT

    with pytest.raises(ConfigError, match=r"classify.randaugment: 'rand-m9-q3'.*unknown section\(s\) q3"):
        load_config(PROJECT_ROOT / TEMPLATE, ["classify.randaugment=rand-m9-q3"])
    with pytest.raises(ConfigError, match="sweep.metric: miou is a segmentation figure.*sweep.metric=top1"):
        load_config(PROJECT_ROOT / TEMPLATE, ["sweep.parameters={train.lr: [0.001, 0.002]}"])
    cfg = load_config(PROJECT_ROOT / TEMPLATE, ["classify.randaugment=rand-m9-mstd0.5-inc1"])
    from mapsage.classify.data import ClsDataset, normalization, split_samples

    train, _ = split_samples(cfg)
    mean, std = normalization(cfg)
    plain = ClsDataset(train[:4], load_config(PROJECT_ROOT / TEMPLATE), True, 48, mean, std)
    ra = ClsDataset(train[:4], cfg, True, 48, mean, std)
    assert ra.randaug is not None and plain.randaug is None
    x = ra[0]["image"]
    assert x.shape == (3, 48, 48) and torch.isfinite(x).all()
