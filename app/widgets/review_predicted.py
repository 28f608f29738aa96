"""The Review page's view of a predict run's georeferenced rasters: the input and the predicted classes at their
real location (warped to Web Mercator for Leaflet), the per-class polygons as a vector layer, and an optional local
base map (a tile folder or an MBTiles file; the app's default comes from ``MAPSAGE_BASEMAP``), all offline.

Reads the run's ``predictions/manifest.json`` (what the predict stage wrote); draws with
:func:`app.widgets.delivery_map.delivery_map_html`."""
from __future__ import annotations

import json
import os
from pathlib import Path

import streamlit as st

from mapsage.workspace import run_dir

from .basemap import ENV, BasemapError, open_basemap
from .common import show_error
from .delivery_map import delivery_map_html


def raster_outputs(run_id: str) -> tuple[dict, list[dict]]:
    """``(manifest, outputs with a class COG)`` of a predict run; empty when it wrote no raster."""
    mpath = run_dir(run_id) / "predictions" / "manifest.json"
    if not mpath.is_file():
        return {}, []
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, []
    return m, [o for o in m.get("outputs") or [] if o.get("classes")]


def _stamp(*paths) -> tuple:
    return tuple((str(p), Path(p).stat().st_mtime_ns if p and Path(p).exists() else 0) for p in paths)


@st.cache_data(show_spinner="Drawing the predicted raster…", max_entries=8)
def _html(image: str, classes_cog: str, classes: tuple, palette: tuple, polygons: str | None, basemap: str | None,
          stamp: tuple, height: int) -> str:

    return delivery_map_html(image, classes_cog, classes=list(classes), palette=list(palette), polygons=polygons,
                             basemap=basemap or None, height=height)


def predicted_rasters_section(run: dict, height: int = 640) -> bool:
    """Draw the predicted rasters of predict run ``run``; False (nothing drawn) when it has none."""
    rid = run["run_id"]
    m, rasters = raster_outputs(rid)
    if not rasters:
        return False
    st.subheader("Predicted raster on the map")
    c1, c2 = st.columns([2, 3])
    ids = [o["id"] for o in rasters]
    pick = c1.selectbox("Raster", ids, key=f"review_raster_{rid}") if len(ids) > 1 else ids[0]
    if len(ids) == 1:
        c1.markdown(f"Raster **{pick}**")
    if "review_basemap" not in st.session_state:
        st.session_state["review_basemap"] = os.environ.get(ENV, "")
    base = c2.text_input("Local base map (optional)", key="review_basemap",
                         placeholder="/data/tiles (a {z}/{x}/{y}.png folder) or /data/area.mbtiles",
                         help="Drawn under the raster from files on this machine; nothing is downloaded. The "
                              f"default comes from the {ENV} environment variable.").strip()
    bm = None
    if base:
        try:
            bm = open_basemap(base)
        except BasemapError as exc:
            show_error(exc)
    out = next(o for o in rasters if o["id"] == pick)
    poly = (out.get("polygons") or {}).get("path")
    poly = poly if poly and Path(poly).exists() else None
    post = out.get("post")
    st.caption(f"{out['width']}×{out['height']} px · CRS {out.get('crs') or 'none (pixel coordinates)'} · "
               f"{m.get('identity_short') or ''} · COG `{out['classes']}`"
               + (f" · {out['polygons']['polygons']} polygons `{poly}`" if poly else "")
               + (f" · post-processing changed {post['changed_pixels']} px" if post else "")
               + (f" · base map {bm.kind} `{bm.path}` (zooms {bm.zooms[0]}–{bm.zooms[-1]})" if bm else ""))
    for w in out.get("warnings") or []:
        st.warning(w)
    try:
        html = _html(out["input"], out["classes"], tuple(m.get("classes") or []), tuple(m.get("palette") or []),
                     poly, str(bm.path) if bm else None, _stamp(out["input"], out["classes"], poly), height)
    except (BasemapError, OSError, ValueError) as exc:
        show_error(exc, f"The map of {pick}")
        return True
    title = f"Predicted raster {pick} on the map"
    if hasattr(st, "iframe"):
        st.iframe(html, height=height, alt=title)
    else:  # Streamlit before st.iframe
        import streamlit.components.v1 as components

        components.html(html, height=height)
    st.caption("Layers (top right) toggle the image, the predicted classes and the polygons (hover one for its "
               "class, area and mean confidence); the opacity panel (top left) fades the raster layers"
               + (" to show the base map under them." if bm else "."))
    return True
