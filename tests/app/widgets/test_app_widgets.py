"""The app's pure helpers: knobs -> overrides, class palettes, figures, the experiment table, comparisons.

No Streamlit script runs here; the data are real (the bundled templates and dataset configs, the real LoveDA
masks through the metrics engine)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.widgets import compare, knobs, tables
from app.widgets.palette import palette_from_config, swatches_html, text_color_on
from mapsage import figures
from mapsage.config import ConfigError, load_config, run_name

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml"
LOVEDA = ROOT / "tests" / "data" / "loveda"


# ---------------------------------------------------------------------------------------------------------- knobs

def test_untouched_knobs_give_no_override_and_the_template_itself():
    cfg = load_config(DEMO)
    assert knobs.to_overrides(cfg, knobs.defaults(cfg)) == []


def test_edited_knobs_become_overrides_that_resolve_to_the_edits():
    cfg = load_config(DEMO)
    epochs = cfg.train.epochs + 1
    assert cfg.train.steps_per_epoch and cfg.augment.crop_size != [192, 160] and cfg.model.encoder != "mit_b2"
    values = knobs.defaults(cfg)
    values.update({
        "model.encoder": "mit_b2", "model.pretrained": "/weights/mit b2 imagenet.pth", "train.epochs": epochs,
        "augment.crop_size": [192, 160], "train.steps_per_epoch": None, "dataset.max_samples": 4,
        "runtime.gpus": 2, "eval.tta": {"scales": [0.75, 1.0, 1.25], "hflip": True},
        "loss.schedule": knobs.rows_to_schedule([
            {"from_epoch": 0, "ce": 0.7, "dice": 0.3},
            {"from_epoch": 20, "ce": 0.6, "dice": 0.3, "lovasz": 0.1, "ohem": 0.0}]),
    })
    overrides = knobs.to_overrides(cfg, values)
    keys = [o.split("=", 1)[0] for o in overrides]
    assert keys == ["model.encoder", "model.pretrained", "loss.schedule", "augment.crop_size", "train.epochs",
                    "train.steps_per_epoch", "dataset.max_samples", "eval.tta.scales", "eval.tta.hflip",
                    "runtime.gpus"]
    out = load_config(DEMO, overrides)
    assert out.model.encoder == "mit_b2" and out.model.pretrained == "/weights/mit b2 imagenet.pth"
    assert out.train.epochs == epochs and out.train.steps_per_epoch is None and out.dataset.max_samples == 4
    assert out.augment.crop_size == [192, 160] and out.runtime.gpus == 2
    assert out.eval.tta.scales == [0.75, 1.0, 1.25] and out.eval.tta.hflip is True
    assert [(p.from_epoch, p.terms) for p in out.loss.schedule] == [
        (0, {"ce": 0.7, "dice": 0.3}), (20, {"ce": 0.6, "dice": 0.3, "lovasz": 0.1})]
    assert run_name(out) == f"segformer_mit-b2_2xb{cfg.train.batch_size}-{epochs}e_dubai-192x160"


def test_tta_variants_round_trip_through_the_editor_rows():
    cfg = load_config(ROOT / "configs" / "stage3_inference" / "tta_ab_demo_segformer_mit-b0_dubai.yaml")
    rows = knobs.variants_to_rows(cfg)
    assert [r["name"] for r in rows] == [v.name for v in cfg.tta_ab.variants]
    rows.append({"name": "ms-vflip", "scales": "0.5, 1.0", "hflip": False, "vflip": True})
    values = knobs.defaults(cfg)
    values["tta_ab.variants"] = knobs.rows_to_variants(rows)
    overrides = knobs.to_overrides(cfg, values)
    assert len(overrides) == 1 and overrides[0].startswith("tta_ab.variants=")
    out = load_config(cfg.meta["source"], overrides)
    assert out.tta_ab.variants[-1].name == "ms-vflip" and out.tta_ab.variants[-1].scales == [0.5, 1.0]
    assert out.tta_ab.variants[-1].vflip is True


@pytest.mark.parametrize("rows, fragment", [
    ([{"from_epoch": 5, "ce": 1.0}], "must start at epoch 0"),
    ([{"from_epoch": 0, "ce": 1.0}, {"from_epoch": 0, "dice": 1.0}], "same epoch"),
    ([{"from_epoch": 0, "ce": -0.1}], "negative"),
    ([{"from_epoch": 0, "ce": 0.0}], "at least one phase"),
])
def test_bad_loss_schedules_are_refused_naming_the_key(rows, fragment):
    with pytest.raises(knobs.KnobError, match=fragment) as exc:
        knobs.rows_to_schedule(rows)
    assert "loss.schedule" in str(exc.value)


def test_bad_knob_values_name_their_key():
    with pytest.raises(knobs.KnobError, match="eval.tta.scales"):
        knobs.parse_scales("0.75, big", "eval.tta.scales")
    with pytest.raises(knobs.KnobError, match="used twice"):
        knobs.rows_to_variants([{"name": "a", "scales": "1"}, {"name": "a", "scales": "1"}])


def test_extra_overrides_are_checked_and_a_misspelt_key_names_the_nearest():
    assert knobs.parse_extra("# quick run\ntrain.lr=1e-4\n--set augment.cutmix_p=0.2\n\n") == [
        "train.lr=1e-4", "augment.cutmix_p=0.2"]
    with pytest.raises(ConfigError, match="key.path=value"):
        knobs.parse_extra("train.lr")
    with pytest.raises(ConfigError, match="train.epochs"):
        knobs.resolve(DEMO, knobs.parse_extra("train.epoch=3"))


def test_applicable_knobs_follow_the_stage_kind():
    train = load_config(DEMO)
    tta = load_config(ROOT / "configs" / "stage3_inference" / "tta_ab_demo_segformer_mit-b0_dubai.yaml")
    assert {"model.arch", "loss.schedule", "augment.crop_size", "train.epochs", "runtime.gpus"} <= set(
        knobs.applicable(train))
    assert {"stage.checkpoint", "tta_ab.variants", "tta_ab.threshold"} <= set(knobs.applicable(tta))
    assert "loss.schedule" not in knobs.applicable(tta)


# ---------------------------------------------------------------------------------------------------------- palette

def test_palette_comes_from_the_dataset_config_in_class_order():
    cfg = load_config(DEMO)
    pal = palette_from_config(cfg)
    assert pal.names == ("water", "land", "road", "building", "vegetation")
    assert pal.colors == ("#E2A929", "#8429F6", "#6EC1E4", "#3C1098", "#FEDD3A")
    # the stored (plain mapping) form of a run's config gives the same palette
    from mapsage.config import to_dict

    assert palette_from_config(to_dict(cfg)) == pal
    assert pal.color_of("road") == "#6EC1E4" and pal.color_of(3) == "#3C1098"
    html = swatches_html(pal)
    assert all(c in html for c in pal.colors) and "4 · vegetation" in html
    assert text_color_on("#FEDD3A") == "#000000" and text_color_on("#3C1098") == "#FFFFFF"


def test_a_dataset_without_palette_gets_stable_distinct_colours():
    pal = palette_from_config({"dataset": {"classes": ["a", "b", "c"]}})
    assert len(set(pal.colors)) == 3 and palette_from_config({"dataset": {"classes": ["a", "b", "c"]}}) == pal


# ---------------------------------------------------------------------------------------------------------- charts

@pytest.fixture(scope="module")
def loveda_eval():
    """A real evaluation: the metrics engine on the LoveDA masks against copies shifted by 8 px."""
    from mapsage.config import load_config as lc
    from mapsage.data import load_mask
    from mapsage.metrics import SegMetrics

    cfg = lc(ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_loveda-samples.yaml")
    m = SegMetrics(cfg.dataset.num_classes, class_names=cfg.dataset.classes, keep_tiles=True)
    for p in sorted(LOVEDA.glob("*/*/masks_png/*.png")):
        label = load_mask(p, cfg.dataset)
        pred = np.roll(label, 8, axis=1)
        pred[pred == 255] = 0
        m.update(pred, label, tile=p.stem)
    return cfg, m.result(), m


def _class_frame(res) -> pd.DataFrame:
    return pd.DataFrame([{**c, "class_id": c["id"], "class_name": c["name"], "excluded": c["iou"] is None}
                         for c in res.per_class])


def test_per_class_bars_use_the_dataset_colours_and_mark_the_weakest(loveda_eval):
    cfg, res, _ = loveda_eval
    pal = palette_from_config(cfg)
    rows = _class_frame(res)
    fig = figures.per_class_bars(rows, pal, "iou", "IoU", "val")
    bar = fig.data[0]
    present = rows.dropna(subset=["iou"])
    assert list(bar.marker.color) == [pal.color_of(n) for n in rows["class_name"]]
    weakest = figures.weakest(rows, 3)
    assert weakest == list(present.nsmallest(3, "iou")["class_name"])
    marked = [n for n, t in zip(bar.x, bar.text) if "weakest" in t]
    assert sorted(marked) == sorted(weakest)
    assert np.allclose([v for v in bar.y if v == v], present.sort_values("class_id")["iou"] * 100)


def test_confusion_heatmap_row_normalised_rows_sum_to_100(loveda_eval):
    cfg, res, _ = loveda_eval
    m = np.asarray(res.confusion)
    fig = figures.confusion_heatmap(m, list(cfg.dataset.classes), normalise=True)
    z = np.asarray(fig.data[0].z, dtype=float)
    sums = m.sum(axis=1)
    for row, total in zip(z, sums):
        if total > 0:
            assert np.nansum(row) == pytest.approx(100.0)
        else:
            assert np.isnan(row).all()
    counts = figures.confusion_heatmap(m, list(cfg.dataset.classes), normalise=False)
    assert np.array_equal(np.asarray(counts.data[0].z), m)


def test_plateau_note_measures_the_gain_over_the_last_fifth():
    evals = pd.DataFrame({"epoch": list(range(10)) * 2, "variant": ["raw"] * 10 + ["ema"] * 10,
                          "domain": "all", "miou": [0.1 + 0.02 * e for e in range(10)] + [0.05] * 10})
    note = figures.plateau_note(evals)
    # raw and ema both have 10 epochs; raw ends higher. Last 20 % of epochs 0..9: from epoch index 7 to 9
    assert note["variant"] == "raw" and note["start_epoch"] == 8 and note["end_epoch"] == 10
    assert note["gain_points"] == pytest.approx((0.28 - 0.24) * 100)
    assert figures.plateau_note(evals.head(1)) is None


def test_training_curve_panels_follow_scalar_names():
    names = {"loss": "loss", "ce": "loss", "loss_w/ce": "loss_w", "lr": "lr", "grad_norm_max": "grad_norm",
             "epoch_time": "time", "data_time": "time", "peak_mem_mb": "mem", "images_per_s": "speed",
             "frozen_share": "freeze", "something": "other"}
    assert {n: figures.curve_group(n) for n in names} == names


# ---------------------------------------------------------------------------------------------------------- table

def test_experiment_table_labels_every_figure_with_its_split_and_ranks():
    runs = pd.DataFrame({
        "run_id": ["a", "b", "c"], "name": ["A", "B", "C"], "status": ["succeeded", "running", "failed"],
        "plan_stage": [1, 1, 2], "kind": ["train"] * 3, "backbone": ["mit_b0", "mit_b2", "mit_b0"],
        "pretrain": "none", "loss": "ce0.7+dice0.3", "aug": "hflip", "lr_schedule": "AdamW", "size": "512x512",
        "tta": "off", "post": "off", "fps": [3.0, 2.0, None], "dataset": "dubai", "duration_s": [60.0, 30.0, 5.0],
        "started_at": pd.to_datetime([1, 2, 3], unit="s", utc=True),
        "created_at": pd.to_datetime([1, 2, 3], unit="s", utc=True), "title": "", "split": "val"})
    board = pd.DataFrame({"run_id": ["b", "a"], "miou": [0.5, 0.4], "mbiou": [0.2, 0.3], "macc": [0.6, 0.5],
                          "mf1": [0.6, 0.5], "aacc": [0.8, 0.7], "variant": ["raw", "ema"], "epoch": [4, None],
                          "n_images": [18, 18], "iou_water": [0.9, 0.8], "rank": [1, 2],
                          "role": ["result", "result"], "completeness": ["full", "full"],
                          "identity": ["val · 18/18 tiles · raw ep 5", "val · 18/18 tiles · EMA final"]})
    t = tables.experiment_table(runs, board, "val", "miou", per_class=True)
    assert list(t["Run"]) == ["B", "A", "C"] and list(t["Rank"].fillna(0)) == [1, 2, 0]
    for col in ("mIoU (val)", "Boundary IoU (val)", "IoU water (val)", "Evaluation", "Ranked as"):
        assert col in t.columns
    assert t.loc[0, "mIoU (val)"] == pytest.approx(50.0) and t.loc[0, "Evaluation"] == "val · 18/18 tiles · raw ep 5"
    assert t.loc[2, "Evaluation"] == "–" and t.loc[0, "Ranked as"] == "own result"
    assert [c for c, _ in tables.DESCRIPTIVE] and all(label in t.columns for _, label in tables.DESCRIPTIVE)
    by_bbiou = tables.experiment_table(runs, board, "val", "mbiou")
    assert list(by_bbiou["Run"])[:2] == ["A", "B"]
    assert "Dice (mmseg mDice) (val)" in t.columns and "mF1 (val)" not in t.columns
    # ranking by the face-parsing mean F-score (kept in the evaluations' JSON) adds its column
    board_fg = board.assign(mfscore_fg=[0.3, 0.7])
    by_fg = tables.experiment_table(runs, board_fg, "val", "mfscore_fg")
    assert list(by_fg["Run"])[:2] == ["A", "B"] and by_fg.loc[0, "mean F-score (foreground) (val)"] == 70.0
    assert tables.RANK_METRICS["mean F-score (foreground)"] == "mfscore_fg"
    assert list(tables.filter_runs(runs, statuses=["running"])["run_id"]) == ["b"]
    assert list(tables.filter_runs(runs, text="MIT_B2")["run_id"]) == ["b"]
    assert list(tables.filter_runs(runs, backbones=["mit_b0"], stages=[2])["run_id"]) == ["c"]


# ---------------------------------------------------------------------------------------------------------- compare

def test_config_diff_lists_only_differing_keys():
    a = {"model": {"encoder": "mit_b0", "arch": "segformer"}, "train": {"lr": 6e-5}, "meta": {"x": 1}}
    b = {"model": {"encoder": "mit_b2", "arch": "segformer"}, "train": {"lr": 6e-5}, "meta": {"x": 2},
         "loss": {"ohem_keep": 0.3}}
    d = compare.config_diff({"A": a, "B": b})
    assert list(d["key"]) == ["loss.ohem_keep", "model.encoder"]
    assert d.set_index("key").loc["model.encoder"].tolist() == ["mit_b0", "mit_b2"]
    assert d.set_index("key").loc["loss.ohem_keep", "A"] == "∅"


def test_bootstrap_rows_are_mapsage_paired_bootstrap_and_mark_the_noise(loveda_eval):
    from mapsage.metrics import paired_bootstrap

    _, _, metrics = loveda_eval
    rows = pd.DataFrame(metrics.tile_rows())
    same, problems = compare.bootstrap_rows({"ref": rows, "copy": rows.copy()}, "ref", n=500)
    assert not problems and same.loc[0, "delta"] == 0 and not same.loc[0, "significant"]
    assert compare.verdict(same.iloc[0]).startswith("inside the noise")
    other = rows.copy()
    other["intersect"] = [list(np.asarray(i) // 2) for i in other["intersect"]]
    got, _ = compare.bootstrap_rows({"ref": rows, "worse": other}, "ref", n=500, seed=3)
    direct = paired_bootstrap(rows, other, n=500, seed=3)
    assert got.loc[0, "delta"] == pytest.approx(direct["delta"]) and got.loc[0, "delta"] < 0
    assert (got.loc[0, "lo"], got.loc[0, "hi"]) == pytest.approx((direct["ci_low"], direct["ci_high"]))
    mismatch, problems = compare.bootstrap_rows({"ref": rows, "fewer": rows.head(2)}, "ref", n=100)
    assert mismatch.empty and "different tiles" in problems["fewer"]


def test_class_deltas_match_by_class_name():
    ref = pd.DataFrame({"class_id": [0, 1], "class_name": ["water", "road"], "iou": [0.5, 0.2]})
    other = pd.DataFrame({"class_id": [0, 1], "class_name": ["water", "road"], "iou": [0.55, 0.1]})
    d = compare.class_deltas({"R": ref, "O": other}, "R")
    assert d["delta"].round(6).tolist() == [0.05, -0.1] and set(d["run"]) == {"O"}
    fig = figures.delta_bars(d, palette_from_config({"dataset": {"classes": ["water", "road"],
                                                                "palette": ["#E2A929", "#6EC1E4"]}}))
    assert list(fig.data[0].marker.color) == ["#E2A929", "#6EC1E4"]
