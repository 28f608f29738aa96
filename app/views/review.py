"""Review: where refinement (or any other variant) helped or hurt, on the map, tile by tile, with a verdict.

For a run with prediction masks (the refinement A/B of stage 4; an evaluation with ``eval.save_predictions``) and
one of its tiles: an offline folium map with the image, the label, the two compared masks as overlays (toggle and
fade), a swipe between them and the dataset's legend; the tile list sorted by Boundary IoU change (from the store's
per-tile rows); a verdict per tile (better / worse / same, with a comment) saved in the store and summarised per
run. ``?run=<run id>&tile=<tile id>`` addresses a view."""
from __future__ import annotations

import getpass

import numpy as np
import pandas as pd
import streamlit as st

import store
from app.widgets import data
from app.widgets.common import PAGE_FILES, guard, isnum, query_list, show_error, status_text
from app.widgets.nav import ensure_routed
from app.widgets.palette import high_contrast
from app.widgets.report_button import report_button
from app.widgets.review_tiles import (
    LABEL,
    agreement,
    class_rows,
    default_pair,
    pair_rule,
    tile_layers,
    tile_table,
    variant_label,
)
from mapsage.errors import UserError
from mapsage.workspace import workspace_root
from store import review_queries

ensure_routed()
st.title(":material/layers: Review")
st.caption("Two masks of a run on the map, tile by tile, each named for what it is: `raw` (the model's own "
           "prediction), a refinement chain (`refine=crf`), a TTA variant (`tta=flip`) or the `label`. Toggle and "
           "fade the overlays, drag the swipe, and record whether the compared mask is better, worse or the same. "
           "Keys: **P** / **N** previous / next tile; **B** / **W** / **S** better / worse / same and on to the "
           "next tile.")

MAP_HEIGHT = 640
VERDICTS = list(store.VERDICTS)      # the store's list (store/review.py)
VERDICT_ICONS = {"better": ":material/thumb_up:", "worse": ":material/thumb_down:", "same": ":material/drag_handle:"}
VERDICT_KEYS = ("B", "W", "S")   # keyboard shortcuts of the one-key verdicts, in the order of VERDICTS

# a verdict saved with "Save and next" picks the next tile before the tile selector is drawn
if "_review_next_tile" in st.session_state:
    st.session_state["review_tile"] = st.session_state.pop("_review_next_tile")

runs = guard(review_queries.review_runs, default=None, what="Reading the runs with masks")
if runs is None:
    st.stop()
if runs.empty:
    st.info("No run has prediction masks to review yet. The refinement A/B of stage 4 writes the raw mask and "
            "each chain's mask of every tile it scores; an evaluation with `eval.save_predictions=true` writes its prediction "
            "masks. Launch one from the Plan board.", icon=":material/arrow_forward:")
    st.page_link(PAGE_FILES["plan"], label="Open the Plan board", icon=":material/map:")
    st.stop()

# ------------------------------------------------------------------------------------------------------------ run
ids = list(runs["run_id"])
by_id = runs.set_index("run_id")


def _run_label(rid: str) -> str:
    r = by_id.loc[rid]
    return f"{r['name']} · {r['kind'] or '?'} · {int(r['n_tiles'])} tiles · {r['status'] or '?'}"


# ?run= and ?tile= set the selectors when they change from outside (a link, a bookmark); the selectors then keep
# the query parameters up to date
wanted = (query_list("run") or [None])[0]
if wanted != st.session_state.get("_review_qrun"):
    st.session_state["_review_qrun"] = wanted
    if wanted in ids:
        st.session_state["review_run"] = wanted
    elif wanted:
        st.warning(f"Run `{wanted}` has no prediction masks in the store (yet?). Pick another one.")
if st.session_state.get("review_run") not in ids:
    st.session_state["review_run"] = ids[0]
rid = st.selectbox("Run", ids, format_func=_run_label, key="review_run",
                   help="Runs with prediction masks: refinement runs first, then newest first.")
if st.query_params.get("run") != rid:
    st.query_params["run"] = rid
    st.session_state["_review_qrun"] = rid

