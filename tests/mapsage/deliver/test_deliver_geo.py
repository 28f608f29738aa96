"""GeoTIFF in, COG and polygons out, on a real LoveDA tile written as a GeoTIFF with a made-up georeference
(tests/support/deliver.py documents it): the COG validates, keeps the CRS and transform, carries the palette; the
polygons rasterised back agree with the class raster; no polygon is cut at a block or window seam; bad rasters
are refused with the file and the fix named."""
from __future__ import annotations

import numpy as np
import pytest

from tests.support.deliver import MADE_UP_CRS, checkpoint_run, georeferenced_tile

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("geopandas")
pytest.importorskip("rio_cogeo")

BLOCK_ROWS = 100      # many polygonisation seams on a 1024-row tile
TILE, STRIDE = 512, 384


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    import torch

    from mapsage.deliver.geo import predict_geotiff
    from mapsage.deliver.model_source import load_predictor

    torch.set_num_threads(1)
    rid = checkpoint_run("train_geo_fixture", overrides=["eval.mode=slide", f"eval.tile=[{TILE},{TILE}]",
                                                        f"eval.stride=[{STRIDE},{STRIDE}]"])
    root = tmp_path_factory.mktemp("geo")
    tif = georeferenced_tile(root / "tile.tif")
    predictor = load_predictor(rid)
    out = predict_geotiff(predictor, tif, root / "out", block_rows=BLOCK_ROWS, probabilities="uint8",
                          show_bar=False)
    return tif, out, predictor


def test_cog_is_valid_and_keeps_the_grid(predicted):
    from mapsage.deliver.geo import validate_cog

    tif, out, predictor = predicted
    for key in ("classes", "confidence", "probabilities"):
        ok, errors, _ = validate_cog(out[key])
        assert ok, (key, errors)
    with rasterio.open(tif) as a, rasterio.open(out["classes"]) as b:
        assert b.crs == a.crs and b.crs.to_string() == MADE_UP_CRS
        assert b.transform == a.transform
        assert (b.width, b.height) == (a.width, a.height)
        assert b.dtypes[0] == "uint8" and b.nodata == 255
        assert b.overviews(1), "a COG of this size carries overviews"
        cmap = b.colormap(1)
        ids = b.read(1)
    lut = predictor.cfg.dataset.palette
    for i, hexcol in enumerate(lut):
        c = hexcol.lstrip("#")
        assert cmap[i][:3] == (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16))
    assert ids.max() < predictor.num_classes
    with rasterio.open(out["probabilities"]) as p:
        assert p.count == predictor.num_classes and p.dtypes[0] == "uint8"
        probs = p.read(window=rasterio.windows.Window(0, 0, 64, 64)).astype(int)
    # quantised probabilities sum to ~255 and their argmax is the class raster's
    assert np.abs(probs.sum(axis=0) - 255).max() <= predictor.num_classes
    agree = (probs.argmax(axis=0) == ids[:64, :64]).mean()
    assert agree > 0.98


def _pixel_polygons(gdf, transform):
    from shapely.affinity import affine_transform

    inv = ~transform
    return [(int(r.class_id), affine_transform(r.geometry, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f]))
            for r in gdf.itertuples()]


def test_polygons_rasterise_back_onto_the_class_raster(predicted):
    import geopandas as gpd
    from rasterio import features

    _, out, predictor = predicted
    gdf = gpd.read_file(out["polygons"]["path"])
    assert set(gdf.columns) >= {"class", "class_id", "area_m2", "mean_conf", "pixels", "geometry"}
    assert len(gdf) == out["polygons"]["polygons"] > 0
    with rasterio.open(out["classes"]) as src:
        ids = src.read(1)
        transform = src.transform
        assert gdf.crs.to_epsg() == src.crs.to_epsg()
    back = features.rasterize(((g, int(c)) for g, c in zip(gdf.geometry, gdf.class_id)), out_shape=ids.shape,
                              transform=transform, fill=255, dtype="uint8")
    agreement = (back == ids).mean()
    assert agreement >= 0.995, agreement
    # areas in m² (0.09 m² pixels) and a mean confidence within [0, 1]
    assert np.allclose(gdf.area_m2, gdf.pixels * 0.09, rtol=1e-6)
    assert gdf.mean_conf.between(0, 1).all()
    # holes survive: some polygon has an interior ring
    parts = [p for g in gdf.geometry for p in (g.geoms if g.geom_type == "MultiPolygon" else [g])]
    assert any(len(p.interiors) for p in parts)


