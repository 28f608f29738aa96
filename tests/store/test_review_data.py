"""The Review page's reads and data helpers on the REAL refinement run of ``tests/support/review.py``:
``store.review_queries`` (runs with masks, a tile's layers, the latest verdicts) and ``app.widgets.review_tiles``
(which masks to compare, the tile list and per-class figures, agreement with the metric, the dataset fallback)."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.support.review import REFINE_TILES


@pytest.fixture
def review_ws(review_store, tmp_path, monkeypatch):
    ws = tmp_path / "workspace"
    shutil.copytree(review_store["workspace"], ws)
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(ws))
    return {**review_store, "workspace": ws}


def test_queries_on_an_empty_workspace(tmp_workspace):
    from store import review_queries as q

    runs = q.review_runs()
    assert runs.empty and list(runs.columns) == q.REVIEW_RUN_COLUMNS
    assert q.review_layers("nope").empty
    assert q.latest_verdicts("nope", "refine=crf", "refine=raw").empty


def test_review_runs_and_layers(review_ws):
    import store
    from mapsage.config import config_from_dict
    from mapsage.data import build_dataset
    from store import review_queries as q

    runs = q.review_runs()
    assert list(runs["run_id"]) == [review_ws["refine"], review_ws["evaluate"]]     # not the training run
    r = runs.iloc[0]
    assert (r["kind"], r["n_tiles"], r["variants"], r["n_refined"], r["n_images"], r["n_labels"], r["n_reviewed"]) \
        == ("refine", REFINE_TILES, ["refine=crf", "refine=raw"], REFINE_TILES, REFINE_TILES, REFINE_TILES, 0)
    e = runs.iloc[1]
    assert (e["kind"], e["n_tiles"], e["n_images"], e["n_labels"]) == ("evaluate", 1, 0, 0)
    assert list(q.review_runs(review_ws["evaluate"])["run_id"]) == [review_ws["evaluate"]]

    layers = q.review_layers(review_ws["refine"])
    assert len(layers) == 4 * REFINE_TILES                         # image, label, raw, crf per tile
    assert all(layers.groupby("tile")["kind"].apply(sorted).map(lambda k: k == ["image", "label", "pred",
                                                                               "refined"]))
    assert all(p and __import__("os").path.isfile(p) for p in layers["abs_path"])
    assert set(layers["split"]) == {"val"}
    # the image artifact is the dataset's own file; the label PNG is the dataset's decoded mask
    cfg = config_from_dict(store.run(review_ws["refine"])["config"])
    ds = build_dataset(cfg, "val")
    for tile, g in layers.groupby("tile"):
        s = ds.samples[ds.index_of(tile)]
        assert g.loc[g["kind"] == "image", "abs_path"].iloc[0] == str(s.image_path)
        label = np.asarray(Image.open(g.loc[g["kind"] == "label", "abs_path"].iloc[0]))
        assert np.array_equal(label, ds.load_mask(ds.index_of(tile)))
    one = q.review_layers(review_ws["refine"], tile=layers["tile"].iloc[0])
    assert len(one) == 4 and set(one["tile"]) == {layers["tile"].iloc[0]}
    assert "d_mbiou_points" in one.loc[one["kind"] == "refined", "meta"].iloc[0]


def test_latest_verdicts_per_comparison(review_ws):
    import store
    from store import review_queries as q

    rid = review_ws["refine"]
    tiles = sorted(q.review_layers(rid)["tile"].unique())
    store.add_verdict(rid, tiles[0], "worse", "first look", reviewer="a", variant="refine=crf",
                      baseline="refine=raw")
    store.add_verdict(rid, tiles[0], "better", "second look", reviewer="b", variant="refine=crf",
                      baseline="refine=raw")
    store.add_verdict(rid, tiles[1], "same", "", reviewer="a", variant="refine=crf", baseline="refine=raw")
    store.add_verdict(rid, tiles[1], "worse", "against the label", reviewer="a", variant="refine=crf",
                      baseline=None)
    got = q.latest_verdicts(rid, "refine=crf", "refine=raw")
    assert got[["tile", "verdict", "reviewer", "n_verdicts"]].to_dict("records") == [
        {"tile": tiles[0], "verdict": "better", "reviewer": "b", "n_verdicts": 2},
        {"tile": tiles[1], "verdict": "same", "reviewer": "a", "n_verdicts": 1}]
    vs_label = q.latest_verdicts(rid, "refine=crf", None)
    assert vs_label[["tile", "verdict", "comment"]].to_dict("records") == [
        {"tile": tiles[1], "verdict": "worse", "comment": "against the label"}]
    assert pd.api.types.is_datetime64_any_dtype(got["time"])
    runs = q.review_runs(rid)
    assert (runs["n_reviewed"].iloc[0], runs["n_verdicts"].iloc[0]) == (2, 4)


def test_default_pair_tile_table_and_class_rows(review_ws):
    import store
    from app.widgets import review_tiles as rt
    from mapsage.metrics import SegMetrics
    from store import review_queries as q

    rid = review_ws["refine"]
    ab = store.ab_rows(rid)
    assert rt.default_pair(["refine=crf", "refine=raw"], ab) == ("refine=raw", "refine=crf")
    assert rt.default_pair(["refine=crf", "refine=raw"]) == ("refine=raw", "refine=crf")
    assert rt.default_pair(["raw"]) == ("label", "raw")
    assert rt.default_pair(["ema", "raw", "tta=flip"]) == ("raw", "ema")
    # each layer named for what it is: the model's own prediction, a refinement chain, a TTA variant
    assert [rt.variant_label(v) for v in ("refine=sam+crf", "refine=raw", "raw", "tta=flip", "label")] == \
        ["refine=sam+crf", "raw", "raw", "tta=flip", "label"]
    # without an A/B rule for the pair: the sign of the Boundary IoU change (points)
    assert [rt.metric_says(x) for x in (2.0, -2.0, 0.005, float("nan"))] == ["better", "worse", "same", None]

    tiles = store.tiles(rid)
    table = rt.tile_table(tiles, "refine=raw", "refine=crf")
    assert len(table) == REFINE_TILES and list(table.columns) == rt.TILE_COLUMNS
    assert table["d_mbiou"].is_monotonic_decreasing
    vs_label = rt.tile_table(tiles, "label", "refine=crf", mask_tiles=list(table["tile"]) + ["extra/tile"])
    assert vs_label["mbiou_b"].iloc[:REFINE_TILES].is_monotonic_increasing and vs_label["d_mbiou"].isna().all()
    assert vs_label["tile"].iloc[-1] == "extra/tile" and np.isnan(vs_label["mbiou_b"].iloc[-1])

    # per-class figures of one tile = a fresh scoring of the tile's mask files
    layers = q.review_layers(rid)
    tile = table["tile"].iloc[0]
    lay = rt.tile_layers(layers, tile, "refine=raw", "refine=crf")
    assert lay.split == "val" and lay.notes == []
    label = np.asarray(Image.open(lay.label))
    classes = store.run(rid)["class_names"]
    rows = rt.class_rows(tiles, tile, "refine=raw", "refine=crf", classes)
    for side, path in (("a", lay.left), ("b", lay.right)):
        m = SegMetrics(len(classes), ignore_index=255, boundary_px=3)
        m.update(np.asarray(Image.open(path)), label)
        res = m.result()
        present = res.union > 0
        assert np.allclose(rows[f"iou_{side}"][present], res.iou[present], equal_nan=True)
        assert rows[f"iou_{side}"][~present].isna().all()
        bp = res.b_union > 0
        assert np.allclose(rows[f"biou_{side}"][bp], res.b_intersect[bp] / res.b_union[bp])
    valid = label != 255
    share = np.bincount(label[valid], minlength=len(classes)) / valid.sum()
    assert np.allclose(rows["label_share"], share)

    # agreement of verdicts with the sign of the change
    says = dict(zip(table["tile"], table["metric_says"]))
    verdicts = pd.DataFrame({"tile": list(says), "verdict": [says[t] for t in says]})
    verdicts.loc[0, "verdict"] = "better" if says[verdicts.loc[0, "tile"]] != "better" else "worse"
    got = rt.agreement(table, verdicts)
    assert got["reviewed"] == REFINE_TILES and got["agree"] == REFINE_TILES - 1
    assert [d["tile"] for d in got["disagreements"]] == [verdicts.loc[0, "tile"]]
    assert sum(got["metric"].values()) == REFINE_TILES


def test_prediction_run_layers_come_from_the_dataset_config(review_ws):
    import store
    from app.widgets import review_tiles as rt
    from mapsage.errors import DataError
    from store import review_queries as q

    rid = review_ws["evaluate"]
    run = store.run(rid)
    layers = q.review_layers(rid)
    (tile,) = layers["tile"].unique()
    variant = layers["variant"].iloc[0]
    lay = rt.tile_layers(layers, tile, "label", variant, run_config=run["config"], split=run["split"])
    refine_layers = q.review_layers(review_ws["refine"], tile=tile)
    assert lay.image == refine_layers.loc[refine_layers["kind"] == "image", "abs_path"].iloc[0]
    label_png = np.asarray(Image.open(refine_layers.loc[refine_layers["kind"] == "label", "abs_path"].iloc[0]))
    assert np.array_equal(lay.label, label_png) and lay.left is lay.label
    assert lay.right.endswith(".png") and len(lay.notes) == 2
    with pytest.raises(DataError, match="not in split 'val'"):
        rt.dataset_tile(run["config"], "val", "Tile 99/image_part_001")


def test_metric_says_follows_the_decision_rule():
    """The tile's "metric says" is the run's A/B rule (threshold and guard read from its ab row) applied to the
    tile, through the one rule function every decision uses."""
    import json

    import mapsage.abrule as abrule
    from app.widgets import review_tiles as rt

    ab = pd.DataFrame([{"variant": "refine=crf", "baseline": "refine=raw", "criterion": "mbiou", "threshold": 1.0,
                        "details_json": json.dumps({"guard": 0.5})},
                       {"variant": "tta=flip", "baseline": "tta=off", "criterion": "miou", "threshold": 0.8,
                        "details_json": json.dumps({"guard": 0.5})}])
    refine = rt.pair_rule(ab, "refine=raw", "refine=crf")
    assert (refine.criterion, refine.threshold, refine.guard, refine.from_ab) == ("mbiou", 1.0, 0.5, True)
    says = lambda d_b, d_m, rule=refine: rt.metric_says(d_b, d_m, rule)  # noqa: E731
    assert says(1.5, 0.0) == "better"            # passes the +1.0 Boundary IoU threshold
    assert says(1.0, -0.5) == "better"           # exactly the threshold, the guard's limit: kept, as decide() does
    assert says(0.6, 2.0) == "same"              # a gain below the threshold decides nothing
    assert says(-1.5, 0.0) == "worse"            # the baseline would be kept over it
    assert says(2.0, -0.8) == "worse"            # passes the threshold, refused by the mIoU guard
    tta = rt.pair_rule(ab, "tta=off", "tta=flip")
    assert tta.criterion == "miou"
    assert rt.metric_says(0.0, 0.9, tta) == "better"     # TTA decides on mIoU (+0.9 >= 0.8) ...
    assert rt.metric_says(-3.0, 0.9, tta) == "worse"     # ... and Boundary IoU guards it: -3 < -0.5 refuses
    assert rt.metric_says(5.0, 0.5, tta) == "same"       # a Boundary IoU gain alone decides nothing for TTA
    assert rt.pair_rule(ab, "refine=raw", "refine=sam") == rt.Rule()   # no A/B row: the sign
    assert refine.text() == abrule.rule_text("mbiou", 1.0, 0.5)


def test_metric_says_has_no_rule_of_its_own(monkeypatch):
    """Changing the one decision function changes the Review page's reading: there is no second copy."""
    import mapsage.abrule as abrule
    from app.widgets import review_tiles as rt

    rule = rt.Rule(criterion="mbiou", threshold=1.0, guard=0.5, from_ab=True)
    assert rt.metric_says(1.5, 0.0, rule) == "better"
    monkeypatch.setattr(abrule, "decide", lambda *a, **k: "drop")
    assert rt.metric_says(1.5, 0.0, rule) == "same"