run = guard(data.run_row, rid, default=None, what=f"Reading run {rid}") or {}
meta = by_id.loc[rid]
cfg = run.get("config") or {}
ds_cfg = cfg.get("dataset") or {}
palette = data.palette_of(run)
classes = list(palette.names) or list(run.get("class_names") or [])
ignore_index = int(ds_cfg.get("ignore_index", 255))
split = run.get("split") or meta.get("split") or "val"
n_events = int(run.get("n_events") or 0)

st.markdown(f"{status_text(run.get('status'))} &nbsp; `{rid}` · `{run.get('kind')}` · dataset "
            f"`{run.get('dataset')}` · split `{split}` · {int(meta['n_tiles'])} tiles with masks · "
            f"{int(meta['n_reviewed'])} reviewed")
report_button([rid], key="review", names=[run.get("name") or rid])
info = run.get("info") or {}
unavailable = info.get("unavailable_chains") or {}
if unavailable:
    st.warning("Not run: " + "; ".join(f"**{c}** — {why}" for c, why in unavailable.items()),
               icon=":material/block:")

ab = guard(store.ab_rows, rid, default=pd.DataFrame(), what="Reading the A/B rows")
if ab is not None and not ab.empty:
    with st.expander("A/B decisions of this run", expanded=run.get("kind") == "refine"):
        crit = ab["criterion"].dropna().iloc[0] if ab["criterion"].notna().any() else "mbiou"
        st.dataframe(pd.DataFrame({
            "variant": ab["variant"].map(variant_label),
            "baseline": ab["baseline"].map(variant_label),
            f"mIoU ({split})": ab["miou"] * 100,
            f"Boundary IoU ({split})": ab["mbiou"] * 100,
            f"gain ({crit}, points)": ab["gain"],
            "threshold (points)": ab["threshold"],
            "decision": ab["decision"],
        }), hide_index=True, width="stretch",
            column_config={f"mIoU ({split})": st.column_config.NumberColumn(format="%.2f"),
                           f"Boundary IoU ({split})": st.column_config.NumberColumn(format="%.2f"),
                           f"gain ({crit}, points)": st.column_config.NumberColumn(format="%+.2f"),
                           "threshold (points)": st.column_config.NumberColumn(format="%.2f")}, placeholder="–")

# a predict run's georeferenced rasters: the raster at its real place, its polygons, a local base map
if run.get("kind") == "predict":
    from app.widgets.review_predicted import predicted_rasters_section

    if predicted_rasters_section(run, height=MAP_HEIGHT):
        st.stop()

# ------------------------------------------------------------------------------------------------------------ pair
variants = list(meta["variants"])
try:
    left0, right0 = default_pair(variants, ab)
except UserError as exc:
    show_error(exc)
    st.stop()
pair_key = f"review_pair_{rid}"
# a confusion cell to drill into (?true=&pred=&variant=, from Run detail / Compare): the compared mask against the
# label, the cell's pixels lit on the map, its tiles first
from app.widgets.review_errors import drill_from_params

if st.session_state.get("_review_drill_run") not in (None, rid):
    for k in ("true", "pred", "variant"):
        st.query_params.pop(k, None)
st.session_state["_review_drill_run"] = rid
drill, why = drill_from_params(st.query_params.get("true"), st.query_params.get("pred"),
                               st.query_params.get("variant"), len(classes), variants)
if why:
    st.warning(f"Drill-down ignored: {why}.", icon=":material/block:")
drill_key = (rid, drill)
if drill is not None and st.session_state.get("_review_drill_key") != drill_key:
    st.session_state[f"{pair_key}_left"] = LABEL
    st.session_state[f"{pair_key}_right"] = drill.variant
st.session_state["_review_drill_key"] = drill_key if drill is not None else None
if drill is not None:
    d1, d2 = st.columns([5, 1], vertical_alignment="center")
    d1.info(f"**Drill-down**: label **{drill.name(classes)}** in `{variant_label(drill.variant)}` — its pixels "
            f"are lit in magenta on the map, and the tiles with most of them come first.",
            icon=":material/filter_center_focus:")

    def _clear_drill() -> None:
        for k in ("true", "pred", "variant"):
            st.query_params.pop(k, None)

    d2.button("Clear drill-down", on_click=_clear_drill, key="review_drill_clear", icon=":material/close:")
