"""Review: where refinement (or any other variant) helped or hurt, on the map, tile by tile, with a verdict.

For a run with prediction masks (the refinement A/B of stage 4; an evaluation with ``eval.save_predictions``) and
one of its tiles: an offline folium map with the image, the label, the two compared masks as overlays (toggle and
fade), a swipe between them and the dataset's legend; the tile list sorted by Boundary IoU change (from the store's
per-tile rows); a verdict per tile (better / worse / same, with a comment) saved in the store and summarised per
run. ``?run=<run id>&tile=<tile id>`` addresses a view.

The page lays the sections out; each one is a function of :mod:`app.widgets.review_page` (run, pair, tile list),
:mod:`app.widgets.review_page_map` (the map) or :mod:`app.widgets.review_page_verdicts` (verdicts, label, atlas)."""
from __future__ import annotations

import streamlit as st

from app.widgets import review_page as page
from app.widgets import review_page_map as tile_map
from app.widgets import review_page_verdicts as verdicts
from app.widgets.common import PAGE_FILES, guard
from app.widgets.nav import ensure_routed
from store import review_queries

ensure_routed()
st.title(":material/layers: Review")
st.caption("Two masks of a run on the map, tile by tile, each named for what it is: `raw` (the model's own "
           "prediction), a refinement chain (`refine=crf`), a TTA variant (`tta=flip`) or the `label`. Toggle and "
           "fade the overlays, drag the swipe, and record whether the compared mask is better, worse or the same. "
           "Keys: **P** / **N** previous / next tile; **B** / **W** / **S** better / worse / same and on to the "
           "next tile.")

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
rr = page.pick_run(runs)
ab = page.run_header(rr)
# a predict run's georeferenced rasters: the raster at its real place, its polygons, a local base map
if rr.run.get("kind") == "predict":
    from app.widgets.review_predicted import predicted_rasters_section

    if predicted_rasters_section(rr.run, height=tile_map.MAP_HEIGHT):
        st.stop()

# ------------------------------------------------------------------------------------------------------------ pair
pair = page.pick_pair(rr, ab)                       # stops where the run's masks make no pair
tiles = page.queue(rr, pair, page.read_tiles(rr, ab, pair))    # stops where no tile has the compared mask

# ------------------------------------------------------------------------------------------------------------ tiles
page.tiles_section(rr, pair, tiles)
tile = page.pick_tile(tiles)

# ------------------------------------------------------------------------------------------------------------ map
opts = tile_map.map_controls(rr, pair, tiles, tile)
tile_map.map_section(rr, pair, tiles, tile, opts)

# ------------------------------------------------------------------------------------------------------------ tile
left_col, right_col = st.columns([3, 2])
with left_col:
    verdicts.tile_scores(rr, pair, tiles, tile)
with right_col:                                     # saving a verdict reruns the page
    verdicts.verdict_form(rr, pair, tiles, tile)
    verdicts.verdict_history(rr.rid, tile)

# ------------------------------------------------------------------------------------------------------------ runs
verdicts.label_section(rr, pair, tile, opts.lay)
verdicts.run_verdicts(rr, pair, tiles, runs)
verdicts.error_atlas(rr, pair, tiles)
