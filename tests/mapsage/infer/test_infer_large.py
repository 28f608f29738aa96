"""The bounded-memory raster path: a real demo image written as a GeoTIFF, predicted window by window."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from mapsage.errors import DataError
from mapsage.infer import infer_probs
from mapsage.infer.large import predict_raster
from tests.support.infer import MEAN, STD, SymmetricConvModel, dubai_rgb, eval_cfg, normalise, tiny_segformer

DUBAI_PALETTE = ["#E2A929", "#8429F6", "#6EC1E4", "#3C1098", "#FEDD3A"]
# UTM zone 40N (Dubai), 0.5 m pixels: a plausible georeference for the demo tile
CRS = "EPSG:32640"
TRANSFORM = Affine(0.5, 0.0, 330000.0, 0.0, -0.5, 2790000.0)


def write_geotiff(path, rgb: np.ndarray, nodata=None, dtype="uint8"):
    h, w, _ = rgb.shape
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=3, dtype=dtype, crs=CRS,
                       transform=TRANSFORM, nodata=nodata, tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(np.moveaxis(rgb, -1, 0).astype(dtype))
    return path


def test_geotiff_equals_in_memory_sliding_window_real_segformer(tmp_path):
    rgb = dubai_rgb(3, 2)[:520, :450]                       # real pixels of a Dubai image (682 x 658)
    src = write_geotiff(tmp_path / "tile.tif", rgb)
    model = tiny_segformer()
    cfg = eval_cfg(mode="slide", tile=[256, 256], stride=[192, 192], window_batch=4)
    info = predict_raster(model, src, tmp_path / "pred.tif", cfg, 5, MEAN, STD, palette=DUBAI_PALETTE,
                          show_bar=False)
    ref = infer_probs(model, normalise(rgb)[None], cfg, 5).argmax(1)[0].numpy()
    with rasterio.open(tmp_path / "pred.tif") as out:
        pred = out.read(1)
        assert out.crs.to_string() == CRS and out.transform == TRANSFORM
        assert out.dtypes[0] == "uint8" and out.nodata == 255
        assert out.colormap(1)[3][:3] == (0x3C, 0x10, 0x98)
    assert pred.shape == rgb.shape[:2]
    # same windows, same summation order: identical up to the model's batch-composition rounding
    assert (pred == ref).mean() > 0.9999
    assert info["bands"] == 3 and info["windows"] == 9
    assert info["accumulator_bytes"] == 4 * 6 * 256 * rgb.shape[1]


@pytest.mark.parametrize("tile,stride", [([64, 96], [48, 80]), ([100, 100], [100, 100]), ([300, 256], [137, 200])])
def test_geotiff_exact_on_a_context_model_many_bands(tmp_path, tile, stride):
    rgb = dubai_rgb(6, 4)[:600, :520]                      # real pixels; many row bands and 256-row blocks
    src = write_geotiff(tmp_path / "t.tif", rgb)
    model = SymmetricConvModel(5)
    cfg = eval_cfg(mode="slide", tile=tile, stride=stride, window_batch=3)
    predict_raster(model, src, tmp_path / "p.tif", cfg, 5, MEAN, STD, show_bar=False)
    ref = infer_probs(model, normalise(rgb)[None], cfg, 5).argmax(1)[0].numpy()
    with rasterio.open(tmp_path / "p.tif") as out:
        assert (out.read(1) == ref).mean() > 0.9999


def test_geotiff_nodata_and_tta(tmp_path):
    rgb = dubai_rgb(5, 1)[:300, :300].copy()
    rgb[:40, :50] = 0                                       # a no-data corner (outside the image footprint)
    src = write_geotiff(tmp_path / "nd.tif", rgb, nodata=0)
    cfg = eval_cfg(mode="slide", tile=[128, 128], stride=[96, 96], tta={"scales": [1.0], "hflip": True})
    predict_raster(SymmetricConvModel(5), src, tmp_path / "nd_pred.tif", cfg, 5, MEAN, STD, show_bar=False)
    with rasterio.open(tmp_path / "nd_pred.tif") as out:
        pred = out.read(1)
    nodata = np.all(rgb == 0, axis=-1)                     # the corner, and any pure black pixel of the image
    assert nodata[:40, :50].all()
    assert np.array_equal(pred == 255, nodata)
    assert (pred[~nodata] < 5).all()


def test_geotiff_errors(tmp_path):
    rgb16 = dubai_rgb(2, 1)[:64, :64].astype(np.uint16) * 16
    src = write_geotiff(tmp_path / "u16.tif", rgb16, dtype="uint16")
    cfg = eval_cfg(mode="slide", tile=[64, 64], stride=[64, 64])
    with pytest.raises(DataError, match="value_scale"):
        predict_raster(SymmetricConvModel(5), src, tmp_path / "o.tif", cfg, 5, MEAN, STD, show_bar=False)
    # with the scale given, 16-bit input is fine and equals the 8-bit result
    predict_raster(SymmetricConvModel(5), src, tmp_path / "o.tif", cfg, 5, MEAN, STD, value_scale=255 * 16,
                   show_bar=False)
    src8 = write_geotiff(tmp_path / "u8.tif", dubai_rgb(2, 1)[:64, :64])
    predict_raster(SymmetricConvModel(5), src8, tmp_path / "o8.tif", cfg, 5, MEAN, STD, show_bar=False)
    with rasterio.open(tmp_path / "o.tif") as a, rasterio.open(tmp_path / "o8.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))
    with pytest.raises(DataError, match="not found"):
        predict_raster(SymmetricConvModel(5), tmp_path / "missing.tif", tmp_path / "x.tif", cfg, 5, MEAN, STD)


def test_raster_command_with_a_workbench_checkpoint(tmp_path, capsys):
    from mapsage.config import load_config
    from mapsage.data import get_normalization
    from mapsage.infer.large import main
    from mapsage.train.checkpoint import load_for_inference
    from tests.support.infer import DUBAI_CONFIG, write_checkpoint

    cfg = load_config(DUBAI_CONFIG)
    ckpt = write_checkpoint(cfg, tmp_path / "ck" / "best.pth", seed=0)
    rgb = dubai_rgb(2, 1)[:200, :300]
    src = write_geotiff(tmp_path / "in.tif", rgb)
    rc = main(["--checkpoint", str(ckpt), "--input", str(src), "--output", str(tmp_path / "out.tif"),
               "--device", "cpu", "--set", "eval.tile=[128,128]", "--set", "eval.stride=[96,96]"])
    assert rc == 0 and "out.tif: 300x200 px" in capsys.readouterr().out
    model, ck_cfg = load_for_inference(ckpt, weights="raw")
    mean, std = get_normalization(ck_cfg)
    x = (normalise(rgb) * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
         - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    ref = infer_probs(model, x[None], eval_cfg(mode="slide", tile=[128, 128], stride=[96, 96]), 5)
    with rasterio.open(tmp_path / "out.tif") as out:
        assert (out.read(1) == ref.argmax(1)[0].numpy()).mean() > 0.9999
    assert main(["--checkpoint", str(tmp_path / "nope.pth"), "--input", str(src),
                 "--output", str(tmp_path / "o2.tif")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