lefts = variants + [LABEL] if len(variants) > 1 else [LABEL]
c1, c2, c3 = st.columns([2, 2, 3])
left = c1.selectbox("Left of the swipe (baseline)", lefts, index=lefts.index(left0), format_func=variant_label,
                    key=f"{pair_key}_left")
right_opts = [v for v in variants if v != left] or variants
right = c2.selectbox("Right of the swipe (compared)", right_opts,
                     index=right_opts.index(right0) if right0 in right_opts else 0, format_func=variant_label,
                     key=f"{pair_key}_right")
order = c3.radio("Order of the tiles", ["largest Boundary IoU gain first", "largest Boundary IoU loss first"],
                 horizontal=True, key="review_order", disabled=left == LABEL)
L, R = variant_label(left), variant_label(right)


@st.cache_data(show_spinner=False, max_entries=32)
def _tiles(ws: str, run_id: str, n: int, split_name: str, variant_pair: tuple[str, ...]) -> pd.DataFrame:
    return store.tiles(run_id, split=split_name, variant=list(variant_pair), latest=True)


@st.cache_data(show_spinner=False, max_entries=32)
def _layers(ws: str, run_id: str, n: int) -> pd.DataFrame:
    return review_queries.review_layers(run_id)


ws = str(workspace_root())
layers = guard(_layers, ws, rid, n_events, default=pd.DataFrame(), what="Reading the mask artifacts")
pair = tuple(v for v in (left, right) if v != LABEL)
tiles_rows = guard(_tiles, ws, rid, n_events, split, pair, default=pd.DataFrame(), what="Reading per-tile rows")
mask_tiles = sorted(set(layers.loc[layers["variant"] == right, "tile"])) if not layers.empty else []
rule = pair_rule(ab, left, right)
table = tile_table(tiles_rows, left, right, mask_tiles, rule=rule)
if left != LABEL and order.startswith("largest Boundary IoU loss"):
    table = table.sort_values(["d_mbiou", "tile"], ascending=[True, True], na_position="last",
                              kind="stable").reset_index(drop=True)
baseline_v = None if left == LABEL else left
verdicts = guard(review_queries.latest_verdicts, rid, right, baseline_v, default=pd.DataFrame(),
                 what="Reading the verdicts")
table = table.merge(verdicts[["tile", "verdict", "reviewer"]] if verdicts is not None and not verdicts.empty
                    else pd.DataFrame(columns=["tile", "verdict", "reviewer"]), on="tile", how="left")
drill_col = None
if drill is not None:
    from store import error_queries

    cell_tiles = guard(error_queries.confusion_tiles, rid, split, drill.variant, drill.true_id, drill.pred_id,
                       default=pd.DataFrame(), what="Reading the per-tile confusion")
    drill_col = f"{drill.name(classes)} (px)"
    px = dict(zip(cell_tiles["tile"], cell_tiles["pixels"])) if cell_tiles is not None else {}
    table[drill_col] = table["tile"].map(px)
    table = table.sort_values(drill_col, ascending=False, na_position="last", kind="stable").reset_index(drop=True)
from app.widgets.review_queue import queue_section

table = queue_section(rid, run, table, ws=ws, n_events=n_events, drill_active=drill is not None)
order_tiles = list(table["tile"])
if not order_tiles:
    st.info(f"No tile has a `{R}` mask.")
    st.stop()

# ------------------------------------------------------------------------------------------------------------ tiles
st.subheader("Tiles")
if table.attrs.get("queue_order") and left != LABEL:
    st.caption(f"Tiles {table.attrs['queue_order']}.")
if drill_col is not None:
    st.caption(f"Tiles with label **{drill.name(classes)}** first, most of those pixels first (the store's per-tile "
               f"confusion of `{variant_label(drill.variant)}`), then the others.")
