"""A predict run on a georeferenced raster (the real job worker) opens in the Review page: the raster at its real
place with its polygons as a layer, offline; a local base map from a tile folder is drawn under it; a base map
path that is not one is refused in one line naming it."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.support.deliver import checkpoint_run, georeferenced_tile

pytest.importorskip("rasterio")
pytest.importorskip("geopandas")
ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")


@pytest.fixture(scope="module")
def predict_run(tmp_path_factory):
    import torch

    from runners.predict_spec import predict_spec
    from tests.support.app import run_in_process

    torch.set_num_threads(1)
    src = checkpoint_run("train_review_predict_fixture", overrides=["eval.mode=slide", "eval.tile=[512,512]",
                                                                   "eval.stride=[512,512]"])
    tif = georeferenced_tile(tmp_path_factory.mktemp("raster") / "scene.tif")
    config, overrides = predict_spec(src, str(tif), ["runtime.threads=1", "runtime.device=cpu",
                                                     "predict.block_rows=300"])
    rid = run_in_process(str(config), overrides)
    tiles = tmp_path_factory.mktemp("basemap") / "tiles"
    from PIL import Image

    for z, x, y in [(3, 4, 2), (3, 4, 3)]:            # a coarse made-up base map over Europe
        p = tiles / str(z) / str(x) / f"{y}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (10 * y, 200, 30)).save(buf, format="PNG")
        p.write_bytes(buf.getvalue())
    return rid, tif, tiles


def _review(rid: str, basemap: str = ""):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=180)
    at.run()
    at.query_params["run"] = rid
    at.switch_page("views/review.py")
    at.run()
    if basemap:
        at.text_input(key="review_basemap").set_value(basemap)
        at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_review_opens_the_predicted_raster_with_polygons_and_a_local_basemap(predict_run):
    from app.widgets.review_map import external_references

    rid, tif, tiles = predict_run
    at = _review(rid)
    assert not at.error, [e.value for e in at.error]
    assert "Predicted raster on the map" in [h.value for h in at.subheader]
    frames = at.get("iframe")
    assert len(frames) == 1
    html = frames[0].proto.srcdoc
    assert external_references(html) == []
    assert "polygons (" in html and "prediction" in html and "mapsage-basemap" not in html
    caption = "\n".join(c.value for c in at.caption)
    assert "EPSG:32633" in caption and "polygons" in caption

    at = _review(rid, basemap=str(tiles))
    assert not at.error, [e.value for e in at.error]
    html = at.get("iframe")[0].proto.srcdoc
    assert "mapsage-basemap" in html and '"3/4/2": "data:image/png;base64,' in html
    assert "base map folder" in "\n".join(c.value for c in at.caption)

    bad = tiles.parent / "notes.txt"
    bad.write_text("not tiles")
    at = _review(rid, basemap=str(bad))
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and str(bad) in errors[0] and "not an MBTiles file" in errors[0]
    assert len(at.get("iframe")) == 1          # the map is still drawn, without the base map
