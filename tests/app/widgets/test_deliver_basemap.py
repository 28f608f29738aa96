"""A local base map under the map of a predicted raster: a tile folder and an MBTiles file (generated here, tiny)
are read offline and embedded around the raster; a path that is neither is refused in one line naming it."""
from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tests.support.deliver import georeferenced_tile

pytest.importorskip("rasterio")
CLASSES = ["background", "building", "road", "water", "barren", "forest", "agriculture"]
PALETTE = ["#FFFFFF", "#FF0000", "#FFFF00", "#0000FF", "#9F81B7", "#00FF00", "#FFC380"]
ZOOMS = [12, 14, 16]


def _png(z: int, x: int, y: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), ((z * 17) % 256, x % 256, y % 256)).save(buf, format="PNG")
    return buf.getvalue()


def _tiles_around(tif: Path):
    from app.widgets.basemap import _tile_range
    from app.widgets.review_map import Georef, _to_mercator

    geo = Georef.from_raster(tif)
    _, bounds = _to_mercator(np.zeros((geo.height, geo.width), np.uint8), geo, categorical=True)
    (s, w), (n, e) = bounds
    area = [[s - (n - s), w - (e - w)], [n + (n - s), e + (e - w)]]
    for z in ZOOMS:
        x0, x1, y0, y1 = _tile_range(area, z)
        for x in range(x0, x1 + 1):
            for y in range(y0, y1 + 1):
                yield z, x, y


@pytest.fixture
def raster(tmp_path):
    import rasterio

    tif = georeferenced_tile(tmp_path / "tile.tif")
    with rasterio.open(tif) as src:
        profile = dict(src.profile, count=1, dtype="uint8", nodata=255)
        ids = (src.read(1) // 40).clip(0, 6).astype(np.uint8)
    classes = tmp_path / "classes.tif"
    with rasterio.open(classes, "w", **profile) as dst:
        dst.write(ids[None])
    return tif, classes


def test_tile_folder_and_mbtiles_are_embedded_offline(raster, tmp_path):
    from app.widgets.basemap import open_basemap
    from app.widgets.delivery_map import delivery_map_html
    from app.widgets.review_map import external_references

    tif, classes = raster
    folder = tmp_path / "tiles"
    mb = tmp_path / "base.mbtiles"
    con = sqlite3.connect(mb)
    con.execute("CREATE TABLE metadata (name text, value text)")
    con.executemany("INSERT INTO metadata VALUES (?, ?)", [("name", "made-up base"), ("format", "png")])
    con.execute("CREATE TABLE tiles (zoom_level integer, tile_column integer, tile_row integer, tile_data blob)")
    keys = list(_tiles_around(tif))
    for z, x, y in keys:
        p = folder / str(z) / str(x) / f"{y}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(_png(z, x, y))
        con.execute("INSERT INTO tiles VALUES (?, ?, ?, ?)", (z, x, (1 << z) - 1 - y, _png(z, x, y)))  # TMS rows
    con.commit()
    con.close()

    from app.widgets.basemap import _tile_range
    from app.widgets.review_map import Georef, _to_mercator
    geo = Georef.from_raster(tif)
    _, bounds = _to_mercator(np.zeros((geo.height, geo.width), np.uint8), geo, categorical=True)
    x0, _, y0, _ = _tile_range(bounds, 16)          # a finest-level tile under the raster itself
    for path, kind in ((folder, "folder"), (mb, "mbtiles")):
        bm = open_basemap(path)
        assert bm.kind == kind and bm.zooms == ZOOMS
        z, x, y = 16, x0, y0
        assert bm.tile(z, x, y)[0] == _png(z, x, y)          # XYZ rows (MBTiles' TMS rows flipped)
        assert bm.tile(z, x, y + 10_000) is None
        html = delivery_map_html(tif, classes, classes=CLASSES, palette=PALETTE, basemap=path, max_px=256,
                                 basemap_max_tiles=len(keys))
        assert external_references(html) == []
        import base64
        assert base64.b64encode(_png(z, x, y)).decode() in html
        assert "mapsage-basemap" in html
        assert ("made-up base" in html) == (kind == "mbtiles")
    # the tile budget keeps the coarse zooms and drops the finest level that would exceed it
    from app.widgets.basemap import basemap_tiles
    few = basemap_tiles(open_basemap(folder), bounds, max_tiles=2)
    assert few and {int(k.split("/")[0]) for k in few} == {12}


def test_a_path_that_is_not_a_basemap_is_refused_in_one_line(tmp_path):
    from app.widgets.basemap import BasemapError, open_basemap
    from mapsage.errors import UserError

    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    con = sqlite3.connect(tmp_path / "other.sqlite")
    con.execute("CREATE TABLE t (a int)")
    con.commit()
    con.close()
    vec = tmp_path / "vec.mbtiles"
    con = sqlite3.connect(vec)
    con.execute("CREATE TABLE metadata (name text, value text)")
    con.execute("INSERT INTO metadata VALUES ('format', 'pbf')")
    con.execute("CREATE TABLE tiles (zoom_level integer, tile_column integer, tile_row integer, tile_data blob)")
    con.execute("INSERT INTO tiles VALUES (0, 0, 0, x'00')")
    con.commit()
    con.close()
    cases = {tmp_path / "nowhere": "not found", tmp_path / "empty": "not a tile folder",
             tmp_path / "notes.txt": "not an MBTiles file", tmp_path / "other.sqlite": "without a 'tiles' table",
             vec: "vector tiles"}
    for path, words in cases.items():
        with pytest.raises(BasemapError) as exc:
            open_basemap(path)
        msg = str(exc.value)
        assert isinstance(exc.value, UserError) and str(path) in msg and words in msg and "\n" not in msg
