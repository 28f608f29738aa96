"""Block-wise polygonising: the polygons of a class raster are the same whatever the block height (a real LoveDA
mask with a class stripe that spans every block), and a region crossing many seams is joined once, when it is
complete, not again at every seam (what made the 16384² bench stall)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
gpd = pytest.importorskip("geopandas")

MASK = Path(__file__).resolve().parents[2] / "data" / "loveda" / "Train" / "Rural" / "masks_png" / "1.png"
CLASSES = ["background", "building", "road", "water", "barren", "forest", "agriculture"]
BLOCK = 64


@pytest.fixture(scope="module")
def id_raster(tmp_path_factory):
    from PIL import Image
    from rasterio.transform import from_origin

    raw = np.asarray(Image.open(MASK)).astype(np.int16) - 1      # LoveDA: 0 = no-data, 1..7 = classes
    ids = np.where(raw < 0, 255, raw).astype(np.uint8)[:512, :384]
    ids[:, 200:206] = 3                        # a water stripe from the top to the bottom: open through every block
    ids[100:140, 202:204] = 4                  # holes inside it, one across a seam
    ids[BLOCK * 3 - 5:BLOCK * 3 + 5, 150:160] = 5
    path = tmp_path_factory.mktemp("poly") / "ids.tif"
    with rasterio.open(path, "w", driver="GTiff", height=ids.shape[0], width=ids.shape[1], count=1, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000.0, 5000000.0, 0.3, 0.3), nodata=255) as d:
        d.write(ids[None])
    return path, ids


def test_blockwise_polygons_equal_whole_image_polygons_and_each_region_is_joined_once(id_raster, tmp_path,
                                                                                     monkeypatch):
    from mapsage.deliver import polygons as P

    path, ids = id_raster
    whole = P.polygonize(path, tmp_path / "whole.gpkg", classes=CLASSES, block_rows=ids.shape[0])
    assert whole["joins"] == 0 and whole["blocks"] == 1

    calls = []
    real_join = P._join
    monkeypatch.setattr(P, "_join", lambda geoms: calls.append(len(geoms)) or real_join(geoms))
    blocks = P.polygonize(path, tmp_path / "blocks.gpkg", classes=CLASSES, block_rows=BLOCK)
    n_blocks = -(-ids.shape[0] // BLOCK)
    assert blocks["blocks"] == n_blocks

    a = gpd.read_file(tmp_path / "whole.gpkg")
    b = gpd.read_file(tmp_path / "blocks.gpkg")
    assert len(a) == len(b) == whole["polygons"] == blocks["polygons"]
    key = lambda df: sorted(zip(df.class_id, df.pixels, df.geometry.area.round(4)))  # noqa: E731
    assert key(a) == key(b)
    # the same regions with the same outlines (not only the same areas)
    for cls in sorted(set(a.class_id)):
        ga = a[a.class_id == cls].geometry.union_all()
        gb = b[b.class_id == cls].geometry.union_all()
        assert ga.symmetric_difference(gb).area < 1e-6
    for g in b.geometry:
        assert g.is_valid and g.geom_type == "Polygon"

    # each region crossing a seam is joined exactly once: as many joins as regions spanning a seam line
    with rasterio.open(path) as src:
        T = src.transform
    seams = np.arange(BLOCK, ids.shape[0], BLOCK)
    spanning = 0
    for g in a.geometry:
        _, y0, _, y1 = g.bounds
        rows = sorted(((y0 - T.f) / T.e, (y1 - T.f) / T.e))
        spanning += int(np.any((seams > rows[0] + 1e-6) & (seams < rows[1] - 1e-6)))
    assert blocks["joins"] == len(calls) == spanning > 0
    # the water stripe is one polygon joined from one part per block, in a single call
    assert max(calls) >= n_blocks
    stripe = b[(b.class_id == 3) & (b.pixels >= ids.shape[0] * 6 - 80)]
    assert len(stripe) == 1 and len(stripe.geometry.iloc[0].interiors) >= 1
    assert blocks["max_open_parts"] >= n_blocks - 1
