"""The ``reliability`` stage end to end on real demo tiles (a small random SegFormer checkpoint, two tiles):
every section written, figures consistent with each other, and the parent run's raw/EMA tiles bootstrapped."""
from __future__ import annotations

import json

import pytest
import torch

from mapsage.config import load_config
from mapsage.events import EventWriter, read_events
from mapsage.stage import StageContext
from tests.support.infer import PROJECT_ROOT, fake_finished_run, write_checkpoint

TEMPLATE = PROJECT_ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml"
REL = PROJECT_ROOT / "configs" / "stage3_inference" / "reliability_demo_segformer_mit-b0_dubai.yaml"
FAST = ["dataset.split.assign={train: [Tile 1, Tile 3, Tile 4, Tile 5, Tile 6, Tile 7, Tile 8], val: [Tile 2]}",
        "eval.mode=whole", "train.num_workers=0"]


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _parent_tiles(folder, cfg):
    """tiles events of raw and EMA weights at one epoch, as training validation writes them."""
    import numpy as np

    from mapsage.data import build_dataset
    from mapsage.metrics import SegMetrics

    ds = build_dataset(cfg, "val", train=False)
    w = EventWriter(folder)
    rng = np.random.default_rng(0)
    for variant, rate in (("raw", 0.3), ("ema", 0.25)):
        m = SegMetrics(5, keep_tiles=True)
        for i in range(len(ds)):
            lab = ds.load_mask(i)
            pred = np.where(rng.random(lab.shape) < rate, (lab.astype(int) + 1) % 5, lab).astype(np.uint8)
            pred[lab == 255] = 0
            m.update(pred, lab, tile=ds.samples[i].id)
        w.emit("tiles", split="val", variant=variant, epoch=0, rows=m.tile_rows())


def test_reliability_stage_writes_the_card(tmp_workspace):
    cfg = load_config(TEMPLATE, FAST)
    folder = fake_finished_run(tmp_workspace, "train-x", cfg, str(TEMPLATE), ts=100.0)
    write_checkpoint(cfg, folder / "checkpoints" / "best.pth", seed=1, best={"raw": 0.3})
    _parent_tiles(folder, cfg)
    rcfg = load_config(REL, FAST + ["stage.checkpoint=train-x/best.pth", "reliability.corruptions=[haze, cloud]",
                                    "reliability.severities=[1, 5]", "reliability.max_tiles=2",
                                    "reliability.extent_tiles=1", "reliability.n_boot=200"])
    rdir = tmp_workspace / "runs" / "rel-x"
    rdir.mkdir(parents=True)
    from mapsage.reliability.stage import run

    run(StageContext(cfg=rcfg, run_id="rel-x", run_dir=rdir, events=EventWriter(rdir)))
    recs, _ = read_events(rdir / "events.jsonl")
    info = next(r for r in recs if r["type"] == "run_info")
    assert info["parent_run"] == "train-x" and info["parent_relation"] == "reliability"
    card = {r["section"]: r for r in recs if r["type"] == "reliability"}
    assert set(card) == {"corruption", "calibration", "extent", "bootstrap"}
    cor = card["corruption"]
    assert [(r["corruption"], r["severity"]) for r in cor["rows"]] == [("haze", 1), ("haze", 5), ("cloud", 1),
                                                                        ("cloud", 5)]
    assert cor["n_images"] == 2 and all(r["n_images"] == 2 for r in cor["rows"])
    clouds = [r for r in cor["rows"] if r["corruption"] == "cloud"]
    assert all(0 < r["occluded_share"] < 1 and "clear" in r and "occluded" in r for r in clouds)
    assert clouds[1]["occluded_share"] > clouds[0]["occluded_share"]
    mean = sum(r["miou"] for r in cor["rows"]) / 4
    assert cor["summary"]["mean_corrupted_miou"] == pytest.approx(mean)
    assert cor["summary"]["relative_robustness"] == pytest.approx(mean / cor["clean"]["miou"])
    cal = card["calibration"]
    # T minimises the NLL (for a random model that need not lower the ECE too)
    assert cal["temperature"] > 0 and cal["nll_after"] <= cal["nll_before"] + 1e-9
    saved = json.loads((rdir / "calibration.json").read_text())
    assert saved["temperature"] == pytest.approx(cal["temperature"])
    ext = card["extent"]
    assert ext["n_tiles"] == 1 and 0 <= ext["rate"] <= 1
    assert sum(z["pixels"] for z in ext["zones"]) == ext["pixels"]
    comps = card["bootstrap"]["comparisons"]
    assert comps[0]["a"] == "raw weights" and comps[0]["block"]["by"] == "grid"     # Tile 2: 3x3 parts
    assert comps[0]["tile"]["n_tiles"] == 9 and comps[0]["block"]["mde"] > 0
    assert (rdir / "reliability.json").is_file()

    from runners.commands.reliability_cmd import card_lines
    text = "\n".join(card_lines(json.loads((rdir / "reliability.json").read_text())))
    assert "relative robustness" in text and "minimum detectable effect" in text and "ECE" in text

    from mapsage.reliability.calibration import stored_temperature
    (rdir / "config.yaml").write_text("x: 1")
    w = EventWriter(rdir)
    w.emit("status", status="succeeded", message="")
    assert stored_temperature("train-x") == pytest.approx(cal["temperature"])
