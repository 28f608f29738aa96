"""Stage 3 entry points on real data with real workbench checkpoints: checkpoint references, TTA A/B, final
evaluation with post-processing A/B, ensembles."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mapsage.config import load_config
from mapsage.errors import CheckpointError
from mapsage.events import EventWriter, read_events
from mapsage.infer.ab import decide, gain_points
from mapsage.infer.checkpoints import resolve_checkpoint
from mapsage.stage import StageContext
from tests.support.infer import PROJECT_ROOT, fake_finished_run, write_checkpoint

TEMPLATE = PROJECT_ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml"
TEMPLATE_NAME = "demo_segformer_mit-b0_dubai"
# The demo baseline with Tile 2 (nine 509 x 544 parts) as its validation tiles and two of them scored, whole-image:
# real data, real SegFormer-B0 checkpoints, small enough for a 2-core test run.
FAST = ["dataset.split.assign={train: [Tile 1, Tile 3, Tile 4, Tile 5, Tile 6, Tile 7, Tile 8], val: [Tile 2]}",
        "eval.mode=whole", "eval.max_tiles=2", "train.num_workers=0"]


@pytest.fixture
def train_cfg():
    return load_config(TEMPLATE, FAST)


@pytest.fixture
def trained_run(tmp_workspace, train_cfg):
    """A finished training run of the demo template with best.pth and best_ema.pth."""
    folder = fake_finished_run(tmp_workspace, "train-a", train_cfg, str(TEMPLATE), ts=100.0)
    write_checkpoint(train_cfg, folder / "checkpoints" / "best.pth", seed=1, best={"raw": 0.30, "ema": 0.35},
                     ema_seed=2)
    write_checkpoint(train_cfg, folder / "checkpoints" / "best_ema.pth", seed=1, best={"raw": 0.30, "ema": 0.35},
                     ema_seed=2)
    return folder


def _ctx(tmp_path, cfg, name="stage-run"):
    run_dir = tmp_path / name
    return StageContext(cfg=cfg, run_id=name, run_dir=run_dir, events=EventWriter(run_dir))


def _records(ctx, type_=None):
    recs = read_events(ctx.run_dir / "events.jsonl")[0]
    return [r for r in recs if type_ is None or r["type"] == type_]


# ----------------------------------------------------------------------------------------------------------------
# checkpoint references


def test_checkpoint_references(tmp_workspace, train_cfg, trained_run):
    # a run id: the best of best.pth / best_ema.pth by the score each was saved for (ema 0.35 > raw 0.30)
    r = resolve_checkpoint("train-a")
    assert r.path.name == "best_ema.pth" and r.weights == "ema" and r.run_id == "train-a"
    # a file (relative to nothing: absolute), with its run found from the path
    r = resolve_checkpoint(str(trained_run / "checkpoints" / "best.pth"))
    assert r.weights == "raw" and r.run_id == "train-a"
    # <run id>/<file>  (resolution only looks at files: the runs below get small placeholder .pth files)
    torch.save({"model": {}, "best": {}}, trained_run / "checkpoints" / "last.pth")
    assert resolve_checkpoint("train-a/last.pth").path.name == "last.pth"
    # latest:<template>: the newest succeeded run of that template
    newer = fake_finished_run(tmp_workspace, "train-b", train_cfg, str(TEMPLATE), ts=200.0)
    torch.save({"model": {}, "best": {"raw": 0.1}}, newer / "checkpoints" / "best.pth")
    failed = fake_finished_run(tmp_workspace, "train-c", train_cfg, str(TEMPLATE), status="failed",
                               ts=300.0)
    torch.save({"model": {}, "best": {}}, failed / "checkpoints" / "best.pth")
    other = fake_finished_run(tmp_workspace, "train-d", train_cfg, "configs/stage1_baselines/other.yaml", ts=400.0)
    torch.save({"model": {}, "best": {}}, other / "checkpoints" / "best.pth")
    r = resolve_checkpoint(f"latest:{TEMPLATE_NAME}")
    assert r.run_id == "train-b" and r.path.name == "best.pth"
    assert resolve_checkpoint("latest:configs/stage1_baselines/demo_segformer_mit-b0_dubai.yaml").run_id == "train-b"
    assert resolve_checkpoint(f"latest:{TEMPLATE_NAME}:best.pth").path == newer / "checkpoints" / "best.pth"
    with pytest.raises(CheckpointError, match="has no checkpoints/best_ema.pth"):
        resolve_checkpoint(f"latest:{TEMPLATE_NAME}:best_ema.pth")


def test_checkpoint_reference_errors_name_the_key(tmp_workspace, train_cfg):
    with pytest.raises(CheckpointError, match="stage.checkpoint is empty"):
        resolve_checkpoint(None)
    with pytest.raises(CheckpointError, match="neither a checkpoint file nor a run id"):
        resolve_checkpoint("no-such-run")
    with pytest.raises(CheckpointError, match="no succeeded run of template"):
        resolve_checkpoint("latest:nothing-like-this")
    fake_finished_run(tmp_workspace, "empty-run", train_cfg, str(TEMPLATE))
    with pytest.raises(CheckpointError, match=r"ensemble.members\[1\].checkpoint: run 'empty-run' has no"):
        resolve_checkpoint("empty-run", key="ensemble.members[1].checkpoint")


# ----------------------------------------------------------------------------------------------------------------
# the keep / drop rule


@pytest.mark.parametrize("variant,baseline,threshold,expected", [
    (0.508, 0.500, 0.8, "keep"),        # exactly +0.8 points: kept (binary rounding must not lose it)
    (0.5079, 0.500, 0.8, "drop"),       # +0.79
    (0.5081, 0.500, 0.8, "keep"),       # +0.81
    (0.4900, 0.500, 0.8, "drop"),       # a loss
    (0.5000, 0.500, 0.0, "keep"),       # threshold 0: no loss is enough
    (0.4999, 0.500, 0.0, "drop"),
    (0.513, 0.505, 0.8, "keep"),        # 0.513 - 0.505 = 0.00800000000000001 in binary
    (0.6, 0.5, 10.0, "keep"),
])
def test_keep_drop_rule_at_and_around_the_threshold(variant, baseline, threshold, expected):
    assert decide(gain_points(variant, baseline), threshold) == expected


def test_nan_gain_is_dropped():
    assert np.isnan(gain_points(float("nan"), 0.5))
    assert decide(gain_points(None, 0.5), 0.0) == "drop"


# ----------------------------------------------------------------------------------------------------------------
# stages


def test_tta_ab_stage_rows_and_decisions(tmp_path, train_cfg, trained_run):
    cfg = load_config(PROJECT_ROOT / "configs" / "stage3_inference" / "tta_ab_demo_segformer_mit-b0_dubai.yaml",
                      ["stage.checkpoint=train-a", *FAST, "eval.speed_repeats=3"])
    cfg.tta_ab.variants = cfg.tta_ab.variants[:1]
    cfg.tta_ab.variants[0].name = "flip"
    cfg.tta_ab.variants[0].scales = [1.0]
    cfg.tta_ab.threshold = 0.8
    ctx = _ctx(tmp_path, cfg)
    from mapsage.infer.stage import run_tta_ab
    run_tta_ab(ctx)
    metrics = {m["variant"]: m for m in _records(ctx, "metrics") if m["domain"] == "all"}
    assert set(metrics) == {"tta=off", "tta=flip"}
    rows = {r["variant"]: r for r in _records(ctx, "ab")}
    assert rows["tta=off"]["decision"] == "baseline" and rows["tta=off"]["ab_kind"] == "tta"
    row = rows["tta=flip"]
    assert row["baseline"] == "tta=off" and row["criterion"] == "miou" and row["threshold"] == 0.8
    expected_gain = gain_points(metrics["tta=flip"]["summary"]["miou"], metrics["tta=off"]["summary"]["miou"])
    assert row["gain"] == pytest.approx(expected_gain)
    assert row["decision"] == decide(expected_gain, 0.8)
    assert row["summary"] == metrics["tta=flip"]["summary"]
    assert row["baseline_summary"] == metrics["tta=off"]["summary"]
    assert row["images_per_s"] > 0 and row["wall_s"] > 0
    assert set(row["details"]["classes"]) == set(cfg.dataset.classes)
    assert row["details"]["views"] == 2 and row["details"]["tta"]["hflip"] is True
    # throughput from warm, repeated timings (one per tile after the warm-up) with its spread, device and threads
    tp, btp = row["details"]["throughput"], row["details"]["baseline_throughput"]
    for t in (tp, btp):
        assert t["n"] == 3 and t["min"] <= t["q1"] <= t["median"] <= t["q3"] <= t["max"]
        assert "CPU" in t["device"] and t["threads"] >= 1
    vs = row["details"]["speed_vs_baseline"]
    assert vs["ratio"] == pytest.approx(tp["median"] / btp["median"])
    assert vs["within_noise"] == (tp["q1"] <= btp["q3"] and btp["q1"] <= tp["q3"])
    assert metrics["tta=flip"]["throughput"]["median"] == pytest.approx(tp["median"])
    # predictions of both variants registered
    arts = _records(ctx, "artifact")
    assert {(a["kind"], a["variant"]) for a in arts} >= {("pred", "tta=off"), ("pred_color", "tta=flip")}
    info = [r for r in _records(ctx, "run_info")][-1]
    assert info["parent_run"] == "train-a" and info["weights"] == "ema"


def test_evaluate_stage_with_post_processing_ab(tmp_path, train_cfg, trained_run):
    cfg = load_config(PROJECT_ROOT / "configs" / "stage3_inference" / "post_demo_segformer_mit-b0_dubai.yaml",
                      ["stage.checkpoint=train-a/best.pth", *FAST])
    cfg.post.min_area = {"building": 64, "road": 64}
    cfg.post.road_class = "road"
    cfg.post.road_min_width = 3
    ctx = _ctx(tmp_path, cfg)
    from mapsage.infer.stage import run_evaluate
    run_evaluate(ctx)
    variants = [m["variant"] for m in _records(ctx, "metrics") if m["domain"] == "all"]
    assert variants == ["raw", "raw+post"]
    rows = {r["variant"]: r for r in _records(ctx, "ab")}
    assert rows["raw+post"]["ab_kind"] == "post" and rows["raw+post"]["baseline"] == "raw"
    assert rows["raw+post"]["decision"] == decide(rows["raw+post"]["gain"], cfg.post.threshold)
    assert rows["raw+post"]["details"]["post"]["min_area"] == {"building": 64, "road": 64}
    assert rows["raw"]["decision"] == "baseline"
    # the settings are the training run's: no warning; a different window setting is called out
    assert not [r for r in _records(ctx, "log") if r["level"] == "warning"]
    from mapsage.infer.stage import eval_differences
    cfg.eval = copy.deepcopy(cfg.eval)
    cfg.eval.mode = "slide"
    assert eval_differences(cfg, train_cfg) == {"eval.mode": ["whole", "slide"]}


def test_ensemble_of_identical_checkpoints_equals_one_checkpoint(tmp_path, tmp_workspace, train_cfg, trained_run):
    cfg = load_config(PROJECT_ROOT / "configs" / "stage3_inference" / "ensemble_demo_segformer_mit-b0_dubai.yaml",
                      FAST)
    same = str(trained_run / "checkpoints" / "best.pth")
    from mapsage.config.schema import EnsembleMember
    cfg.ensemble.members = [EnsembleMember(checkpoint=same), EnsembleMember(checkpoint="train-a/best.pth")]
    cfg.ensemble.average = "logit"
    ctx = _ctx(tmp_path, cfg)
    from mapsage.infer.stage import run_ensemble
    run_ensemble(ctx)
    metrics = {m["variant"]: m for m in _records(ctx, "metrics") if m["domain"] == "all"}
    assert len(metrics) == 3 and "ensemble" in metrics
    members = [v for v in metrics if v.startswith("member=")]
    ens = np.array(metrics["ensemble"]["confusion"])
    for v in members:
        # 0.6·x + 0.4·x equals x up to float rounding: at most a handful of near-tie pixels may flip
        member = np.array(metrics[v]["confusion"])
        assert np.abs(member - ens).sum() / 2 <= 1e-4 * ens.sum()
        assert metrics[v]["summary"]["miou"] == pytest.approx(metrics["ensemble"]["summary"]["miou"], abs=1e-4)
    rows = {r["variant"]: r for r in _records(ctx, "ab")}
    assert rows["ensemble"]["ab_kind"] == "ensemble" and abs(rows["ensemble"]["gain"]) < 0.01
    assert rows["ensemble"]["details"]["members"][0]["weight"] == pytest.approx(0.6)


@pytest.mark.parametrize("gain, other, guard, expected", [
    (1.2, -0.4, 0.5, "keep"),      # passes the threshold, the other metric falls within the guard
    (1.2, -1.13, 0.5, "drop"),     # the plan's refinement case: +1.2 bIoU but -1.13 mIoU is refused
    (1.2, -1.13, None, "keep"),    # no guard: the threshold alone
    (0.5, 3.0, 0.5, "drop"),       # below the threshold whatever the other metric does
])
def test_decision_rule_weighs_both_metrics(gain, other, guard, expected):
    from mapsage.infer.ab import decide, rule_text

    assert decide(gain, 1.0, other, guard) == expected
    assert rule_text("mbiou", 1.0, 0.5) == "keep if gain >= 1 points of mbiou and miou falls by at most 0.5 points"
