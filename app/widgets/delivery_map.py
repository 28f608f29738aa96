"""The map of a predicted raster: the input image and the predicted classes at their real location (warped to Web
Mercator for Leaflet, as the Review map places GeoTIFFs), with the per-class polygons as a vector layer, offline.

Built on :mod:`app.widgets.review_map` (the same layers, legend, fade panel and offline rendering). A raster of any
size is read decimated to at most ``max_px`` pixels a side (the COG's overviews make that cheap); the polygons
are read from the GeoPackage/GeoJSON, the largest ``max_polygons`` kept, simplified to the shown pixel size and
drawn in their class colours with class, area and mean confidence in a tooltip. Pure Python, no Streamlit."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .basemap import Basemap, add_basemap, open_basemap
from .review_map import Georef, build_review_map, palette_rgb, render_offline


def _read_decimated(path: Path, max_px: int, bands: Sequence[int] | None = None, categorical: bool = False):
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as src:
        f = max(1, math.ceil(max(src.height, src.width) / max_px))
        h, w = max(1, src.height // f), max(1, src.width // f)
        idx = list(bands) if bands else ([1] if categorical else [1, 2, 3][:src.count] or [1])
        arr = src.read(idx, out_shape=(len(idx), h, w),
                       resampling=Resampling.nearest if categorical else Resampling.average)
        transform = src.transform @ src.transform.scale(src.width / w, src.height / h)
        geo = Georef(transform, src.crs, w, h) if src.crs is not None else None
        pixel = abs(src.transform.a) * f
    if categorical:
        return arr[0], geo, pixel
    if arr.dtype != np.uint8:      # a 16-bit image shown with a 2-98 % stretch
        lo, hi = np.percentile(arr, [2, 98])
        arr = np.clip((arr.astype(np.float32) - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 3, axis=0)
    return np.moveaxis(arr, 0, -1), geo, pixel


def delivery_map_html(image: str | Path, classes_raster: str | Path, *, classes: Sequence[str],
                      palette: Sequence[str] = (), polygons: Optional[str | Path] = None, max_px: int = 1536,
                      max_polygons: int = 3000, height: int | str = "100%", bands: Sequence[int] | None = None,
                      basemap=None, basemap_max_tiles: int = 300) -> str:
    """One self-contained HTML page (no network) of a predicted raster with its polygons; ``basemap``: a local
    tile folder or MBTiles file (path or :class:`app.widgets.basemap.Basemap`) drawn under a georeferenced
    raster."""
    import folium

    rgb, geo, pixel = _read_decimated(Path(image), max_px, bands)
    ids, geo_ids, _ = _read_decimated(Path(classes_raster), max_px, categorical=True)
    if ids.shape != rgb.shape[:2]:
        from PIL import Image
        ids = np.asarray(Image.fromarray(ids).resize((rgb.shape[1], rgb.shape[0]), Image.NEAREST))
    m = build_review_map(rgb, classes=classes, palette=palette, raw=ids, raw_name="prediction",
                         georef=geo if geo is not None else False, height=height)
    info = dict(getattr(m, "mapsage_info", {}))
    if basemap is not None and geo is not None:
        bm = basemap if isinstance(basemap, Basemap) else open_basemap(basemap)
        info["basemap"] = {"path": str(bm.path), "kind": bm.kind,
                           "tiles": add_basemap(m, bm, info["bounds"], max_tiles=basemap_max_tiles)}
    if polygons and Path(polygons).exists() and geo is not None:
        import geopandas as gpd

        gdf = gpd.read_file(polygons)
        total = len(gdf)
        if total:
            if "area_m2" in gdf.columns and total > max_polygons:
                gdf = gdf.sort_values("area_m2", ascending=False).head(max_polygons)
            gdf = gdf.copy()
            gdf["geometry"] = gdf.geometry.simplify(pixel / 2, preserve_topology=True)
            gdf = gdf.to_crs(4326)
            pal = palette_rgb(palette, len(classes))
            gdf["_colour"] = ["#%02X%02X%02X" % tuple(int(v) for v in pal[int(c) % len(pal)])
                              for c in gdf["class_id"]]
            keep = [c for c in ("class", "area_m2", "mean_conf") if c in gdf.columns]
            data = json.loads(gdf[keep + ["_colour", "geometry"]].to_json(drop_id=True))
            folium.map.CustomPane("mapsage-polygons", z_index=460, pointer_events=True).add_to(m)
            folium.GeoJson(
                data, name=f"polygons ({len(gdf)} of {total})", pane="mapsage-polygons",
                style_function=lambda f: {"color": "#111111", "weight": 0.8, "fillOpacity": 0.35,
                                          "fillColor": f["properties"]["_colour"]},
                tooltip=folium.GeoJsonTooltip(fields=keep, aliases=["class", "area m²", "mean confidence"][:len(keep)],
                                              localize=True)).add_to(m)
            info["polygons"] = {"shown": len(gdf), "total": total}
            # the layer control lists the layers defined before it: move it after the polygon layer
            for key, child in list(m._children.items()):
                if isinstance(child, folium.LayerControl):
                    del m._children[key]
                    m.add_child(child, name=key)
    m.mapsage_info = info
    return render_offline(m)
