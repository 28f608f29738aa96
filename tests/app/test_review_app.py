"""The Review page under Streamlit's AppTest: an empty workspace, and a workspace with a REAL refinement run (tiny
training through the real stage code, the refinement A/B with the CRF chain on 3 Dubai tiles, an evaluation that
saved its prediction masks; ``tests/support/review.py``). Each test that writes verdicts works on its own copy of
that workspace."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.support.review import REFINE_TILES

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")
PAGE = "views/review.py"
DUBAI_PALETTE = ["#E2A929", "#8429F6", "#6EC1E4", "#3C1098", "#FEDD3A"]


def _app(timeout: float = 120, **query) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=timeout)
    at.run()
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page(PAGE)
    at.run()
    _ok(at)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _texts(at: AppTest) -> str:
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption] + [e.value for e in at.info] + \
            [e.value for e in at.warning] + [e.value for e in at.success] + [e.value for e in at.error]
    return "\n".join(str(p) for p in parts)


def _map_html(at: AppTest) -> str:
    frames = at.get("iframe")
    assert len(frames) == 1, len(frames)
    return frames[0].proto.srcdoc


def _frame(at: AppTest, first_column: str) -> pd.DataFrame:
    for d in at.dataframe:
        v = d.value
        if len(v.columns) and v.columns[0] == first_column:
            return v
    raise AssertionError(f"no table starting with column {first_column!r}: "
                         f"{[list(d.value.columns)[:3] for d in at.dataframe]}")


def _rule_verdict(d_mbiou: float, d_miou: float, ab_row) -> str:
    """What the run's A/B rule says of one tile, written out from the ab row (criterion Boundary IoU, its
    threshold, the mIoU guard) without the page's code."""
    thr = float(ab_row["threshold"])
    guard = json.loads(ab_row["details_json"])["guard"]
    assert ab_row["criterion"] == "mbiou"
    if abs(d_mbiou) < 0.01:
        return "same"
    if d_mbiou >= thr and d_miou >= -guard:
        return "better"
    if -d_mbiou >= thr and -d_miou >= -guard:
        return "worse"
    if d_mbiou >= thr:
        return "worse"
    return "same"


@pytest.fixture
def review_ws(review_store, tmp_path, monkeypatch):
    """A private copy of the session's review workspace (verdicts written here stay here)."""
    ws = tmp_path / "workspace"
    shutil.copytree(review_store["workspace"], ws)
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(ws))
    return {**review_store, "workspace": ws}


# ------------------------------------------------------------------------------------------------------------
# empty workspace


def test_empty_workspace_explains_what_to_launch(tmp_workspace):
    at = _app()
    text = _texts(at)
    assert "No run has prediction masks to review yet" in text
    assert "eval.save_predictions=true" in text
    assert not at.get("iframe") and not at.selectbox


# ------------------------------------------------------------------------------------------------------------
# the refinement run


def _stage_tile_figures(rid: str) -> dict[str, dict]:
    """Per tile, the refinement stage's own figures (artifact metadata of the refined masks)."""
    import store

    arts = store.artifacts(rid, kind="refined")
    return {r["tile"]: json.loads(r["meta_json"]) for _, r in arts.iterrows()}