elif left == LABEL:
    st.caption(f"`{R}` against the label: " + (table.attrs.get("queue_order") or "sorted by the tile's Boundary IoU, "
                                               "lowest first") + f" (split `{split}`).")
else:
    st.caption(f"Change from `{L}` to `{R}` per tile, in points (split `{split}`), from the store's per-tile rows; "
               f"pick a row (or use the selector below) to open the tile.")
    if rule.from_ab:
        st.caption(f"**Metric says**: this run's A/B decision rule ({rule.text()}) applied to the tile: *better* "
                   f"where it would keep `{R}`, *worse* where it would keep `{L}` over it (or the guard refuses "
                   f"`{R}`), *same* in between.")
    else:
        st.caption(f"**Metric says**: the sign of the tile's Boundary IoU change (the run decided nothing between "
                   f"`{L}` and `{R}`).")
shown = pd.DataFrame({
    "tile": table["tile"],
    "domain": table["domain"],
    "Δ Boundary IoU (pts)": table["d_mbiou"],
    f"Boundary IoU {L}": table["mbiou_a"] * 100,
    f"Boundary IoU {R}": table["mbiou_b"] * 100,
    "Δ mIoU (pts)": table["d_miou"],
    f"mIoU {R}": table["miou_b"] * 100,
    "metric says": table["metric_says"],
    "verdict": table["verdict"],
    "reviewer": table["reviewer"],
})
if drill_col is not None:
    shown.insert(1, drill_col, table[drill_col])
if left == LABEL:
    shown = shown.drop(columns=["Δ Boundary IoU (pts)", f"Boundary IoU {L}", "Δ mIoU (pts)", "metric says"])
if shown["domain"].isna().all():
    shown = shown.drop(columns=["domain"])
fmt = {c: st.column_config.NumberColumn(c, format="%+.2f" if c.startswith("Δ") else "%.2f")
       for c in shown.columns if "IoU" in c}


def _pick_row() -> None:
    sel = st.session_state.get("review_table")
    rows = getattr(getattr(sel, "selection", None), "rows", None) if sel is not None else None
    if rows is None and isinstance(sel, dict):
        rows = (sel.get("selection") or {}).get("rows")
    tiles_in_order = st.session_state.get("_review_order_tiles") or []
    if rows and rows[0] < len(tiles_in_order):
        st.session_state["review_tile"] = tiles_in_order[rows[0]]


st.session_state["_review_order_tiles"] = order_tiles
st.dataframe(shown, hide_index=True, width="stretch", column_config=fmt, height=min(36 * (len(shown) + 1) + 4, 320),
             on_select=_pick_row, selection_mode="single-row", key="review_table", placeholder="–")

wanted_tile = (query_list("tile") or [None])[0]
if wanted_tile != st.session_state.get("_review_qtile"):
    st.session_state["_review_qtile"] = wanted_tile
    if wanted_tile in order_tiles:
        st.session_state["review_tile"] = wanted_tile
if st.session_state.get("review_tile") not in order_tiles:
    st.session_state["review_tile"] = order_tiles[0]
by_tile = table.set_index("tile")


def _tile_label(t: str) -> str:
    r = by_tile.loc[t]
    parts = [t]
    if isnum(r["d_mbiou"]):
        parts.append(f"Δ bIoU {r['d_mbiou']:+.2f}")
    elif isnum(r["mbiou_b"]):
        parts.append(f"bIoU {r['mbiou_b'] * 100:.2f}")
    if isinstance(r["verdict"], str):
        parts.append(r["verdict"])
    return " · ".join(parts)


def _step(delta: int) -> None:
    cur = st.session_state.get("review_tile")
    i = order_tiles.index(cur) if cur in order_tiles else 0
    st.session_state["review_tile"] = order_tiles[(i + delta) % len(order_tiles)]


n1, n2, n3 = st.columns([1, 6, 1], vertical_alignment="bottom")
n1.button("Previous", icon=":material/chevron_left:", on_click=_step, args=(-1,), key="review_prev",
          width="stretch", shortcut="P")
