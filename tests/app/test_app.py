"""Every page of the workbench under Streamlit's AppTest, on a store filled by real short runs and on an empty
workspace. The runs are made once per session by ``tests/support/app.py`` (the demo templates with --set
overrides, through the job worker and the real stage code, then ingested)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.support.apptest import figures_by_title, open_app, page_text, plotly_array

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")
DUBAI_COLOURS = ["#E2A929", "#8429F6", "#6EC1E4", "#3C1098", "#FEDD3A"]


# ------------------------------------------------------------------------------------------------------------
# empty workspace


def test_empty_workspace_home_shows_the_dataset_the_plan_and_one_first_step(tmp_workspace):
    at = open_app()
    text = page_text(at)
    assert "This workspace is empty" in text and "launch the demo plan" in text
    assert [b.label for b in at.button] == [":material/rocket_launch: Launch the demo plan"]
    # the bundled dataset: name, licence, number of pairs, classes with their colours
    assert "dataset `dubai`" in text and "CC0 1.0" in text and "**Image/mask pairs:** 72" in text
    assert "train 54 pairs" in text and "val 18 pairs" in text
    classes = at.dataframe[0].value
    assert list(classes["class"]) == ["water", "land", "road", "building", "vegetation"]
    assert list(classes["colour"]) == DUBAI_COLOURS
    swatches = next(m.value for m in at.markdown if "border-radius" in m.value)
    assert all(c in swatches for c in DUBAI_COLOURS)
    # the plan's stages 0-4 with their templates
    stages = at.dataframe[1].value
    assert list(stages["stage"]) == [0, 1, 2, 3, 4]
    row1 = stages.set_index("stage").loc[1]
    assert row1["templates"] >= 1 and any(t.startswith("Demo baseline") for t in row1["template titles"])
    assert any(t.startswith("Health checks") for t in stages.set_index("stage").loc[0, "template titles"])


def test_empty_workspace_demo_plan_button_launches_health_then_baseline(tmp_workspace, monkeypatch):
    from runners import api

    calls = []

    def fake_launch(path, overrides=None, gpus=None):
        calls.append((Path(path).relative_to(ROOT).as_posix(), list(overrides or []), gpus))
        return f"run-{len(calls)}"

    monkeypatch.setattr(api, "launch", fake_launch)       # the button's wiring, not a job: no process starts
    at = open_app()
    at.button[0].click().run()
    assert not at.exception
    assert [c[0] for c in calls] == ["configs/stage0_health/health_dubai.yaml",
                                     "configs/stage1_baselines/demo_segformer_mit-b0_dubai.yaml"]
    assert all(c[1] == [] for c in calls)
    assert "Launched `run-1`, `run-2`" in page_text(at)


@pytest.mark.parametrize("page, expected", [
    ("views/plan.py", "No job is queued or running."),
    ("views/runs.py", "No runs yet"),
    ("views/run_detail.py", "No runs yet"),
    ("views/compare.py", "No runs yet"),
    ("views/tta_ab.py", "No A/B rows yet"),
])
def test_empty_workspace_every_page_says_what_to_do(tmp_workspace, page, expected):
    at = open_app(page)
    assert expected in page_text(at)


def test_plan_board_lists_every_stage_with_templates_and_knobs(tmp_workspace):
    at = open_app("views/plan.py")
    assert [t.label for t in at.tabs] == ["0 · Health checks", "1 · Baselines",
                                          "2 · Losses, augmentation, distillation", "3 · Inference and TTA",
                                          "4 · Refinement and ensembles"]
    labels = {w.label for w in at.number_input}
    assert {"Epochs", "Crop height", "Crop width", "GPUs per job", "Steps per epoch (0 = all)"} <= labels
    assert {"Backbone", "Pretrained weights file"} <= {w.label for w in at.text_input}
    assert "Model" in {w.label for w in at.selectbox}
    assert any(b.label.endswith("Launch") for b in at.button)


def test_plan_check_turns_knobs_into_overrides_and_reports_a_misspelt_key(tmp_workspace):
    from mapsage.config import load_config, run_name

    template = "configs/stage1_baselines/demo_segformer_mit-b0_dubai.yaml"
    cfg = load_config(ROOT / template)
    epochs, crop_w = cfg.train.epochs + 2, cfg.augment.crop_size[1]
    at = open_app("views/plan.py")
    key = "configs_stage1_baselines_demo_segformer_mit_b0_dubai_yaml"

    def check():
        [b for b in at.button if b.label == "Check" and b.proto.form_id == f"form_{key}"][0].click().run()

    at.number_input(key=f"{key}:epochs").set_value(epochs)
    at.number_input(key=f"{key}:crop_h").set_value(128)
    at.text_area(key=f"{key}:extra").input("train.lr=1e-4")
    check()
    text = page_text(at)
    expected = [f"augment.crop_size=[128, {crop_w}]", f"train.epochs={epochs}", "train.lr=1e-4"]
    assert all(f"`--set {o}`" in text for o in expected), text
    assert f"run name `{run_name(load_config(ROOT / template, expected))}`" in text
    assert any(c.value.startswith(f"mapsage run {template}") and f"--set 'train.epochs={epochs}'" in c.value
               for c in at.code)

    at.text_area(key=f"{key}:extra").input("train.epoch=3")
    check()
    errors = [e.value for e in at.error]
    assert any("train.epoch" in e and "did you mean 'train.epochs'" in e for e in errors), errors


# ------------------------------------------------------------------------------------------------------------
# a store filled by real runs


@pytest.fixture
def filled(app_store, monkeypatch):
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(app_store["workspace"]))
    return app_store


def test_home_summarises_the_workspace(filled):
    import store

    at = open_app()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics[":material/check_circle: succeeded"] == "5" and metrics[":material/error: failed"] == "0"
    # the Dubai runs score 3 of the 18 validation tiles: subsets, never anybody's "best so far"; the LoveDA
    # samples run scores its whole (small) split: the best of its group
    board = store.ranking(split="val")
    dubai = board[board["dataset"] == "dubai"]
    assert set(dubai["completeness"]) == {"subset"} and dubai["rank"].isna().all()
    top = board[board["rank"] == 1]
    assert list(top["dataset"]) == ["loveda-samples"]
    t = top.iloc[0]
    assert f"- `loveda-samples`: **{t['miou'] * 100:.2f}** (split `val`) — `{t['run_name']}`" in page_text(at)
    assert "- `dubai`" not in page_text(at)


def test_plan_shows_best_result_per_stage_and_recent_runs(filled):
    import store

    at = open_app("views/plan.py")
    text = page_text(at)
    runs = store.list_runs()
    board = store.ranking(split="val").dropna(subset=["rank"])          # Dubai runs: subsets, never "best"
    best1 = board[board["run_id"].isin(runs.loc[runs["plan_stage"] == 1, "run_id"])].iloc[0]
    assert f"Best so far: **mIoU (val) {best1['miou'] * 100:.2f}**" in text and f"`{best1['run_name']}`" in text
    assert best1["identity"] in text
    assert "Recent runs of this stage" in text
    checks = store.health(filled["runs"]["health"])
    assert f"Latest checks: {int((checks['status'] == 'pass').sum())} pass · 0 warn · 0 fail" in text
    # the stage tabs are lazy: the open one (stage 1) lists its recent runs
    assert sum(b.label == "Open" for b in at.button) == int((runs["plan_stage"] == 1).sum())
    assert not any(b.label == "Resume" for b in at.button)      # only an ended, unfinished run can be resumed
    assert "0 active" in text


def test_runs_table_has_the_plans_columns_labelled_with_their_split(filled):
    import store

    at = open_app("views/runs.py")
    table = at.dataframe[0].value
    for col in ("Run", "Status", "Backbone", "Pretrain", "Loss", "Aug", "LR schedule", "Size", "TTA", "Post",
                "mIoU (val)", "Boundary IoU (val)", "Evaluation", "Tiles", "Weights", "Variant", "Ranked as",
                "Params (M)", "Images/s", "Device", "Split", "Duration (min)", "run_id"):
        assert col in table.columns, col
    # every evaluation here scored 3 of the split's tiles: shown and marked, ranked only when asked
    by_id = table.set_index("run_id")
    dubai = [filled["runs"][k] for k in ("baseline", "lovasz", "tta")]
    assert by_id.loc[dubai, "Rank"].isna().all() and set(by_id.loc[dubai, "Tiles"]) == {"3/18 tiles"}
    assert all("subset" in t for t in by_id.loc[dubai, "Ranked as"])
    assert by_id.loc[filled["runs"]["loveda"], "Rank"] == 1
    at.toggle(key="runs_subsets").set_value(True).run()
    table = at.dataframe[0].value
    board = store.ranking(split="val", metric="miou", include_subsets=True)
    ranked = table.dropna(subset=["Rank"])
    assert list(ranked["run_id"]) == list(board.dropna(subset=["rank"])["run_id"])
    assert np.allclose(ranked["mIoU (val)"], board.dropna(subset=["rank"])["miou"] * 100)
    assert set(table["Split"]) == {"val"} and set(table["Status"]) == {"succeeded"}
    # the health run has no evaluation (listed, no figure); the TTA run adopted nothing: its figure is the
    # baseline's checkpoint re-scored (lineage), shown, never ranked
    assert len(table) == 5 and len(ranked) == 3
    tta = table.set_index("Run").loc["app-test-tta-ab"]
    assert pd.isna(tta["Rank"]) == (store.ab_rows(filled["runs"]["tta"])["decision"] != "keep").all()
    lovasz = table.set_index("Run").loc["app-test-ce-dice-lovasz"]
    assert lovasz["Loss"] == "ce0.6+dice0.3+lovasz0.1" and lovasz["Size"] == "128x128"
    assert table.set_index("Run").loc["app-test-tta-ab", "TTA"].startswith("A/B: flip")
    # filters
    at.multiselect(key="runs_kind").set_value(["tta_ab"]).run()
    assert list(at.dataframe[0].value["Run"]) == ["app-test-tta-ab"]
    at.multiselect(key="runs_kind").set_value([]).run()
    at.text_input(key="runs_search").input("lovasz").run()
    assert list(at.dataframe[0].value["Run"]) == ["app-test-ce-dice-lovasz"]
    # ranking by Boundary IoU follows the store's ranking on mbiou
    at.text_input(key="runs_search").input("").run()
    at.selectbox(key="runs_rank").set_value("Boundary IoU").run()
    by_b = store.ranking(split="val", metric="mbiou", include_subsets=True).dropna(subset=["rank"])
    assert list(at.dataframe[0].value.dropna(subset=["Rank"])["run_id"]) == list(by_b["run_id"])


def _tab(at: AppTest, label: str) -> AppTest:
    """Open a Run detail tab: the tabs are lazy and bound to the ``tab`` query parameter."""
    at.query_params["tab"] = label
    return at.run()


def test_run_detail_of_a_training_run(filled):
    import store

    rid = filled["runs"]["baseline"]
    run = store.run(rid)
    at = open_app("views/run_detail.py", run=rid)
    text = page_text(at)
    assert [t.label for t in at.tabs] == ["Curves", "Per class", "Confusion", "Domains", "Health", "A/B", "Config",
                                          "Log", "Reliability"]
    # Curves (the default tab; the others are not computed until opened)
    assert "Plateau note" in text and "over the last 20 % of the 2 evaluated epochs" in text
    figs = figures_by_title(at)
    assert set(figs) == {"mIoU / Boundary IoU over epochs", "Per-class IoU over epochs", "Training curves",
                         "Sampled step losses (train)", "Per-iteration scalars (train, sampled steps)",
                         "Training vs validation loss", "Validation metrics per epoch (%, val)"}
    panels = [a["text"] for a in figs["Training curves"]["layout"]["annotations"]]
    for panel in ("Loss terms (train, per epoch)", "Learning rate", "Gradient norm (before clipping)",
                  "Peak memory (MB)"):
        assert panel in panels
    assert any(p.startswith("Time per epoch") for p in panels)
    assert [t["line"]["color"] for t in figs["Per-class IoU over epochs"]["data"]] == DUBAI_COLOURS
    miou_raw = next(t for t in figs["mIoU / Boundary IoU over epochs"]["data"] if t["name"] == "mIoU (val, raw)")
    stored = store.metrics(rid, split="val", domain="all", variant="raw").dropna(subset=["epoch"])
    assert np.allclose(plotly_array(miou_raw["y"]), stored.sort_values("epoch")["miou"] * 100)

    # Per class: the best evaluation by default; bars in the dataset's colours; the weakest classes named
    text = page_text(_tab(at, "Per class"))
    figs = figures_by_title(at)
    assert figs["Per-class IoU (val)"]["data"][0]["marker"]["color"] == DUBAI_COLOURS
    assert "Per-class Boundary IoU (val)" in figs
    best = store.metrics(rid, split="val", domain="all", epoch=run["best_epoch"], variant=run["best_variant"])
    rows = store.per_class(rid, split="val", domain="all", variant=run["best_variant"], epoch=run["best_epoch"])
    weakest = list(rows.dropna(subset=["iou"]).nsmallest(3, "iou")["class_name"])
    warning = next(w.value for w in at.warning if w.value.startswith("Weakest classes"))
    assert all(f"**{w}**" in warning for w in weakest)
    assert f"mIoU **{best['miou'].iloc[-1] * 100:.2f}**" in text

    # Confusion: row-normalised by default, raw counts = the store's matrix
    _tab(at, "Confusion")
    assert any(t.startswith("Confusion matrix, row-normalised") for t in figures_by_title(at))
    at.toggle(key="cm_norm").set_value(False).run()
    counts = next(s for t, s in figures_by_title(at).items() if t.startswith("Confusion matrix, pixel counts"))
    m, _ = store.confusion_matrix(rid, split="val", domain="all", variant=run["best_variant"],
                                  epoch=run["best_epoch"])
    assert np.array_equal(plotly_array(counts["data"][0]["z"]), m)

    assert "This dataset has no domains" in page_text(_tab(at, "Domains"))

    # Health: the latest health-check run on the same dataset
    text = page_text(_tab(at, "Health"))
    health = store.health(filled["runs"]["health"])
    assert f"The latest health-check run on dataset `dubai`: `{filled['runs']['health']}`." in text
    shown = [e.label for e in at.expander if e.label.startswith(":material/")]
    for _, row in health.iterrows():
        assert any(f"**{row['check_name']}** — {row['verdict']}" in label for label in shown), row["check_name"]

    # Config and log tail
    assert any("encoder: mit_b0" in c.value for c in _tab(at, "Config").code)
    assert any("[worker" in c.value and "succeeded" in c.value for c in _tab(at, "Log").code)


def test_run_detail_domains_and_ab(filled):
    at = open_app("views/run_detail.py", run=filled["runs"]["loveda"], tab="Domains")
    figs = figures_by_title(at)
    assert set(figs) == {"Urban / Rural breakdown", "Per-class IoU by domain"}
    domains = list(figs["Urban / Rural breakdown"]["data"][0]["x"])
    assert "Rural" in domains and "all" in domains
    loveda_palette = ["#FFFFFF", "#FF0000", "#FFFF00", "#0000FF", "#9F81B7", "#00FF00", "#FFC380"]
    by_domain = figs["Per-class IoU by domain"]["data"][0]["marker"]["color"]
    assert by_domain == loveda_palette
    assert figures_by_title(_tab(at, "Per class"))["Per-class IoU (val)"]["data"][0]["marker"]["color"] == loveda_palette

    at = open_app("views/run_detail.py", run=filled["runs"]["tta"])        # an A/B run opens on its A/B tab
    assert "A/B: gain against the baseline" in figures_by_title(at)


def test_compare_two_runs_with_a_paired_bootstrap(filled):
    import store
    from mapsage.metrics import paired_bootstrap

    a, b = filled["runs"]["baseline"], filled["runs"]["lovasz"]
    at = open_app("views/compare.py", runs=f"{a},{b}")
    deltas = at.dataframe[0].value.set_index("run")
    # each run's headline evaluation (the one it is ranked by), paired on the tiles both scored
    sa, sb = int(store.run(a)["best_seq"]), int(store.run(b)["best_seq"])
    ma = store.evaluations_with_roles(a).set_index("seq").loc[sa]
    mb = store.evaluations_with_roles(b).set_index("seq").loc[sb]
    assert deltas.loc["app-test-ce-dice-lovasz", "Δ mIoU"] == pytest.approx((mb["miou"] - ma["miou"]) * 100)
    assert deltas.loc["app-test-baseline-ce-dice", "role"] == "reference"
    boot = at.dataframe[2].value.iloc[0]
    ref = paired_bootstrap(store.tiles_of(a, sa), store.tiles_of(b, sb), n=2000, seed=0)
    assert boot["ΔmIoU (val)"] == pytest.approx(ref["delta"] * 100)
    assert (boot["95 % CI low"], boot["95 % CI high"]) == pytest.approx((ref["ci_low"] * 100, ref["ci_high"] * 100))
    assert boot["verdict"] == ("inside the noise (95 % CI contains 0)" if not ref["significant"] else
                               "real gain" if ref["delta"] > 0 else "real loss")
    assert boot["tiles"] == 3 and "Only 3 tiles" in page_text(at)
    figs = figures_by_title(at)
    assert figs["Per-class ΔIoU against the reference run"]["data"][0]["marker"]["color"] == DUBAI_COLOURS
    assert f"mIoU per epoch (val, {ma['variant']})" in figs and "Training loss per epoch" in figs
    used = next(d.value for d in at.dataframe if "checkpoint run" in d.value.columns)
    assert list(used["checkpoint run"]) == [a, b] and list(used["weights"]) == [ma["weights"], mb["weights"]]
    diff = next(d.value for d in at.dataframe if "key" in d.value.columns)
    assert "loss.schedule" in set(diff["key"]) and "train.ema.enabled" in set(diff["key"])
    assert not any(k.startswith("meta.") for k in diff["key"])


def test_compare_needs_two_runs(filled):
    at = open_app("views/compare.py", runs=filled["runs"]["baseline"])
    assert "Pick two or more runs" in page_text(at)


def test_tta_ab_page_shows_variants_figures_and_decisions(filled):
    import store

    at = open_app("views/tta_ab.py")
    table = at.dataframe[0].value
    ab = store.ab_rows(filled["runs"]["tta"])
    assert list(table["variant"]) == list(ab["variant"]) == ["tta=off", "tta=flip"]
    assert list(table["decision"]) == list(ab["decision"])
    assert np.allclose(table["mIoU (val)"], ab["miou"] * 100)
    assert np.allclose(table["gain (miou, points)"], ab["gain"])
    text = page_text(at)
    kept = ab[ab["decision"] == "keep"]
    assert ("Keep: " in text) == (len(kept) > 0)
    assert "keep threshold +0.8" in json.dumps(figures_by_title(at))