def test_refinement_run_tile_list_map_and_tile_figures(review_ws):
    import store
    from app.widgets.review_map import external_references
    from mapsage.metrics import SegMetrics

    rid = review_ws["refine"]
    at = _app()
    run_box = at.selectbox(key="review_run")
    assert run_box.value == rid                                    # refinement runs first
    assert set(run_box.options) == {f"{n} · {k} · {t} tiles · succeeded" for n, k, t in
                                    (("review-test-refine-crf", "refine", REFINE_TILES),
                                     ("review-test-evaluate", "evaluate", 1))}  # the training run has no masks
    text = _texts(at)
    assert f"{REFINE_TILES} tiles with masks · 0 reviewed" in text
    warn = next(w.value for w in at.warning if w.value.startswith("Not run"))
    assert "**sam**" in warn and "refine.sam.checkpoint" in warn
    assert at.selectbox(key=f"review_pair_{rid}_left").value == "refine=raw"
    assert at.selectbox(key=f"review_pair_{rid}_right").value == "refine=crf"

    # the A/B decisions as the stage stored them
    ab_table = _frame(at, "variant")
    ab = store.ab_rows(rid)
    crf_ab = ab[ab["variant"] == "refine=crf"].iloc[0]
    assert list(ab_table["variant"]) == ["raw", "refine=crf"]      # each layer named for what it is
    assert np.allclose(ab_table["gain (mbiou, points)"], ab["gain"])
    assert list(ab_table["decision"]) == list(ab["decision"])

    # the tile list: every tile, sorted by Boundary IoU change, the change equal to the stage's own per-tile figure
    tiles = _frame(at, "tile")
    assert len(tiles) == REFINE_TILES
    d = tiles["Δ Boundary IoU (pts)"].to_numpy()
    assert np.all(np.diff(d) <= 0), d
    stage = _stage_tile_figures(rid)
    for _, r in tiles.iterrows():
        assert r["Δ Boundary IoU (pts)"] == pytest.approx(stage[r["tile"]]["d_mbiou_points"], abs=1e-6)
        assert r["Boundary IoU refine=crf"] == pytest.approx(stage[r["tile"]]["mbiou"] * 100, abs=1e-6)
        assert r["Δ mIoU (pts)"] == pytest.approx(stage[r["tile"]]["d_miou_points"], abs=1e-6)
        assert r["metric says"] == _rule_verdict(r["Δ Boundary IoU (pts)"], r["Δ mIoU (pts)"], crf_ab)

    # the selected tile is the top of the list; its figures match a fresh scoring of the mask files on the map
    tile = at.selectbox(key="review_tile").value
    assert tile == tiles["tile"].iloc[0]
    layers = store.artifacts(rid, tile=tile)
    path = {(r["kind"], r["variant"] if isinstance(r["variant"], str) else None): r["abs_path"]
            for _, r in layers.iterrows()}
    label = np.asarray(Image.open(path[("label", "label")]))
    scores = {}
    for v in ("refine=raw", "refine=crf"):
        m = SegMetrics(5, ignore_index=255, boundary_px=3)
        kind = "pred" if v == "refine=raw" else "refined"
        m.update(np.asarray(Image.open(path[(kind, v)])), label)
        scores[v] = m.result()
    metrics = {m.label: m for m in at.metric}
    assert metrics["Boundary IoU refine=crf"].value == f"{scores['refine=crf'].mbiou * 100:.2f}"
    assert metrics["Boundary IoU refine=crf"].delta == \
        f"{(scores['refine=crf'].mbiou - scores['refine=raw'].mbiou) * 100:+.2f} pts vs raw"
    assert metrics["mIoU refine=crf"].value == f"{scores['refine=crf'].miou * 100:.2f}"

    # the map: offline HTML with image, label, raw and refined overlays, the swipe and the dataset's legend
    html = _map_html(at)
    assert external_references(html) == []
    for name in ("image", "label", "raw", "refine=crf"):
        assert f'"{name}"' in html
    assert '"refined' not in html
    assert "L.control.sideBySide(" in html and "L.CRS.Simple" in html
    assert all(c.upper() in html.upper() for c in DUBAI_PALETTE)
    assert html.count("data:image/png;base64,") >= 3 and "data:image/jpeg;base64," in html
    assert "Plain image tile: drawn in a pixel CRS" in _texts(at)

    # the other order, then stepping through the tiles
    at.radio(key="review_order").set_value("largest Boundary IoU loss first").run()
    _ok(at)
    assert list(_frame(at, "tile")["tile"]) == list(tiles["tile"])[::-1]
    order = list(_frame(at, "tile")["tile"])
    assert at.selectbox(key="review_tile").value == tile          # the open tile stays open
    at.button(key="review_next").click().run()
    _ok(at)
    nxt = order[(order.index(tile) + 1) % len(order)]
    assert at.selectbox(key="review_tile").value == nxt
    assert at.query_params["tile"] in (nxt, [nxt])
    assert f"Review map of {nxt}" in at.get("iframe")[0].proto.alt
    at.button(key="review_prev").click().run()
    assert at.selectbox(key="review_tile").value == tile