tile = n2.selectbox("Tile", order_tiles, format_func=_tile_label, key="review_tile")
n3.button("Next", icon=":material/chevron_right:", on_click=_step, args=(1,), key="review_next", width="stretch",
          shortcut="N")
if st.query_params.get("tile") != tile:
    st.query_params["tile"] = tile
    st.session_state["_review_qtile"] = tile

# ------------------------------------------------------------------------------------------------------------ map
try:
    lay = tile_layers(layers, tile, left, right, run_config=cfg, split=split)
except UserError as exc:
    show_error(exc, f"Tile {tile}")
    lay = None

o1, o2, o4, o3 = st.columns([2, 2, 2, 3])
opacity = o1.slider("Mask opacity", 0.0, 1.0, 0.6, 0.05, key="review_opacity",
                    help="The starting opacity of the mask overlays; each overlay also has its own slider on the map.")
show_label = o2.toggle("Label overlay on", value=False, key="review_show_label",
                       help="The label is a layer of the map either way; this switches it on from the start.")
colours = o4.radio("Mask colours", ["dataset", "high contrast"], horizontal=True, key="review_colours",
                   help="The dataset's own class colours, or a palette of strongly distinct colours that stands out "
                        "on aerial imagery.")
map_palette = list(palette.colors) if colours == "dataset" else high_contrast(len(classes))
from app.widgets.review_errors import ATLAS, error_layer_names

prob_rows = guard(store.artifacts, rid, kind="prob", tile=tile, variant=right, default=pd.DataFrame(),
                  what="Reading the probability files")
prob_path = (str(prob_rows["abs_path"].iloc[-1]) if prob_rows is not None and not prob_rows.empty else "")
e1, e2 = st.columns([4, 1])
error_layers = e1.multiselect(
    "Error layers", error_layer_names(classes, bool(prob_path), left != LABEL), key="review_error_layers",
    placeholder="correct / FP / FN per class, confidence, disagreement, error atlas",
    help=f"Drawn over both sides of the swipe, about `{R}` (against the label; disagreement: `{L}` against "
         f"`{R}`). Confidence needs the tile's probabilities (`eval.save_probabilities=true`).")
atlas_block = int(e2.number_input("Atlas block (px)", 8, 1024, 64, 8, key="review_atlas_block",
                                  disabled=ATLAS not in error_layers))
base_map = ""
georef = False
if lay is not None and isinstance(lay.image, str) and lay.image.lower().endswith((".tif", ".tiff")):
    from app.widgets.review_map import Georef

    try:
        georef = Georef.from_raster(lay.image) is not None
    except Exception:  # noqa: BLE001 - unreadable: the map call reports it
        georef = False
if georef:
    base_map = o3.text_input("Base map tile URL (optional, needs network)", value="", key="review_base_map",
                             placeholder="https://tile.openstreetmap.org/{z}/{x}/{y}.png",
                             help="Shown under the georeferenced tile. Left empty, the map needs no network.")
else:
    o3.caption("Plain image tile: drawn in a pixel CRS (one map unit per pixel). GeoTIFF tiles are placed at their "
               "real coordinates.")


@st.cache_data(show_spinner="Drawing the map…", max_entries=24)
def _map_html(ws: str, run_id: str, n: int, tile_id: str, left_v: str, right_v: str, opacity_v: float,
              label_on: bool, base: str, colours_v: tuple[str, ...], wanted: tuple[str, ...] = (),
              drill_v: object = None, probs_file: str = "", block: int = 64) -> str:
    from app.widgets.review_errors import overlay_layers
    from app.widgets.review_map import _read_array, review_map_html

    lt = tile_layers(review_queries.review_layers(run_id, tile_id), tile_id, left_v, right_v, run_config=cfg,
                     split=split)
    if lt.image is None:
        raise UserError(f"tile {tile_id} of run {run_id}: no image is registered and the run's dataset config does "
                        f"not name it; re-run the stage so that it registers the image artifact")
    if lt.right is None:
        raise UserError(f"tile {tile_id} of run {run_id}: no `{right_v}` mask file is registered")
    left_is_label = left_v == LABEL
    overlays = []
    if wanted or drill_v is not None:
        from mapsage.analysis.uncertainty import load_probs

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


