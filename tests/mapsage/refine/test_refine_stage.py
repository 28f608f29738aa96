"""The refinement A/B stage on real Dubai tiles with a real workbench checkpoint: metrics, tiles, ab decisions and
artifacts per chain; SAM chains skipped (with the config key named) when there is no SAM checkpoint."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mapsage.config import load_config
from mapsage.events import EventWriter, read_events
from mapsage.refine import SegmentAnythingPredictor, register_predictor
from mapsage.refine.stage import run
from mapsage.stage import StageContext
from tests.support.infer import fake_finished_run, write_checkpoint
from tests.support.refine import ROOT, tiny_sam

TEMPLATE = ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml"
REFINE = ROOT / "configs" / "stage4_refine_ensemble" / "refine_demo_segformer_mit-b0_dubai.yaml"
# Tile 2 (nine 509 x 544 parts) as the validation tiles, whole-image inference: small enough for 2 CPU cores.
FAST = ["dataset.split.assign={train: [Tile 1, Tile 3, Tile 4, Tile 5, Tile 6, Tile 7, Tile 8], val: [Tile 2]}",
        "eval.mode=whole", "train.num_workers=0", "runtime.device=cpu", "runtime.threads=2"]


@pytest.fixture
def trained(tmp_workspace):
    cfg = load_config(TEMPLATE, FAST)
    folder = fake_finished_run(tmp_workspace, "demo-train", cfg, str(TEMPLATE), ts=100.0)
    write_checkpoint(cfg, folder / "checkpoints" / "best_ema.pth", seed=1, best={"ema": 0.3}, ema_seed=2)
    return folder


def _ctx(tmp_path, overrides):
    cfg = load_config(REFINE, FAST + overrides)
    run_dir = tmp_path / "refine-run"
    return StageContext(cfg=cfg, run_id="refine-run", run_dir=run_dir, events=EventWriter(run_dir))


def _records(ctx, kind):
    return [r for r in read_events(ctx.run_dir / "events.jsonl")[0] if r["type"] == kind]


@pytest.mark.slow
def test_refine_stage_all_chains(tmp_path, trained):
    weights = tmp_path / "tiny_sam.pth"
    torch.save(tiny_sam(seed=5).state_dict(), weights)

    def factory(model_type, checkpoint, device):
        model = tiny_sam()
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        return SegmentAnythingPredictor(model.to(device))

    register_predictor("tiny_test", factory)
    ctx = _ctx(tmp_path, ["stage.checkpoint=latest:demo_segformer_mit-b0_dubai", "refine.max_tiles=2",
                          "refine.sam.model_type=tiny_test", f"refine.sam.checkpoint={weights}",
                          "refine.sam.min_mask_iou=0.0", "refine.sam.min_component_area=2000"])
    run(ctx)
    chains = ["raw", "crf", "sam", "sam+crf"]
    info = _records(ctx, "run_info")[0]
    assert info["chains"] == chains and info["unavailable_chains"] == {} and info["parent_run"] == "demo-train"
    assert info["n_tiles"] == 2 and info["n_split"] == 9
    metrics = {r["variant"]: r for r in _records(ctx, "metrics") if r["domain"] == "all"}
    assert sorted(metrics) == sorted(f"refine={c}" for c in chains)
    tiles = {r["variant"]: r for r in _records(ctx, "tiles")}
    assert all(len(tiles[f"refine={c}"]["rows"]) == 2 for c in chains)
    ab = {r["variant"]: r for r in _records(ctx, "ab")}
    assert ab["refine=raw"]["decision"] == "baseline"
    for c in chains[1:]:
        row = ab[f"refine={c}"]
        assert row["ab_kind"] == "refine" and row["criterion"] == "mbiou" and row["baseline"] == "refine=raw"
        gain = 100 * (metrics[f"refine={c}"]["summary"]["mbiou"] - metrics["refine=raw"]["summary"]["mbiou"])
        assert row["gain"] == pytest.approx(gain, abs=1e-6)
        assert row["decision"] == ("keep" if gain > row["threshold"] else "drop")
        d = row["details"]
        assert d["tiles_better"] + d["tiles_worse"] + d["tiles_same"] == 2
        assert row["images_per_s"] > 0
    assert ab["refine=sam"]["details"]["sam"]["prompts"] > 0
    # artifacts: image, label, raw (pred) and refined masks, each id PNG with a colour PNG beside it
    arts = _records(ctx, "artifact")
    kinds = {(a["kind"], a["variant"]) for a in arts}
    assert ("image", None) in kinds and ("label", "label") in kinds and ("pred", "refine=raw") in kinds
    assert {("refined", f"refine={c}") for c in chains[1:]} <= kinds
    for a in arts:
        path = Path(a["path"]) if Path(a["path"]).is_absolute() else ctx.run_dir / a["path"]
        assert path.is_file(), path
        if a["kind"] in ("label", "pred", "refined"):
            ids = np.array(Image.open(path))
            colour = np.array(Image.open(ctx.run_dir / a["meta"]["color"]))
            assert ids.ndim == 2 and colour.shape == ids.shape + (3,)
            assert set(np.unique(ids)) <= set(range(5)) | {255}
        if a["kind"] == "refined":
            assert math.isfinite(a["meta"]["mbiou"]) and "d_mbiou_points" in a["meta"]


def test_refine_stage_without_sam_checkpoint_runs_crf(tmp_path, trained):
    ctx = _ctx(tmp_path, ["stage.checkpoint=demo-train", "refine.max_tiles=1"])
    run(ctx)
    info = _records(ctx, "run_info")[0]
    assert info["chains"] == ["raw", "crf"]
    assert set(info["unavailable_chains"]) == {"sam", "sam+crf"}
    assert all("refine.sam.checkpoint" in why for why in info["unavailable_chains"].values())
    logs = [r["message"] for r in _records(ctx, "log")]
    assert any("refine.sam.checkpoint" in m and "skipped" in m for m in logs)
    ab = {r["variant"]: r for r in _records(ctx, "ab")}
    assert set(ab) == {"refine=raw", "refine=crf"}
    assert ab["refine=crf"]["details"]["unavailable_chains"] == info["unavailable_chains"]
