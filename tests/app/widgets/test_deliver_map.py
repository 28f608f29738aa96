"""The map of a predicted raster: placed at its real location, the predicted classes and the polygons as layers,
no network needed (every asset inline)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.support.deliver import MADE_UP_ORIGIN, georeferenced_tile

pytest.importorskip("rasterio")
pytest.importorskip("geopandas")
CLASSES = ["background", "building", "road", "water", "barren", "forest", "agriculture"]
PALETTE = ["#FFFFFF", "#FF0000", "#FFFF00", "#0000FF", "#9F81B7", "#00FF00", "#FFC380"]


def test_delivery_map_places_raster_and_polygons_offline(tmp_path):
    import rasterio
    from pyproj import Transformer

    from app.widgets.delivery_map import delivery_map_html
    from app.widgets.review_map import external_references
    from mapsage.deliver.polygons import polygonize

    tif = georeferenced_tile(tmp_path / "tile.tif")
    # a class raster from the tile's own colours (a real, structured map without a model)
    with rasterio.open(tif) as src:
        rgb = src.read()
        profile = dict(src.profile, count=1, dtype="uint8", nodata=255)
    coarse = rgb.reshape(3, 32, 32, 32, 32).mean(axis=(2, 4)).sum(axis=0)         # 32x32-pixel blocks
    ids = np.kron((coarse // 110).clip(0, 6), np.ones((32, 32))).astype(np.uint8)
    classes = tmp_path / "classes.tif"
    with rasterio.open(classes, "w", **profile) as dst:
        dst.write(ids[None])
    res = polygonize(classes, tmp_path / "p.gpkg", classes=CLASSES, block_rows=256)
    html = delivery_map_html(tif, classes, classes=CLASSES, palette=PALETTE, polygons=res["path"], max_px=512,
                             max_polygons=20)
    assert external_references(html) == []
    assert f"polygons ({min(20, res['polygons'])} of {res['polygons']})" in html
    # the bounds are the made-up UTM 33N grid's, in degrees
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(*MADE_UP_ORIGIN)
    assert f"{lat:.3f}" in html and f"{lon:.3f}" in html
    assert "prediction" in html and "mean_conf" not in html.split("GeoJsonTooltip")[0][-50:]