def test_verdicts_are_saved_in_the_store_and_summarised(review_ws):
    import store

    rid = review_ws["refine"]
    at = _app()
    order = list(_frame(at, "tile")["tile"])
    says = dict(zip(_frame(at, "tile")["tile"], _frame(at, "tile")["metric says"]))
    t0 = at.selectbox(key="review_tile").value

    # no choice: nothing is written
    at.button(key="FormSubmitter:review_verdict_form-Save verdict").click().run()
    _ok(at)
    assert any("Choose better, worse or same first" in w.value for w in at.warning)
    assert store.verdicts(rid).empty

    at.radio(key="review_verdict").set_value("worse")
    at.text_area(key="review_comment").input("crf washes out the buildings")
    at.text_input(key="review_reviewer_input").input("tester")
    at.button(key="FormSubmitter:review_verdict_form-Save verdict").click().run()
    _ok(at)
    v = store.verdicts(rid)
    assert v[["tile", "variant", "baseline", "verdict", "comment", "reviewer"]].to_dict("records") == [
        {"tile": t0, "variant": "refine=crf", "baseline": "refine=raw", "verdict": "worse",
         "comment": "crf washes out the buildings", "reviewer": "tester"}]
    assert any(f"Saved verdict #{int(v['verdict_id'].iloc[0])}: **worse**" in s.value for s in at.success)
    assert at.selectbox(key="review_tile").value == t0
    assert _frame(at, "tile").set_index("tile").loc[t0, "verdict"] == "worse"
    history = _frame(at, "when")
    assert list(history["verdict"]) == ["worse"] and list(history["reviewer"]) == ["tester"]

    # the next tile; "save and next" saves there and opens the tile after it; the reviewer name is remembered
    at.button(key="review_next").click().run()
    t1 = order[1]
    assert at.selectbox(key="review_tile").value == t1
    assert at.text_input(key="review_reviewer_input").value == "tester"
    at.radio(key="review_verdict").set_value("better")
    at.button(key="FormSubmitter:review_verdict_form-Save and next tile").click().run()
    _ok(at)
    assert at.selectbox(key="review_tile").value == order[2]
    v = store.verdicts(rid)
    assert list(zip(v["tile"], v["verdict"], v["reviewer"])) == [(t0, "worse", "tester"), (t1, "better", "tester")]

    # a second verdict on the first tile replaces the first in the summary (latest per tile and reviewer)
    at.selectbox(key="review_tile").set_value(t0).run()
    at.radio(key="review_verdict").set_value("same")
    at.button(key="FormSubmitter:review_verdict_form-Save verdict").click().run()
    _ok(at)
    summary = _frame(at, "compared")
    assert summary.to_dict("records") == [{"compared": "refine=crf", "tiles reviewed": 2, "of tiles": REFINE_TILES,
                                           "better": 1, "worse": 0, "same": 1}]
    s = store.verdict_summary(rid)
    assert s[["reviewed", "better", "worse", "same"]].to_dict("records") == [
        {"reviewed": 2, "better": 1, "worse": 0, "same": 1}]
    latest = {t0: "same", t1: "better"}
    agree = sum(latest[t] == says[t] for t in latest)
    assert f"agree with what the metric says (the decision rule) on **{agree} of 2**" in _texts(at)
    assert "2 reviewed" in _texts(at)
    assert list(_frame(at, "when")["verdict"]) == ["same", "worse"]     # this tile's history, newest first


def test_a_link_opens_the_run_and_tile(review_ws):
    rid = review_ws["refine"]
    at = _app()
    order = list(_frame(at, "tile")["tile"])
    at2 = _app(run=rid, tile=order[-1])
    assert at2.selectbox(key="review_run").value == rid
    assert at2.selectbox(key="review_tile").value == order[-1]
    assert f"Review map of {order[-1]}" in at2.get("iframe")[0].proto.alt