def cut_at_seams(polys, ids, rows, cols) -> int:
    """Polygons with a boundary segment on a seam line where the pixels on both sides have the polygon's class."""
    cut = set()
    for k, (cls, geom) in enumerate(polys):
        parts = geom.geoms if geom.geom_type == "MultiPolygon" else [geom]
        rings = [r for p in parts for r in (p.exterior, *p.interiors)]
        for ring in rings:
            xy = np.asarray(ring.coords)
            for (x0, y0), (x1, y1) in zip(xy[:-1], xy[1:]):
                if y0 == y1 and int(y0) in rows and 0 < y0 < ids.shape[0]:
                    xs = np.arange(int(min(x0, x1)), int(max(x0, x1)))
                    y = int(y0)
                    if np.any((ids[y - 1, xs] == cls) & (ids[y, xs] == cls)):
                        cut.add(k)
                if x0 == x1 and int(x0) in cols and 0 < x0 < ids.shape[1]:
                    ys = np.arange(int(min(y0, y1)), int(max(y0, y1)))
                    x = int(x0)
                    if np.any((ids[ys, x - 1] == cls) & (ids[ys, x] == cls)):
                        cut.add(k)
    return len(cut)


def test_no_polygon_is_cut_at_a_seam(predicted):
    import geopandas as gpd

    from mapsage.infer.core import window_grid

    _, out, _ = predicted
    with rasterio.open(out["classes"]) as src:
        ids = src.read(1)
        transform = src.transform
    polys = _pixel_polygons(gpd.read_file(out["polygons"]["path"]), transform)
    h, w = ids.shape
    block_seams = set(range(BLOCK_ROWS, h, BLOCK_ROWS))
    win_rows = {e for a, b in window_grid(h, TILE, STRIDE) for e in (a, b)}
    win_cols = {e for a, b in window_grid(w, TILE, STRIDE) for e in (a, b)}
    assert out["polygons"]["merged_at_seams"] > 0, "the tile must have shapes crossing block seams"
    assert cut_at_seams(polys, ids, block_seams | win_rows, win_cols) == 0
    # the counter does find cuts: polygonise without merging (each block alone) and count again
    naive = []
    from rasterio import features
    from shapely.geometry import shape
    for r0 in range(0, h, BLOCK_ROWS):
        block = ids[r0:r0 + BLOCK_ROWS]
        for g, v in features.shapes(block, transform=rasterio.Affine.translation(0, r0), connectivity=4):
            naive.append((int(v), shape(g)))
    assert cut_at_seams(naive, ids, block_seams, set()) > 0


def test_min_area_and_simplify(predicted, tmp_path):
    import geopandas as gpd

    from mapsage.deliver.polygons import polygonize

    _, out, predictor = predicted
    base = gpd.read_file(out["polygons"]["path"])
    name = base["class"].value_counts().index[0]
    res = polygonize(out["classes"], tmp_path / "p.gpkg", classes=predictor.classes, conf_path=out["confidence"],
                     simplify=0.6, min_area_m2={name: 5.0}, block_rows=256)
    got = gpd.read_file(res["path"])
    assert res["dropped_min_area"] == int(((base["class"] == name) & (base.area_m2 < 5.0)).sum()) > 0
    assert not ((got["class"] == name) & (got.area_m2 < 5.0)).any()
    n_vertices = lambda df: sum(len(g.exterior.coords) for g in df.geometry)  # noqa: E731
    assert n_vertices(got) < n_vertices(base)
    gj = polygonize(out["classes"], tmp_path / "p.geojson", classes=predictor.classes, block_rows=300)
    assert gpd.read_file(gj["path"]).crs.to_epsg() == 4326 and gj["polygons"] == len(base)


def test_raster_errors_name_the_file_and_fix(tmp_path):
    from mapsage.deliver.geo import check_raster
    from mapsage.errors import DataError, UserError

    t16 = georeferenced_tile(tmp_path / "t16.tif", dtype="uint16", scale=16.0)
    with pytest.raises(DataError, match=r"t16\.tif.*uint16.*predict\.value_scale"):
        check_raster(t16)
    with pytest.raises(DataError, match=r"values reach .* above predict\.value_scale"):
        check_raster(t16, value_scale=1000)
    assert check_raster(t16, value_scale=4095).warnings == []
    with pytest.raises(DataError, match=r"has 3 band\(s\) but predict\.bands asks for \[2, 3, 4\]"):
        check_raster(t16, bands=[2, 3, 4], value_scale=4095)
    with pytest.raises(UserError, match=r"predict\.bands lists 2"):
        check_raster(t16, bands=[1, 2], value_scale=4095)
    nocrs = georeferenced_tile(tmp_path / "nocrs.tif", crs=None)
    assert any("no CRS" in w for w in check_raster(nocrs).warnings)
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00not really a tiff")
    with pytest.raises(DataError, match=r"broken\.tif: cannot read the raster"):
        check_raster(bad)
