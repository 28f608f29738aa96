"""The Review page's map of one tile (``app/views/review.py`` lays it out): :func:`map_controls` (opacity, label
overlay, colours, error layers, the base map of a georeferenced tile) and :func:`map_section` (the swipe map itself,
drawn by :func:`app.widgets.review_map.review_map_html` and cached)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd
import streamlit as st

import store
from app.widgets.common import guard, isnum, show_error
from app.widgets.palette import high_contrast
from app.widgets.review_errors import ATLAS, error_layer_names, overlay_layers
from app.widgets.review_map import Georef, _read_array, review_map_html
from app.widgets.review_page import Pair, ReviewRun, Tiles
from app.widgets.review_tiles import LABEL, TileLayers, tile_layers, variant_label
from mapsage.analysis.uncertainty import load_probs
from mapsage.errors import UserError
from store import review_queries

MAP_HEIGHT = 640


@dataclass
class MapOptions:
    """What the controls above the map picked for one tile (``lay``: its layers, None where they cannot be read)."""
    lay: Optional[TileLayers]
    opacity: float
    show_label: bool
    colours: list[str]
    error_layers: list[str]
    atlas_block: int
    base_map: str
    prob_path: str


def map_controls(rr: ReviewRun, pair: Pair, tiles: Tiles, tile: str) -> MapOptions:
    """The tile's layers (an error is shown, and the map left out) and the controls above the map."""
    try:
        lay = tile_layers(tiles.layers, tile, pair.left, pair.right, run_config=rr.cfg, split=rr.split)
    except UserError as exc:
        show_error(exc, f"Tile {tile}")
        lay = None

    o1, o2, o4, o3 = st.columns([2, 2, 2, 3])
    opacity = o1.slider("Mask opacity", 0.0, 1.0, 0.6, 0.05, key="review_opacity",
                        help="The starting opacity of the mask overlays; each overlay also has its own slider on the "
                             "map.")
    show_label = o2.toggle("Label overlay on", value=False, key="review_show_label",
                           help="The label is a layer of the map either way; this switches it on from the start.")
    colours = o4.radio("Mask colours", ["dataset", "high contrast"], horizontal=True, key="review_colours",
                       help="The dataset's own class colours, or a palette of strongly distinct colours that stands "
                            "out on aerial imagery.")
    map_palette = list(rr.palette.colors) if colours == "dataset" else high_contrast(len(rr.classes))
    prob_rows = guard(store.artifacts, rr.rid, kind="prob", tile=tile, variant=pair.right, default=pd.DataFrame(),
                      what="Reading the probability files")
    prob_path = (str(prob_rows["abs_path"].iloc[-1]) if prob_rows is not None and not prob_rows.empty else "")
    e1, e2 = st.columns([4, 1])
    error_layers = e1.multiselect(
        "Error layers", error_layer_names(rr.classes, bool(prob_path), pair.left != LABEL), key="review_error_layers",
        placeholder="correct / FP / FN per class, confidence, disagreement, error atlas",
        help=f"Drawn over both sides of the swipe, about `{pair.R}` (against the label; disagreement: `{pair.L}` "
             f"against `{pair.R}`). Confidence needs the tile's probabilities (`eval.save_probabilities=true`).")
    atlas_block = int(e2.number_input("Atlas block (px)", 8, 1024, 64, 8, key="review_atlas_block",
                                      disabled=ATLAS not in error_layers))
    return MapOptions(lay=lay, opacity=opacity, show_label=show_label, colours=map_palette, error_layers=error_layers,
                      atlas_block=atlas_block, base_map=_base_map_input(o3, lay), prob_path=prob_path)


def _base_map_input(col: Any, lay: Optional[TileLayers]) -> str:
    """A georeferenced (GeoTIFF) tile takes a base map tile URL; a plain image tile says it is drawn in pixels."""
    georef = False
    if lay is not None and isinstance(lay.image, str) and lay.image.lower().endswith((".tif", ".tiff")):
        try:
            georef = Georef.from_raster(lay.image) is not None
        except Exception:  # noqa: BLE001 - unreadable: the map call reports it
            georef = False
    if georef:
        return col.text_input("Base map tile URL (optional, needs network)", value="", key="review_base_map",
                              placeholder="https://tile.openstreetmap.org/{z}/{x}/{y}.png",
                              help="Shown under the georeferenced tile. Left empty, the map needs no network.")
    col.caption("Plain image tile: drawn in a pixel CRS (one map unit per pixel). GeoTIFF tiles are placed at their "
                "real coordinates.")
    return ""