if lay is not None:
    for note in lay.notes:
        st.caption(note)
    try:
        html = _map_html(ws, rid, n_events, tile, left, right, round(float(opacity), 2), bool(show_label),
                         base_map.strip(), tuple(map_palette), tuple(error_layers),
                         drill if drill is not None and drill.variant == right else None, prob_path, atlas_block)
    except (UserError, FileNotFoundError, ValueError, OSError) as exc:
        show_error(exc, f"The map of tile {tile}")
    else:
        title = f"Review map of {tile}: {L} left, {R} right"
        if hasattr(st, "iframe"):
            st.iframe(html, height=MAP_HEIGHT, alt=title)
        else:  # Streamlit before st.iframe: the same iframe element, without a title
            import streamlit.components.v1 as components

            components.html(html, height=MAP_HEIGHT)
        if drill is not None and drill_col is not None:
            px = by_tile.loc[tile, drill_col] if drill_col in by_tile.columns else None
            rank = order_tiles.index(tile) + 1
            st.markdown(f"Highlighted in magenta: label **{drill.name(classes)}** — "
                        + (f"**{int(px):,} px** on this tile (tile {rank} of {int(table[drill_col].notna().sum())} "
                           f"with this confusion)" if isnum(px) else "none on this tile") + ".")
        st.caption(f"Swipe: **{L if left != LABEL else 'label'}** left of the divider, **{R}** right. Layers (top "
                   "right) toggle the image, the label and both masks; the opacity panel (top left) fades each one. "
                   "Ignored pixels are transparent.")

# ------------------------------------------------------------------------------------------------------------ tile
row = by_tile.loc[tile]
left_col, right_col = st.columns([3, 2])
with left_col:
    st.markdown(f"**{tile}**" + (f" · domain `{row['domain']}`" if isinstance(row["domain"], str) else ""))
    m = st.columns(3)
    if left == LABEL:
        m[0].metric(f"mIoU {R}", f"{row['miou_b'] * 100:.2f}" if isnum(row["miou_b"]) else "–")
        m[1].metric(f"Boundary IoU {R}", f"{row['mbiou_b'] * 100:.2f}" if isnum(row["mbiou_b"]) else "–")
    else:
        m[0].metric(f"Boundary IoU {R}", f"{row['mbiou_b'] * 100:.2f}" if isnum(row["mbiou_b"]) else "–",
                    delta=f"{row['d_mbiou']:+.2f} pts vs {L}" if isnum(row["d_mbiou"]) else None)
        m[1].metric(f"mIoU {R}", f"{row['miou_b'] * 100:.2f}" if isnum(row["miou_b"]) else "–",
                    delta=f"{row['d_miou']:+.2f} pts vs {L}" if isnum(row["d_miou"]) else None)
        m[2].metric("The metric says", row["metric_says"] or "–")
    cr = class_rows(tiles_rows, tile, left, right, classes)
    if not cr.empty and cr[["iou_a", "iou_b", "biou_a", "biou_b"]].notna().any().any():
        per_class = pd.DataFrame({"class": cr["class"], "label share (%)": cr["label_share"] * 100,
                                  f"IoU {L}": cr["iou_a"] * 100, f"IoU {R}": cr["iou_b"] * 100,
                                  f"Boundary IoU {L}": cr["biou_a"] * 100, f"Boundary IoU {R}": cr["biou_b"] * 100,
                                  "Δ Boundary IoU (pts)": cr["d_biou"]})
        if left == LABEL:
            per_class = per_class.drop(columns=[f"IoU {L}", f"Boundary IoU {L}", "Δ Boundary IoU (pts)"])
        st.dataframe(per_class, hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(c, format="%+.2f" if c.startswith("Δ")
                                                                      else "%.2f")
                                    for c in per_class.columns if c != "class"}, placeholder="–")
        st.caption("Per class on this tile; empty where the class is in neither the label nor the mask.")
    else:
        st.caption("No per-tile rows in the store for this tile (the run wrote masks without scoring them).")