def test_prediction_run_is_compared_with_its_label(review_ws):
    """An evaluation that saved prediction masks (no image or label artifacts): the page takes the image and the
    label from the run's dataset config and shows the prediction against the label."""
    import store

    rid = review_ws["evaluate"]
    at = _app(run=rid)
    assert at.selectbox(key="review_run").value == rid
    variant = store.artifacts(rid, kind="pred")["variant"].iloc[0]
    assert at.selectbox(key=f"review_pair_{rid}_left").value == "label"
    assert at.selectbox(key=f"review_pair_{rid}_right").value == variant
    text = _texts(at)
    assert "image read from the run's dataset config" in text and "label decoded from the run's dataset config" in text
    assert "A verdict compares two masks" in text
    tiles = _frame(at, "tile")
    rows = store.tiles(rid, variant=variant)
    assert list(tiles["tile"]) == list(rows["tile"]) == ["Tile 3/image_part_001"]
    from mapsage.metrics import miou_from_tile_rows

    assert tiles[f"Boundary IoU {variant}"].iloc[0] == pytest.approx(
        100 * miou_from_tile_rows(rows, metric="mbiou"), abs=1e-9)
    html = _map_html(at)
    assert '"label"' in html and f'"{variant}"' in html and "L.control.sideBySide(" in html
    assert f'"refined: {variant}"' not in html                   # a plain prediction is not called "refined"
    assert "Swipe: **label** left of the divider" in text


def test_geotiff_tile_is_placed_at_its_coordinates(tmp_workspace, tmp_path):
    """A run whose image is a GeoTIFF (a real LoveDA tile written with a UTM grid at 0.3 m, as LoveDA's Wuhan
    scenes are): the map is georeferenced (Web Mercator, at the tile's true bounds), a base map can be chosen, and
    a run without per-tile rows still lists and draws its tiles."""
    import re

    import rasterio
    from affine import Affine
    from rasterio.warp import transform_bounds
    from scipy import ndimage

    import store
    from mapsage.config import load_config, save_resolved
    from mapsage.events import EventWriter
    from mapsage.workspace import run_dir
    from tests.support.app import LOVEDA_DEMO

    root = ROOT / "tests" / "data" / "loveda" / "Val" / "Rural"
    image = np.asarray(Image.open(root / "images_png" / "2.png").convert("RGB"))
    raw_ids = np.asarray(Image.open(root / "masks_png" / "2.png"))
    label = np.where(raw_ids == 0, 255, raw_ids.astype(np.int16) - 1).astype(np.uint8)
    tif = tmp_path / "wuhan_val_2.tif"
    transform = Affine(0.3, 0.0, 230_000.0, 0.0, -0.3, 3_390_000.0)       # 0.3 m pixels, UTM 50N
    with rasterio.open(tif, "w", driver="GTiff", width=image.shape[1], height=image.shape[0], count=3,
                       dtype="uint8", crs="EPSG:32650", transform=transform) as dst:
        dst.write(np.moveaxis(image, -1, 0))
    rid = "geotiff-review_20260101-000000_0001"
    rdir = run_dir(rid)
    cfg = load_config(ROOT / LOVEDA_DEMO, ["stage.name=geotiff-review", "stage.kind=refine", "stage.plan_stage=4"])
    save_resolved(cfg, rdir)
    ev = EventWriter(rdir)
    ev.status("queued")
    ev.emit("run_info", name="geotiff-review", kind="refine", plan_stage=4, dataset="loveda", split="val")
    ev.status("running")
    tile = "Rural/2"
    masks = {"label": label, "refine=raw": ndimage.median_filter(label, size=9),
             "refine=crf": ndimage.median_filter(label, size=3)}
    for variant, ids in masks.items():
        p = rdir / "predictions" / "refine" / variant / "Rural" / "2.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ids).save(p)
        kind = {"label": "label", "refine=raw": "pred", "refine=crf": "refined"}[variant]
        ev.artifact(kind, p, tile=tile, variant=variant, split="val")
    ev.artifact("image", tif, tile=tile, split="val")
    ev.status("succeeded")
    store.ingest_all()

    at = _app(run=rid)
    assert at.selectbox(key="review_tile").value == tile
    assert "No per-tile rows in the store for this tile" in _texts(at)
    assert at.text_input(key="review_base_map").value == ""
    html = _map_html(at)
    assert "L.CRS.Simple" not in html
    bounds = json.loads(re.search(r"map\.fitBounds\((\[\[.*?\]\])\)", html).group(1))
    west, south, east, north = transform_bounds("EPSG:32650", "EPSG:4326", 230_000.0, 3_390_000.0 - 0.3 * 1024,
                                                230_000.0 + 0.3 * 1024, 3_390_000.0)
    assert np.allclose(bounds, [[south, west], [north, east]], atol=2e-5), (bounds, south, west, north, east)
    # an explicitly chosen base map is the only thing on the page that reaches the network
    at.text_input(key="review_base_map").input("https://tile.openstreetmap.org/{z}/{x}/{y}.png").run()
    _ok(at)
    html = _map_html(at)
    assert "https://tile.openstreetmap.org/{z}/{x}/{y}.png" in html
    from app.widgets.review_map import external_references

    assert all(u.startswith("https://tile.openstreetmap.org/") for u in external_references(html))