@st.cache_data(show_spinner="Drawing the map…", max_entries=24)
def _map_html(ws: str, run_id: str, n: int, _run_config: dict, split: str, classes: tuple[str, ...],
              ignore_index: int, tile_id: str, left_v: str, right_v: str, opacity_v: float, label_on: bool, base: str,
              colours_v: tuple[str, ...], wanted: tuple[str, ...] = (), drill_v: object = None, probs_file: str = "",
              block: int = 64) -> str:
    """The map of one tile (``_run_config`` is the run's, so not hashed: ``run_id`` stands for it)."""

    classes = list(classes)
    lt = tile_layers(review_queries.review_layers(run_id, tile_id), tile_id, left_v, right_v, run_config=_run_config,
                     split=split)
    if lt.image is None:
        raise UserError(f"tile {tile_id} of run {run_id}: no image is registered and the run's dataset config does "
                        f"not name it; re-run the stage so that it registers the image artifact")
    if lt.right is None:
        raise UserError(f"tile {tile_id} of run {run_id}: no `{right_v}` mask file is registered")
    left_is_label = left_v == LABEL
    overlays = []
    if wanted or drill_v is not None:
        lab = lt.label if isinstance(lt.label, np.ndarray) or lt.label is None else _read_array(lt.label, "label")
        overlays = overlay_layers(
            wanted, classes, label=lab, right=_read_array(lt.right, variant_label(right_v)),
            left=None if left_is_label or lt.left is None else _read_array(lt.left, variant_label(left_v)),
            probs=load_probs(probs_file) if probs_file else None, drill=drill_v, ignore_index=ignore_index,
            atlas_block=block, right_name=variant_label(right_v), left_name=variant_label(left_v))
    return review_map_html(
        lt.image, classes=classes, palette=list(colours_v), ignore_index=ignore_index,
        label=None if left_is_label else lt.label, raw=lt.left,
        raw_name="label" if left_is_label else variant_label(left_v),
        refined={variant_label(right_v): lt.right}, compared_prefix="", base_map=base or None,
        mask_opacity=float(opacity_v), show_label=label_on, overlays=overlays)


def map_section(rr: ReviewRun, pair: Pair, tiles: Tiles, tile: str, opts: MapOptions) -> None:
    """The swipe map of the tile (left mask left of the divider, compared mask right), what the drilled cell lights
    on it, and how to read it."""
    if opts.lay is None:
        return
    for note in opts.lay.notes:
        st.caption(note)
    drill, L, R = pair.drill, pair.L, pair.R
    try:
        html = _map_html(tiles.ws, rr.rid, rr.n_events, rr.cfg, rr.split, tuple(rr.classes), rr.ignore_index, tile,
                         pair.left, pair.right, round(float(opts.opacity), 2), bool(opts.show_label),
                         opts.base_map.strip(), tuple(opts.colours), tuple(opts.error_layers),
                         drill if drill is not None and drill.variant == pair.right else None, opts.prob_path,
                         opts.atlas_block)
    except (UserError, FileNotFoundError, ValueError, OSError) as exc:
        show_error(exc, f"The map of tile {tile}")
        return
    title = f"Review map of {tile}: {L} left, {R} right"
    if hasattr(st, "iframe"):
        st.iframe(html, height=MAP_HEIGHT, alt=title)
    else:  # Streamlit before st.iframe: the same iframe element, without a title
        import streamlit.components.v1 as components

        components.html(html, height=MAP_HEIGHT)
    if drill is not None and tiles.drill_col is not None:
        by_tile, drill_col = tiles.by_tile, tiles.drill_col
        px = by_tile.loc[tile, drill_col] if drill_col in by_tile.columns else None
        rank = tiles.order.index(tile) + 1
        st.markdown(f"Highlighted in magenta: label **{drill.name(rr.classes)}** — "
                    + (f"**{int(px):,} px** on this tile (tile {rank} of {int(tiles.table[drill_col].notna().sum())} "
                       f"with this confusion)" if isnum(px) else "none on this tile") + ".")
    st.caption(f"Swipe: **{L if pair.left != LABEL else 'label'}** left of the divider, **{R}** right. Layers (top "
               "right) toggle the image, the label and both masks; the opacity panel (top left) fades each one. "
               "Ignored pixels are transparent.")