# ------------------------------------------------------------------------------------------------------------ verdict
with right_col:
    flash = st.session_state.pop("_review_flash", None)
    if flash:
        st.success(flash, icon=":material/check_circle:")
    if left == LABEL:
        st.info("A verdict compares two masks: choose a baseline variant on the left to record one.",
                icon=":material/info:")
    else:
        # the form belongs to one tile: a pick or a comment left on another tile (Save and next, Next, a key, the
        # selector) never carries over
        if st.session_state.get("_review_form_for") != (rid, left, right, tile):
            st.session_state["_review_form_for"] = (rid, left, right, tile)
            for k in ("review_verdict", "review_comment"):
                st.session_state.pop(k, None)
        with st.form("review_verdict_form", clear_on_submit=True, border=True):
            st.markdown(f"**Verdict on {tile}**: is `{R}` better than `{L}` here?")
            choice = st.radio("Verdict", VERDICTS, index=None, horizontal=True, key="review_verdict",
                              format_func=lambda v: f"{VERDICT_ICONS[v]} {v}")
            comment = st.text_area("Comment", key="review_comment", height=80,
                                   placeholder="e.g. CRF closes the road gaps but eats the small buildings")
            if "review_reviewer" not in st.session_state:
                try:
                    st.session_state["review_reviewer"] = getpass.getuser()
                except (KeyError, OSError):
                    st.session_state["review_reviewer"] = ""
            reviewer = st.text_input("Reviewer", key="review_reviewer_input",
                                     value=st.session_state["review_reviewer"])
            b1, b2 = st.columns(2)
            save = b1.form_submit_button("Save verdict", type="primary", icon=":material/save:", width="stretch")
            save_next = b2.form_submit_button("Save and next tile", icon=":material/skip_next:", width="stretch")
            st.caption("Or one key: the verdict, with the comment above, saved and on to the next tile.")
            q = st.columns(3)
            quick = [v for v, col, key in zip(VERDICTS, q, VERDICT_KEYS)
                     if col.form_submit_button(f"{v.capitalize()}, next", icon=VERDICT_ICONS[v], width="stretch",
                                               shortcut=key, key=f"review_quick_{v}")]
        if quick:
            choice, save_next = quick[0], True
        if save or save_next:
            if choice is None:
                st.warning("Choose better, worse or same first.", icon=":material/warning:")
            else:
                try:
                    vid = store.add_verdict(rid, tile, choice, comment or "", reviewer=(reviewer or "").strip()
                                            or None, variant=right, baseline=left)
                except UserError as exc:
                    show_error(exc, "Saving the verdict")
                else:
                    st.session_state["review_reviewer"] = reviewer
                    st.session_state["_review_flash"] = (f"Saved verdict #{vid}: **{choice}** for `{R}` against "
                                                         f"`{L}` on {tile}.")
                    if save_next:
                        i = order_tiles.index(tile)
                        st.session_state["_review_next_tile"] = order_tiles[(i + 1) % len(order_tiles)]
                    st.rerun()
    history = guard(store.verdicts, rid, tile=tile, default=pd.DataFrame(), what="Reading the verdicts")
    if history is not None and not history.empty:
        h = history.sort_values("verdict_id", ascending=False)
        st.markdown("**Verdicts on this tile**")
        st.dataframe(pd.DataFrame({"when": h["time"].dt.strftime("%Y-%m-%d %H:%M"), "verdict": h["verdict"],
                                   "compared": h["variant"].map(variant_label),
                                   "baseline": h["baseline"].map(variant_label), "reviewer": h["reviewer"],
                                   "comment": h["comment"]}), hide_index=True, width="stretch", placeholder="–")

# ------------------------------------------------------------------------------------------------------------ label
st.subheader("Correct the label of this tile")
if lay is not None:
    from app.widgets.corrections import corrections_section

    corrections_section(rid, cfg, tile, lay, left, right, classes, list(palette.colors), ignore_index,
                        reviewer_default=st.session_state.get("review_reviewer", ""))

# ------------------------------------------------------------------------------------------------------------ summary
st.subheader("Verdicts of this run")
summary = guard(store.verdict_summary, rid, default=pd.DataFrame(), what="Reading the verdict summary")
if summary is None or summary.empty:
    st.caption("No verdict yet for this run.")
