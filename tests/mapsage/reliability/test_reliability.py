"""The reliability card's parts: corruptions, calibration, spatial blocks and the minimum detectable effect,
checkpoint selection by the combo score, validation loss, extent zones."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mapsage.data.io import load_image
from mapsage.metrics import SegMetrics, paired_bootstrap
from mapsage.metrics.blocks import block_plan
from mapsage.reliability import calibration as cal
from mapsage.reliability.corruptions import CORRUPTIONS, LEVELS, corrupt, corruption_seed
from tests.support.metrics import DUBAI, loveda_masks


@pytest.fixture(scope="module")
def tile() -> np.ndarray:
    img = load_image(DUBAI / "Tile 3" / "images" / "image_part_005.jpg")
    return np.ascontiguousarray(img[:192, :224])


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_is_deterministic_and_changes_the_image(tile, name):
    for sev in (1, 3, 5):
        a = corrupt(tile, name, sev, "Tile 3/image_part_005")
        b = corrupt(tile.copy(), name, sev, "Tile 3/image_part_005")
        assert a.image.shape == tile.shape and a.image.dtype == np.uint8
        assert np.array_equal(a.image, b.image), f"{name}@{sev} is not deterministic"
        changed = np.abs(a.image.astype(int) - tile.astype(int)).mean()
        assert changed > 1.0, f"{name}@{sev} hardly changes the image (mean |Δ| {changed:.2f})"
    # stronger severity, stronger change (mean absolute difference), for every corruption
    d1 = np.abs(corrupt(tile, name, 1, "t").image.astype(int) - tile).mean()
    d5 = np.abs(corrupt(tile, name, 5, "t").image.astype(int) - tile).mean()
    assert d5 > d1
    assert corruption_seed("a", name, 1) != corruption_seed("b", name, 1)


def test_cloud_reports_the_occluded_pixels(tile):
    for sev in (1, 3, 5):
        c = corrupt(tile, "cloud", sev, "t")
        assert c.occluded is not None and c.occluded.shape == tile.shape[:2]
        assert abs(c.occluded.mean() - LEVELS["cloud"][sev - 1]) < 0.08
        # under the opaque cloud the image is close to the cloud colour
        assert c.image[c.occluded].mean() > 170
    assert corrupt(tile, "haze", 3, "t").occluded is None


def test_unknown_corruption_is_a_user_error(tile):
    from mapsage.errors import UserError
    with pytest.raises(UserError, match="unknown corruption 'fog'"):
        corrupt(tile, "fog", 1, "t")
    with pytest.raises(UserError, match="outside 1..5"):
        corrupt(tile, "jpeg", 6, "t")


def test_ece_against_a_hand_computed_case():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.45, 0.55], [0.99, 0.01]])
    labels = np.array([0, 1, 1, 0, 255])                    # the last pixel is ignored
    # 10 fixed bins: (0.5,0.6] holds 0.6 (right) and 0.55 (wrong): |0.5 - 0.575| x 2; (0.7,0.8] holds 0.8 (wrong):
    # 0.8; (0.8,0.9] holds 0.9 (right): 0.1. ECE = (0.15 + 0.8 + 0.1) / 4
    assert cal.ece(probs, labels, n_bins=10) == pytest.approx(1.05 / 4)
    # 2 fixed bins: every confidence is above 0.5 -> one bin, accuracy 0.5, mean confidence 0.7125
    assert cal.ece(probs, labels, n_bins=2) == pytest.approx(0.2125)
    # class-wise, class 1 with 2 bins: p1 = .1,.2 (labels 0,1) in [0,.5]: |0.5 - 0.15|; .6,.55 (1,0): |0.5 - 0.575|
    assert cal.classwise_ece(probs, labels, n_bins=2)[1] == pytest.approx((2 * 0.35 + 2 * 0.075) / 4)
    # equal-mass bins put the same number of pixels in each bin
    b = cal.reliability_bins(np.linspace(0.3, 1.0, 100), np.ones(100), n_bins=4, scheme="mass")
    assert b["count"] == [25, 25, 25, 25]


def test_temperature_scaling_fits_an_overconfident_model_and_lowers_ece():
    rng = np.random.default_rng(0)
    n, c = 20000, 5
    labels = rng.integers(0, c, n)
    true_logits = rng.normal(0, 1, (n, c))
    true_logits[np.arange(n), labels] += 1.5
    # sample labels from softmax(true_logits) so true_logits are calibrated; the model is 3x overconfident
    p = cal._softmax(true_logits)
    labels = np.array([rng.choice(c, p=row) for row in p])
    over = 3.0 * true_logits
    T = cal.fit_temperature(over, labels)
    assert T == pytest.approx(3.0, rel=0.1)
    assert cal.nll(over, labels, T) < cal.nll(over, labels, 1.0)
    assert cal.ece(cal._softmax(over / T), labels) < 0.5 * cal.ece(cal._softmax(over), labels)

    acc = cal.CalibrationAccumulator(c, 255, n_bins=15, sample_per_tile=4000)
    for i in range(4):
        sl = slice(i * 5000, (i + 1) * 5000)
        probs = torch.from_numpy(cal._softmax(over[sl]).T.reshape(c, 50, 100).copy())
        acc.update(probs, torch.from_numpy(labels[sl].reshape(50, 100)), tile=f"t{i}")
    res = acc.result()
    assert res["n_pixels"] == n and res["n_sampled"] == 16000
    assert res["temperature"] == pytest.approx(3.0, rel=0.15)
    assert res["ece_after"] < res["ece_before"]
    assert res["heldout"]["ece_after"] < res["ece_before"]
    assert res["ece_before_all"] == pytest.approx(cal.ece(cal._softmax(over), labels), abs=1e-6)
    assert res["ece_before"] == pytest.approx(res["ece_before_all"], abs=0.01)   # the weighted sample estimates it


def _scene_rows(shift: float, seed: int, scenes: int = 3, per_side: int = 3):
    """Tiles of ``scenes`` scenes (3x3 parts each) whose error rate is shared within a scene (correlated)."""
    rng = np.random.default_rng(seed)
    masks = [m for _, m in loveda_masks()]
    m = SegMetrics(7, keep_tiles=True)
    for s in range(scenes):
        scene_rate = 0.05 + 0.3 * ((s * 7919 + seed) % 10) / 10 + shift
        for k in range(per_side * per_side):
            lab = masks[(s + k) % len(masks)][::4, ::4]
            pred = lab.copy()
            flip = rng.random(lab.shape) < scene_rate
            pred[flip] = (lab[flip].astype(int) + 1) % 7
            pred[lab == 255] = 0
            m.update(pred, lab, tile=f"scene{s}/image_part_{k + 1:03d}")
    return m.tile_rows()


def test_block_plan_reads_scenes_and_grids():
    tiles = [f"Tile {g}/image_part_{i:03d}" for g in (3, 8) for i in range(1, 10)]
    p = block_plan(tiles, "auto", r"^(?P<group>Tile [0-9]+)/", k=2, min_blocks=8)
    assert p.by == "grid" and p.n_blocks == 8 and "2 scene(s)" in p.note
    assert p.ids["Tile 3/image_part_001"] == p.ids["Tile 3/image_part_005"] != p.ids["Tile 3/image_part_009"]
    g = block_plan(tiles, "group", r"^(?P<group>Tile [0-9]+)/")
    assert g.n_blocks == 2 and g.ids["Tile 8/image_part_004"] == "Tile 8"
    yx = block_plan([f"s/{y}_{x}" for y in range(0, 1024, 256) for x in range(0, 1024, 256)], "grid", k=2)
    assert yx.n_blocks == 4 and yx.ids["s/0_256"] == yx.ids["s/256_0"] != yx.ids["s/512_512"]
    assert block_plan(["val/Urban/3546", "val/Rural/12"], "auto").by == "tile"


def test_block_bootstrap_is_wider_than_tilewise_and_reports_the_mde():
    a = _scene_rows(0.0, 1, scenes=4)
    b = _scene_rows(-0.03, 1, scenes=4)
    plan = block_plan([r["tile"] for r in a], "group")
    res = paired_bootstrap(a, b, n=1000, seed=0, blocks=plan.ids, block_by=plan.by)
    tw = res["tilewise"]
    assert res["n_blocks"] == 4 and res["unit"] == "block" and res["block_by"] == "group"
    assert res["ci_high"] - res["ci_low"] >= tw["ci_high"] - tw["ci_low"]
    assert res["mde"] >= tw["mde"] > 0
    assert res["mde"] == pytest.approx(res["se"] * 2.8016, rel=1e-3)      # z(0.975) + z(0.8)
    plain = paired_bootstrap(a, b, n=1000, seed=0)
    assert plain["ci_low"] == tw["ci_low"] and plain["ci_high"] == tw["ci_high"] and "tilewise" not in plain
    with pytest.raises(ValueError, match="no block"):
        paired_bootstrap(a, b, n=10, blocks={"x": "y"})


class _Res:
    def __init__(self, miou):
        self.miou = miou
        self.summary = {"miou": miou}


def _trainer(select_by: str):
    from mapsage.config import load_config
    from mapsage.events import NullEvents
    from mapsage.train.engine import Trainer

    cfg = load_config("configs/stage1_baselines/demo_segformer_mit-b0_dubai.yaml",
                      [f"train.select_by={select_by}", "train.combo_alpha=0.7", "train.early_stop.patience=0"])
    t = Trainer.__new__(Trainer)
    t.cfg, t.events, t.best, t.val_history, t.bad_epochs = cfg, NullEvents(), {
        "raw": None, "ema": None, "raw_epoch": None, "ema_epoch": None, "monitor": None, "monitor_epoch": None}, {}, 0
    t.saved = []
    t._state = lambda *a, **k: {}
    t._save = lambda name, state, **meta: t.saved.append((name, meta["epoch"]))
    return t


def test_combo_selection_picks_another_checkpoint_than_clean_selection():
    # epoch 0: clean 0.60, corrupted 0.50 (S = 0.57); epoch 1: clean 0.62 but fragile, corrupted 0.30 (S = 0.524)
    history = [(0.60, 0.50), (0.62, 0.30), (0.58, 0.40)]
    picked = {}
    for mode in ("clean", "combo"):
        t = _trainer(mode)
        for epoch, (clean, corrupted) in enumerate(history):
            t.corrupted = {"raw": corrupted}
            t._after_validation(epoch, {"raw": _Res(clean)})
        picked[mode] = t.best["raw_epoch"]
        assert t.saved[-1] == ("best.pth", picked[mode])
    assert picked == {"clean": 1, "combo": 0}
    from mapsage.train.engine import selection_scores
    s = selection_scores({"raw": _Res(0.6)}, "miou", "combo", 0.7, {"raw": 0.5})
    assert s["raw"] == pytest.approx(0.57)
    assert selection_scores({"raw": _Res(0.6)}, "miou", "combo", 0.7, {})["raw"] == -math.inf


def test_validation_loss_is_the_training_loss_on_log_probabilities():
    from mapsage.config import load_config
    from mapsage.losses import SegLoss, Targets
    from mapsage.train.engine import _ValLoss

    cfg = load_config("configs/stage1_baselines/demo_segformer_mit-b0_dubai.yaml")
    loss = SegLoss(cfg)
    loss.start_epoch(0, {})
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 5, 16, 16, generator=g)
    mask = torch.randint(0, 5, (16, 16), generator=g)
    mask[:2] = 255
    hook = _ValLoss(loss)
    hook(logits.softmax(1), {"mask": mask})
    expected, _ = loss(logits, Targets(mask=mask.unsqueeze(0), ignore_index=255))
    assert hook.mean() == pytest.approx(float(expected), rel=1e-4)


def test_extent_zones_mark_borders_and_seams():
    from mapsage.reliability.extent import _edges, zones

    rows, cols = _edges(100, 120, [64, 64], [64, 64])
    assert rows.nonzero()[0].tolist() == [36, 64] and cols.nonzero()[0].tolist() == [56, 64]
    z = zones(100, 120, rows, cols, 4)
    assert z[0, 50] == 0 and z[50, 0] == 0 and z[37, 20] == 1 and z[20, 20] == 2


def test_temperature_reaches_inference_and_ensembles():
    from types import SimpleNamespace

    from mapsage.config.schema import TTACfg
    from mapsage.infer.core import infer_probs
    from mapsage.infer.ensemble import Ensemble

    class Fixed(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.scale = scale
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return self.scale * torch.cat([x[:, :1], -x[:, :1], x[:, 1:2]], 1)

    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ev = SimpleNamespace(mode="whole", tta=TTACfg(), temperature=None)
    base = infer_probs(Fixed(4.0), x, ev, 3)
    ev.temperature = 2.0
    scaled = infer_probs(Fixed(4.0), x, ev, 3)
    assert torch.allclose(scaled, infer_probs(Fixed(2.0), x, SimpleNamespace(mode="whole", tta=TTACfg()), 3),
                          atol=1e-6)
    assert torch.equal(base.argmax(1), scaled.argmax(1)) and scaled.max(1).values.mean() < base.max(1).values.mean()
    ens = Ensemble([Fixed(4.0), Fixed(6.0)], [0.5, 0.5], temperatures=[2.0, 3.0], num_classes=3)
    ref = Ensemble([Fixed(2.0), Fixed(2.0)], [0.5, 0.5], num_classes=3)
    assert torch.allclose(ens(x), ref(x), atol=1e-6)


def test_report_carries_the_reliability_section(tmp_path):
    from mapsage.report import ReportData, render_html, render_markdown
    from mapsage.report.export import write_report

    card = {"corruption": {"split": "val", "rows": [
        {"corruption": "haze", "label": "haze", "severity": 1, "miou": 0.40, "mbiou": 0.20},
        {"corruption": "haze", "label": "haze", "severity": 3, "miou": 0.30, "mbiou": 0.15}],
        "clean": {"miou": 0.5, "mbiou": 0.3},
        "summary": {"clean_miou": 0.5, "mean_corrupted_miou": 0.35, "relative_robustness": 0.7}},
        "calibration": {"ece_before": 0.08, "ece_after": 0.02, "temperature": 1.7,
                        "diagram_before": {"conf": [0.9], "acc": [0.8], "count": [10]},
                        "diagram_after": {"conf": [0.82], "acc": [0.8], "count": [10]}}}
    data = ReportData(runs=[{"run_id": "r1", "name": "r1"}, {"run_id": "r2", "name": "r2"}],
                      reliability={"r1": card})
    html = render_html(data)
    assert 'id="reliability"' in html and "severity 3: mIoU / BIoU %" in html and "30.00 / 15.00" in html
    md = render_markdown(data)
    assert "## Reliability" in md and "| r1 | 50.00 | 35.00 | 0.70 |" in md and "| 8.00 | 2.00 | 1.70 |" in md
    files = write_report(data, None, csv_dir=tmp_path)
    import pandas as pd
    rel = pd.read_csv(files.csv["reliability"])
    assert list(rel["corruption"]) == ["clean", "haze", "haze"] and list(rel["severity"]) == [0, 1, 3]
