"""GeoTIFF in, Cloud-Optimized GeoTIFF (and polygons) out, with bounded memory.

:func:`check_raster` refuses what the model cannot use before any work: an unreadable file, too few bands, a band
selection that is not three bands, non-8-bit bands without a value scale, values above the value scale; it warns
(and predicts in pixel coordinates) when the raster has no CRS.

:func:`predict_geotiff` runs :func:`mapsage.infer.large.predict_raster` (row bands of sliding windows, the
accumulator bounded by ``tile`` rows × width) into a tiled temporary GeoTIFF, while a row sink writes the
confidence (max class probability, uint8 0..255) and, on request, the class probabilities (uint8 quantised, or
float32: GDAL's GeoTIFF has no float16) into temporary rasters of the same grid. Each is then copied by GDAL's COG
driver (``rasterio.shutil.copy(..., driver="COG")``: tiled 512, deflate, overviews; nearest for class ids) into
the output folder: ``<stem>_classes.tif`` (class ids, the dataset palette as colour table, nodata 255),
``<stem>_confidence.tif`` and ``<stem>_probs.tif``. The CRS and transform are the input's. The post-processing the
run adopted (``predictor.post``) is applied to the class ids first, block-wise
(:mod:`mapsage.deliver.post_raster`). Polygons come from
:func:`mapsage.deliver.polygons.polygonize`."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import DataError, UserError
from .polygons import polygonize
from .post_raster import post_process_raster


@dataclass
class RasterCheck:
    path: Path
    height: int
    width: int
    count: int
    dtype: str
    crs: Optional[str]
    transform: tuple
    nodata: Optional[float]
    warnings: list[str] = field(default_factory=list)


def check_raster(path: str | Path, bands: Sequence[int] = (1, 2, 3), value_scale: Optional[float] = None,
                 key: str = "predict") -> RasterCheck:
    """Open ``path`` and check it against what the model takes (see the module doc)."""
    import rasterio

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: raster not found ({key}.source)")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"{path}: cannot read the raster ({str(exc).splitlines()[0][:200]}); give a GeoTIFF "
                        "(or another file GDAL reads)") from exc
    with src:
        bands = [int(b) for b in bands]
        if len(bands) != 3:
            raise UserError(f"{key}.bands lists {len(bands)} band(s) {bands}; the model takes three (R, G, B): "
                            f"e.g. {key}.bands=[4,3,2] picks three of a multispectral raster's bands")
        if min(bands) < 1 or max(bands) > src.count:
            raise DataError(f"{path}: has {src.count} band(s) but {key}.bands asks for {bands}; choose three "
                            f"bands between 1 and {src.count}")
        dtypes = {src.dtypes[b - 1] for b in bands}
        if len(dtypes) != 1:
            raise DataError(f"{path}: bands {bands} have different types {sorted(dtypes)}; convert the raster")
        dtype = dtypes.pop()
        if np.dtype(dtype) != np.uint8 and value_scale is None:
            raise DataError(f"{path}: bands are {dtype}, not 8-bit; set {key}.value_scale to the value that "
                            "means full brightness (e.g. 4095 for 12-bit, 10000 for reflectance x 10000) or "
                            "convert the raster to 8-bit")
        if value_scale is not None and not value_scale > 0:
            raise UserError(f"{key}.value_scale must be positive, got {value_scale}")
        warns = []
        # the value range on a decimated read (overviews when the file has them): cheap on any size
        f = max(1, max(src.height, src.width) // 1024)
        sample = src.read(bands, out_shape=(3, max(1, src.height // f), max(1, src.width // f)))
        valid = sample if src.nodata is None else sample[:, ~np.all(sample == src.nodata, axis=0)]
        vmax = float(valid.max()) if valid.size else 0.0
        scale = 255.0 if value_scale is None else float(value_scale)
        if valid.size and float(valid.min()) < 0:
            raise DataError(f"{path}: holds negative values ({float(valid.min()):g}); the model takes brightness "
                            f"0..{key}.value_scale - rescale the raster first")
        if vmax > scale * 1.0001:
            raise DataError(f"{path}: values reach {vmax:g}, above {key}.value_scale {scale:g}; set "
                            f"{key}.value_scale to the sensor's full-brightness value")
        if value_scale is not None and vmax > 0 and vmax < scale / 16:
            warns.append(f"{path.name}: values reach only {vmax:g} of {key}.value_scale {scale:g}: the image will "
                         "look almost black to the model; check the value scale")
        if src.crs is None:
            warns.append(f"{path.name}: no CRS; predicting in pixel coordinates (the outputs are not placed on a "
                         "map and polygon areas are in pixels)")
        return RasterCheck(path, src.height, src.width, src.count, str(dtype),
                           src.crs.to_string() if src.crs else None, tuple(src.transform)[:6], src.nodata, warns)


def _cog_copy(tmp: Path, dst: Path, resampling: str) -> None:
    import rasterio.shutil

    if dst.exists():
        dst.unlink()
    rasterio.shutil.copy(tmp, dst, driver="COG", compress="DEFLATE", blocksize=512,
                         overview_resampling=resampling, bigtiff="IF_SAFER")


def predict_geotiff(predictor, src_path: str | Path, out_dir: str | Path, *, stem: Optional[str] = None,
                    bands: Sequence[int] = (1, 2, 3), value_scale: Optional[float] = None,
                    probabilities: str = "off", polygons: bool = True, polygon_format: str = "gpkg",
                    simplify: float = 0.0, min_area_m2=None, block_rows: int = 1024, device="cpu",
                    window_batch: Optional[int] = None, progress: Optional[Callable[..., None]] = None,
                    show_bar: bool = True, gdal_cache_mb: int = 256) -> dict:
    """Predict one raster to COG(s) and polygons; returns the output paths, the checks' warnings and timings.

    ``gdal_cache_mb`` bounds GDAL's block cache for the whole call (its default, 5 % of the machine's memory,
    would otherwise fill with written blocks of the temporary rasters)."""
    import rasterio

    with rasterio.Env(GDAL_CACHEMAX=int(gdal_cache_mb)):
        return _predict_geotiff(predictor, src_path, out_dir, stem=stem, bands=bands, value_scale=value_scale,
                                probabilities=probabilities, polygons=polygons, polygon_format=polygon_format,
                                simplify=simplify, min_area_m2=min_area_m2, block_rows=block_rows, device=device,
                                window_batch=window_batch, progress=progress, show_bar=show_bar)


def _predict_geotiff(predictor, src_path, out_dir, *, stem, bands, value_scale, probabilities, polygons,
                     polygon_format, simplify, min_area_m2, block_rows, device, window_batch, progress,
                     show_bar) -> dict:
    import copy

    import rasterio
    from rasterio.windows import Window

    from ..infer.large import predict_raster

    src_path = Path(src_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or src_path.stem
    check = check_raster(src_path, bands, value_scale)
    for w in check.warnings:
        warnings.warn(w, stacklevel=2)
    C = predictor.num_classes
    mean, std = predictor.normalization()
    eval_cfg = copy.deepcopy(predictor.eval_cfg)
    if eval_cfg.mode != "slide":   # a raster of any size is predicted window by window
        eval_cfg.mode = "slide"
    if window_batch:
        eval_cfg.window_batch = int(window_batch)
    tmp_ids = out_dir / f".{stem}_classes.tmp.tif"
    tmp_conf = out_dir / f".{stem}_confidence.tmp.tif"
    tmp_prob = out_dir / f".{stem}_probs.tmp.tif"
    grid = {"driver": "GTiff", "height": check.height, "width": check.width, "tiled": True, "blockxsize": 256,
            "blockysize": 256, "compress": "deflate", "bigtiff": "IF_SAFER"}
    with rasterio.open(src_path) as src:
        grid.update(crs=src.crs, transform=src.transform)
    if check.width < 256 or check.height < 256:
        grid.update(tiled=False)
        grid.pop("blockxsize")
        grid.pop("blockysize")
    conf_dst = rasterio.open(tmp_conf, "w", count=1, dtype="uint8", nodata=None, **grid)
    prob_dst = None
    if probabilities != "off":
        pdtype = "uint8" if probabilities == "uint8" else "float32"
        prob_dst = rasterio.open(tmp_prob, "w", count=C, dtype=pdtype, **grid)

    def sink(row0: int, ids_all: np.ndarray, probs_all) -> None:
        # in runs of 256 rows: the float copies of a full-width band of C classes are the largest temporaries
        for k in range(0, ids_all.shape[0], 256):
            ids = ids_all[k:k + 256]
            p = probs_all[:, k:k + 256].float().cpu().numpy()
            n = ids.shape[0]
            win = Window(0, row0 + k, check.width, n)
            conf = np.clip(np.rint(p.max(axis=0) * 255.0), 0, 255).astype(np.uint8)
            conf[ids == 255] = 0
            conf_dst.write(conf[None], window=win)
            if prob_dst is not None:
                if probabilities == "uint8":
                    prob_dst.write(np.clip(np.rint(p * 255.0), 0, 255).astype(np.uint8), window=win)
                else:
                    prob_dst.write(p.astype(np.float32), window=win)

    try:
        info = predict_raster(predictor.model, src_path, tmp_ids, eval_cfg, C, mean, std,
                              palette=list(predictor.cfg.dataset.palette), bands=list(bands),
                              value_scale=value_scale, device=device, progress=progress, show_bar=show_bar,
                              row_sink=sink)
    finally:
        conf_dst.close()
        if prob_dst is not None:
            prob_dst.close()
    out = {"input": str(src_path), "width": check.width, "height": check.height, "crs": check.crs,
           "transform": list(check.transform), "warnings": check.warnings, "predict": info}
    post = getattr(predictor, "post", None)
    if post is not None and post.active:       # the adopted post-processing, block-wise with a halo

        tmp_post = out_dir / f".{stem}_classes.post.tmp.tif"
        out["post"] = post_process_raster(tmp_ids, tmp_post, post, block_rows=block_rows, progress=progress)
        out["post"]["settings"] = post.describe(predictor.classes)
        tmp_post.replace(tmp_ids)
    classes_cog = out_dir / f"{stem}_classes.tif"
    _cog_copy(tmp_ids, classes_cog, "NEAREST")
    conf_cog = out_dir / f"{stem}_confidence.tif"
    _cog_copy(tmp_conf, conf_cog, "AVERAGE")
    out.update(classes=str(classes_cog), confidence=str(conf_cog))
    if prob_dst is not None:
        prob_cog = out_dir / f"{stem}_probs.tif"
        _cog_copy(tmp_prob, prob_cog, "AVERAGE")
        out["probabilities"] = str(prob_cog)
        out["probabilities_dtype"] = "uint8 (value/255)" if probabilities == "uint8" else "float32"
    if polygons:
        ext = "gpkg" if polygon_format == "gpkg" else "geojson"
        out["polygons"] = polygonize(tmp_ids, out_dir / f"{stem}_polygons.{ext}", classes=predictor.classes,
                                     conf_path=tmp_conf, simplify=simplify, min_area_m2=min_area_m2,
                                     block_rows=block_rows, progress=progress)
    for t in (tmp_ids, tmp_conf, tmp_prob):
        if t.exists():
            t.unlink()
    return out


def validate_cog(path: str | Path) -> tuple[bool, list[str], list[str]]:
    """``(is_valid, errors, warnings)`` from rio-cogeo's validator (the checks of GDAL's validate_cloud_optimized_geotiff)."""
    from rio_cogeo.cogeo import cog_validate

    return cog_validate(str(path), quiet=True)