else:
    n_by_variant = (layers[layers["kind"].isin(["pred", "refined"])].groupby("variant")["tile"].nunique()
                    if not layers.empty else pd.Series(dtype=int))
    st.dataframe(pd.DataFrame({
        "compared": summary["variant"].map(variant_label),
        "tiles reviewed": summary["reviewed"],
        "of tiles": summary["variant"].map(lambda v: int(n_by_variant.get(v, 0))),
        "better": summary["better"], "worse": summary["worse"], "same": summary["same"],
    }), hide_index=True, width="stretch", placeholder="–")
    st.caption("Latest verdict per tile and reviewer.")
agree = agreement(table, verdicts)
if left != LABEL and agree["reviewed"]:
    rv, mt = agree["reviewer"], agree["metric"]
    reading = "the decision rule" if rule.from_ab else "the sign of the Boundary IoU change"
    st.markdown(f"On the {agree['reviewed']} reviewed tiles of `{R}` against `{L}`, the reviewers' latest verdicts "
                f"agree with what the metric says ({reading}) on **{agree['agree']} of {agree['reviewed']}** "
                f"(reviewers: {rv['better']} better / {rv['worse']} worse / {rv['same']} same; the metric: "
                f"{mt['better']} / {mt['worse']} / {mt['same']}).")
    if agree["disagreements"]:
        with st.expander(f"{len(agree['disagreements'])} tile(s) where the eye and the metric disagree"):
            st.dataframe(pd.DataFrame(agree["disagreements"]).rename(
                columns={"d_mbiou": "Δ Boundary IoU (pts)", "metric": "metric says"}), hide_index=True,
                column_config={"Δ Boundary IoU (pts)": st.column_config.NumberColumn(format="%+.2f")},
                placeholder="–")

all_summary = guard(store.verdict_summary, default=pd.DataFrame(), what="Reading the verdict summary")
if all_summary is not None and not all_summary.empty and all_summary["run_id"].nunique() > 1:
    with st.expander("Verdicts of every run"):
        names = dict(zip(runs["run_id"], runs["name"]))
        st.dataframe(all_summary.assign(run=all_summary["run_id"].map(lambda r: names.get(r, r)),
                                        variant=all_summary["variant"].map(variant_label))
                     [["run", "variant", "reviewed", "better", "worse", "same", "run_id"]], hide_index=True,
                     width="stretch", placeholder="–")

# ------------------------------------------------------------------------------------------------------------ atlas
with st.expander(f"Error atlas of this run: misclassified share per tile of `{R}`"):
    from app.widgets.review_errors import atlas_figure, atlas_frame, georef_footprints
    from store import error_queries

    errs = guard(error_queries.tile_errors, rid, split, right, default=pd.DataFrame(),
                 what="Reading the per-tile errors")
    if errs is None or errs.empty:
        st.caption("No per-tile confusion in the store for this mask variant (evaluations written before it was "
                   "recorded have none).")
    else:
        st.plotly_chart(atlas_figure(errs, split, R), width="stretch", key="review_atlas")
        imgs = layers[layers["kind"] == "image"] if not layers.empty else pd.DataFrame()
        feet = georef_footprints(dict(zip(imgs["tile"], imgs["abs_path"]))) if not imgs.empty else {}
        if feet:
            from app.widgets.review_errors import atlas_map_html

            st.iframe(atlas_map_html(errs, feet), height=420, alt="Error atlas map")
            st.caption(f"{len(feet)} georeferenced tile(s) at their real place, coloured by error rate.")
        worst = atlas_frame(errs).sort_values("error_rate", ascending=False).head(10)
        st.dataframe(pd.DataFrame({"tile": worst["tile"], "wrong (%)": worst["error_rate"] * 100,
                                   "wrong px": worst["wrong"], "valid px": worst["valid"]}), hide_index=True,
                     width="stretch", column_config={"wrong (%)": st.column_config.NumberColumn(format="%.2f")},
                     placeholder="–")
