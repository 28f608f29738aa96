"""The adopted post-processing on the raster path: block-wise with a halo it gives the whole image's result (a
real LoveDA mask, many blocks), and predicting a GeoTIFF with a predictor that adopted post-processing writes the
post-processed class COG (the polygons follow it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.deliver import LOVEDA, LOVEDA_CONFIG, georeferenced_tile

rasterio = pytest.importorskip("rasterio")


def _write_ids(path: Path, ids: np.ndarray) -> Path:
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", height=ids.shape[0], width=ids.shape[1], count=1, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000.0, 5000000.0, 0.3, 0.3), nodata=255,
                       tiled=True, blockxsize=256, blockysize=256) as d:
        d.write(ids[None])
        d.write_colormap(1, {0: (255, 255, 255, 255), 1: (255, 0, 0, 255)})
    return path


def test_blockwise_post_processing_equals_the_whole_image(tmp_path):
    from PIL import Image

    from mapsage.deliver.post_raster import post_process_raster
    from mapsage.infer.post import PostProcessor

    raw = np.asarray(Image.open(LOVEDA / "Train" / "Rural" / "masks_png" / "0.png")).astype(np.int16) - 1
    ids = np.where(raw < 0, 255, raw).astype(np.uint8)
    rng = np.random.default_rng(0)     # a prediction's speckle on the real mask: small blobs of random classes
    for y, x, c, k in zip(rng.integers(0, 1020, 600), rng.integers(0, 1020, 600), rng.integers(0, 7, 600),
                          rng.integers(1, 5, 600)):
        ids[y:y + k, x:x + k] = c
    post = PostProcessor(min_area={1: 40, 2: 25, 4: 60}, road_class=2, road_min_width=3)
    whole = post(ids)
    whole = np.where(ids == 255, 255, whole)
    assert (whole != ids).sum() > 100, "the filter must change something on this mask"
    src = _write_ids(tmp_path / "ids.tif", ids)
    res = post_process_raster(src, tmp_path / "post.tif", post, block_rows=48)
    with rasterio.open(tmp_path / "post.tif") as p:
        got = p.read(1)
        assert p.colormap(1)[1][:3] == (255, 0, 0) and p.nodata == 255 and p.crs.to_epsg() == 32633
    assert res["halo_rows"] == 61 and res["changed_pixels"] == int((got != ids).sum())
    assert np.array_equal(got, whole)
    # without the halo, blocks cut components and judge them on a part: the result differs
    from mapsage.deliver import post_raster
    blocks = np.concatenate([np.where(ids[r:r + 48] == 255, 255, post(ids[r:r + 48])) for r in range(0, 1024, 48)])
    assert not np.array_equal(blocks, whole)
    assert post_raster.post_halo(PostProcessor()) == 1


def test_predict_geotiff_applies_the_adopted_post_processing(tmp_path):
    import torch
    from torch import nn

    from mapsage.config import load_config
    from mapsage.deliver.geo import predict_geotiff
    from mapsage.deliver.model_source import Predictor
    from mapsage.infer.post import PostProcessor

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 7, 3, padding=1)).eval()
    cfg = load_config(LOVEDA_CONFIG, ["eval.mode=slide", "eval.tile=[256,256]", "eval.stride=[256,256]"])
    tif = georeferenced_tile(tmp_path / "tile.tif")
    plain = Predictor(model=model, cfg=cfg, eval_cfg=cfg.eval)
    post = PostProcessor(min_area={k: 50 for k in range(7)})
    adopted = Predictor(model=model, cfg=cfg, eval_cfg=cfg.eval, post=post, variant="raw+post")
    a = predict_geotiff(plain, tif, tmp_path / "a", polygons=False, block_rows=200, show_bar=False)
    b = predict_geotiff(adopted, tif, tmp_path / "b", block_rows=200, show_bar=False)
    with rasterio.open(a["classes"]) as s:
        ids = s.read(1)
    with rasterio.open(b["classes"]) as s:
        got = s.read(1)
    assert "post" not in a and b["post"]["changed_pixels"] == int((got != ids).sum()) > 1000
    assert np.array_equal(got, post(ids))
    # the polygons are those of the post-processed raster: per-class pixel counts are its, not the raw ids'
    import geopandas as gpd
    gdf = gpd.read_file(b["polygons"]["path"])
    per_class = gdf.groupby("class_id").pixels.sum().reindex(range(7), fill_value=0).to_numpy()
    assert np.array_equal(per_class, np.bincount(got.ravel(), minlength=7)[:7])
    assert not np.array_equal(per_class, np.bincount(ids.ravel(), minlength=7)[:7])