def test_save_and_next_shows_the_next_tile_only(review_ws):
    """After "Save and next" (and after a one-key verdict) every part of the page shows the next tile: the
    selector, the map (the same HTML as that tile opened by a link), the tile header and figures, the cleared
    verdict form and the tile's own verdict history; the keys are on the buttons."""
    import store

    rid = review_ws["refine"]
    at = _app()
    tiles = _frame(at, "tile").set_index("tile")
    order = list(tiles.index)
    t0, t1, t2 = order[0], order[1], order[2 % len(order)]
    html_t1 = _map_html(_app(run=rid, tile=t1))
    assert at.selectbox(key="review_tile").value == t0
    html_t0 = _map_html(at)
    assert html_t0 != html_t1

    at.radio(key="review_verdict").set_value("better")
    at.text_area(key="review_comment").input("sharper roads")
    at.button(key="FormSubmitter:review_verdict_form-Save and next tile").click().run()
    _ok(at)
    assert at.selectbox(key="review_tile").value == t1
    assert at.query_params["tile"] in (t1, [t1])
    assert _map_html(at) == html_t1
    assert f"Review map of {t1}" in at.get("iframe")[0].proto.alt
    heads = [m.value for m in at.markdown if m.value.startswith("**")]
    assert any(h.startswith(f"**{t1}**") for h in heads) and not any(h.startswith(f"**{t0}**") for h in heads)
    assert any(f"Verdict on {t1}" in m.value for m in at.markdown)
    metrics = {m.label: m for m in at.metric}
    assert metrics["Boundary IoU refine=crf"].value == f"{tiles.loc[t1, 'Boundary IoU refine=crf']:.2f}"
    assert metrics["The metric says"].value == tiles.loc[t1, "metric says"]
    assert at.radio(key="review_verdict").value is None            # the form starts empty for the new tile
    assert at.text_area(key="review_comment").value == ""
    assert not [d for d in at.dataframe if list(d.value.columns)[:1] == ["when"]]   # t1 has no verdict yet
    assert list(store.verdicts(rid)["tile"]) == [t0]

    # one key: "W" records worse for this tile and opens the next
    assert at.button(key="review_quick_worse").proto.shortcut.lower() == "w"
    assert at.button(key="review_next").proto.shortcut.lower() == "n"
    assert at.button(key="review_prev").proto.shortcut.lower() == "p"
    at.button(key="review_quick_worse").click().run()
    _ok(at)
    v = store.verdicts(rid)
    assert list(zip(v["tile"], v["verdict"])) == [(t0, "better"), (t1, "worse")]
    assert at.selectbox(key="review_tile").value == t2
    assert f"Review map of {t2}" in at.get("iframe")[0].proto.alt


def test_high_contrast_palette_beside_the_dataset_colours(review_ws):
    from app.widgets.palette import HIGH_CONTRAST

    at = _app()
    assert at.radio(key="review_colours").options == ["dataset", "high contrast"]
    html = _map_html(at).upper()
    assert all(c.upper() in html for c in DUBAI_PALETTE)
    at.radio(key="review_colours").set_value("high contrast").run()
    _ok(at)
    html = _map_html(at).upper()
    assert all(c.upper() in html for c in HIGH_CONTRAST[:len(DUBAI_PALETTE)])
    assert not any(c.upper() in html for c in DUBAI_PALETTE)
