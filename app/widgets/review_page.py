"""The Review page's run and tile-list sections (``app/views/review.py`` lays them out): the run picker bound to
``?run=``, the run's header with its A/B decisions, the pair of masks compared (with the confusion cell to drill into,
``?true=&pred=&variant=``), the tile rows read from the store, the tile table and the tile picker bound to ``?tile=``.

What one section hands to the next travels in :class:`ReviewRun` (the run), :class:`Pair` (the two masks compared)
and :class:`Tiles` (the run's tiles for that pair, in the order the page walks them)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

import pandas as pd
import streamlit as st

import store
from app.widgets import data
from app.widgets.common import guard, isnum, query_list, show_error, status_text
from app.widgets.palette import ClassPalette
from app.widgets.report_button import report_button
from app.widgets.review_errors import Drill, drill_from_params
from app.widgets.review_queue import queue_section
from app.widgets.review_tiles import LABEL, Rule, default_pair, pair_rule, tile_table, variant_label
from mapsage.errors import UserError
from mapsage.workspace import workspace_root
from store import error_queries, review_queries

ORDERS = ["largest Boundary IoU gain first", "largest Boundary IoU loss first"]


@dataclass
class ReviewRun:
    """The run under review: its stored facts and what the page reads from them."""
    rid: str
    run: dict
    meta: pd.Series                 # its row of ``review_queries.review_runs``
    palette: ClassPalette
    classes: list[str]
    ignore_index: int
    split: str
    n_events: int

    @property
    def cfg(self) -> dict:
        return self.run.get("config") or {}


@dataclass
class Pair:
    """The two masks compared: ``left`` (the baseline, or the label) and ``right``; the tile order picked; the
    confusion cell drilled into."""
    variants: list[str]
    left: str
    right: str
    order: str
    drill: Optional[Drill]

    @property
    def L(self) -> str:  # noqa: N802 - the page's short names of the two masks
        return variant_label(self.left)

    @property
    def R(self) -> str:  # noqa: N802
        return variant_label(self.right)


@dataclass
class Tiles:
    """The run's tiles for a pair: the mask artifacts, the per-tile rows, the A/B rule, the table (one row per tile,
    in the page's order), the latest verdicts and the drill-down's pixel column."""
    ws: str
    layers: pd.DataFrame
    rows: pd.DataFrame
    rule: Rule
    table: pd.DataFrame
    verdicts: Optional[pd.DataFrame]
    drill_col: Optional[str]

    @property
    def order(self) -> list[str]:
        return list(self.table["tile"])

    @cached_property
    def by_tile(self) -> pd.DataFrame:
        return self.table.set_index("tile")


def pick_run(runs: pd.DataFrame) -> ReviewRun:
    """The run selector. ``?run=`` sets it when it changes from outside (a link, a bookmark); the selector then keeps
    the query parameter up to date."""
    ids = list(runs["run_id"])
    by_id = runs.set_index("run_id")

    def _run_label(rid: str) -> str:
        r = by_id.loc[rid]
        return f"{r['name']} · {r['kind'] or '?'} · {int(r['n_tiles'])} tiles · {r['status'] or '?'}"

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
    ds_cfg = (run.get("config") or {}).get("dataset") or {}
    palette = data.palette_of(run)
    return ReviewRun(rid=rid, run=run, meta=meta, palette=palette,
                     classes=list(palette.names) or list(run.get("class_names") or []),
                     ignore_index=int(ds_cfg.get("ignore_index", 255)),
                     split=run.get("split") or meta.get("split") or "val", n_events=int(run.get("n_events") or 0))


def run_header(rr: ReviewRun) -> pd.DataFrame:
    """Status line, report button, the chains that did not run, and the run's A/B decisions (returned)."""
    run, rid, split = rr.run, rr.rid, rr.split
    st.markdown(f"{status_text(run.get('status'))} &nbsp; `{rid}` · `{run.get('kind')}` · dataset "
                f"`{run.get('dataset')}` · split `{split}` · {int(rr.meta['n_tiles'])} tiles with masks · "
                f"{int(rr.meta['n_reviewed'])} reviewed")
    report_button([rid], key="review", names=[run.get("name") or rid])
    unavailable = (run.get("info") or {}).get("unavailable_chains") or {}
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
    return ab


def pick_pair(rr: ReviewRun, ab: Optional[pd.DataFrame]) -> Pair:
    """The drill-down notice and the two mask selectors (left: baseline or label; right: compared) with the tile
    order; a run whose masks make no pair stops the page."""
    variants = list(rr.meta["variants"])
    try:
        left0, right0 = default_pair(variants, ab)
    except UserError as exc:
        show_error(exc)
        st.stop()
    pair_key = f"review_pair_{rr.rid}"
    drill = _drill_down(rr, variants, pair_key)
    lefts = variants + [LABEL] if len(variants) > 1 else [LABEL]
    c1, c2, c3 = st.columns([2, 2, 3])
    left = c1.selectbox("Left of the swipe (baseline)", lefts, index=lefts.index(left0), format_func=variant_label,
                        key=f"{pair_key}_left")
    right_opts = [v for v in variants if v != left] or variants
    right = c2.selectbox("Right of the swipe (compared)", right_opts,
                         index=right_opts.index(right0) if right0 in right_opts else 0, format_func=variant_label,
                         key=f"{pair_key}_right")
    order = c3.radio("Order of the tiles", ORDERS, horizontal=True, key="review_order", disabled=left == LABEL)
    return Pair(variants=variants, left=left, right=right, order=order, drill=drill)


def _clear_drill() -> None:
    for k in ("true", "pred", "variant"):
        st.query_params.pop(k, None)


def _drill_down(rr: ReviewRun, variants: list[str], pair_key: str) -> Optional[Drill]:
    """A confusion cell to drill into (``?true=&pred=&variant=``, from Run detail / Compare): the compared mask
    against the label, the cell's pixels lit on the map, its tiles first. Another run drops it."""
    rid = rr.rid
    if st.session_state.get("_review_drill_run") not in (None, rid):
        for k in ("true", "pred", "variant"):
            st.query_params.pop(k, None)
    st.session_state["_review_drill_run"] = rid
    drill, why = drill_from_params(st.query_params.get("true"), st.query_params.get("pred"),
                                   st.query_params.get("variant"), len(rr.classes), variants)
    if why:
        st.warning(f"Drill-down ignored: {why}.", icon=":material/block:")
    drill_key = (rid, drill)
    if drill is not None and st.session_state.get("_review_drill_key") != drill_key:
        st.session_state[f"{pair_key}_left"] = LABEL
        st.session_state[f"{pair_key}_right"] = drill.variant
    st.session_state["_review_drill_key"] = drill_key if drill is not None else None
    if drill is not None:
        d1, d2 = st.columns([5, 1], vertical_alignment="center")
        d1.info(f"**Drill-down**: label **{drill.name(rr.classes)}** in `{variant_label(drill.variant)}` — its "
                f"pixels are lit in magenta on the map, and the tiles with most of them come first.",
                icon=":material/filter_center_focus:")
        d2.button("Clear drill-down", on_click=_clear_drill, key="review_drill_clear", icon=":material/close:")
    return drill


@st.cache_data(show_spinner=False, max_entries=32)
def _tiles(ws: str, run_id: str, n: int, split_name: str, variant_pair: tuple[str, ...]) -> pd.DataFrame:
    return store.tiles(run_id, split=split_name, variant=list(variant_pair), latest=True)


@st.cache_data(show_spinner=False, max_entries=32)
def _layers(ws: str, run_id: str, n: int) -> pd.DataFrame:
    return review_queries.review_layers(run_id)


def read_tiles(rr: ReviewRun, ab: Optional[pd.DataFrame], pair: Pair) -> Tiles:
    """The run's tiles for the pair, from the store: mask artifacts, per-tile rows, the A/B rule, the latest
    verdicts; sorted by the picked order, or by the drilled cell's pixels."""
    rid, split, left, right, drill = rr.rid, rr.split, pair.left, pair.right, pair.drill
    ws = str(workspace_root())
    layers = guard(_layers, ws, rid, rr.n_events, default=pd.DataFrame(), what="Reading the mask artifacts")
    variant_pair = tuple(v for v in (left, right) if v != LABEL)
    rows = guard(_tiles, ws, rid, rr.n_events, split, variant_pair, default=pd.DataFrame(),
                 what="Reading per-tile rows")
    mask_tiles = sorted(set(layers.loc[layers["variant"] == right, "tile"])) if not layers.empty else []
    rule = pair_rule(ab, left, right)
    table = tile_table(rows, left, right, mask_tiles, rule=rule)
    if left != LABEL and pair.order.startswith("largest Boundary IoU loss"):
        table = table.sort_values(["d_mbiou", "tile"], ascending=[True, True], na_position="last",
                                  kind="stable").reset_index(drop=True)
    baseline_v = None if left == LABEL else left
    verdicts = guard(review_queries.latest_verdicts, rid, right, baseline_v, default=pd.DataFrame(),
                     what="Reading the verdicts")
    table = table.merge(verdicts[["tile", "verdict", "reviewer"]] if verdicts is not None and not verdicts.empty
                        else pd.DataFrame(columns=["tile", "verdict", "reviewer"]), on="tile", how="left")
    drill_col = None
    if drill is not None:
        cell_tiles = guard(error_queries.confusion_tiles, rid, split, drill.variant, drill.true_id, drill.pred_id,
                           default=pd.DataFrame(), what="Reading the per-tile confusion")
        drill_col = f"{drill.name(rr.classes)} (px)"
        px = dict(zip(cell_tiles["tile"], cell_tiles["pixels"])) if cell_tiles is not None else {}
        table[drill_col] = table["tile"].map(px)
        table = table.sort_values(drill_col, ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    return Tiles(ws=ws, layers=layers, rows=rows, rule=rule, table=table, verdicts=verdicts, drill_col=drill_col)


def queue(rr: ReviewRun, pair: Pair, tiles: Tiles) -> Tiles:
    """The review queue (``app.widgets.review_queue``), which may reorder the tiles; no tile with a compared mask
    stops the page."""
    table = queue_section(rr.rid, rr.run, tiles.table, ws=tiles.ws, n_events=rr.n_events,
                          drill_active=pair.drill is not None)
    tiles = dataclasses.replace(tiles, table=table)
    if not tiles.order:
        st.info(f"No tile has a `{pair.R}` mask.")
        st.stop()
    return tiles


def _tiles_captions(rr: ReviewRun, pair: Pair, tiles: Tiles) -> None:
    table, left, L, R = tiles.table, pair.left, pair.L, pair.R
    if table.attrs.get("queue_order") and left != LABEL:
        st.caption(f"Tiles {table.attrs['queue_order']}.")
    if tiles.drill_col is not None:
        st.caption(f"Tiles with label **{pair.drill.name(rr.classes)}** first, most of those pixels first (the "
                   f"store's per-tile confusion of `{variant_label(pair.drill.variant)}`), then the others.")
    elif left == LABEL:
        st.caption(f"`{R}` against the label: " + (table.attrs.get("queue_order") or "sorted by the tile's Boundary "
                                                   "IoU, lowest first") + f" (split `{rr.split}`).")
    else:
        st.caption(f"Change from `{L}` to `{R}` per tile, in points (split `{rr.split}`), from the store's per-tile "
                   f"rows; pick a row (or use the selector below) to open the tile.")
        if tiles.rule.from_ab:
            st.caption(f"**Metric says**: this run's A/B decision rule ({tiles.rule.text()}) applied to the tile: "
                       f"*better* where it would keep `{R}`, *worse* where it would keep `{L}` over it (or the guard "
                       f"refuses `{R}`), *same* in between.")
        else:
            st.caption(f"**Metric says**: the sign of the tile's Boundary IoU change (the run decided nothing "
                       f"between `{L}` and `{R}`).")


def _pick_row() -> None:
    sel = st.session_state.get("review_table")
    rows = getattr(getattr(sel, "selection", None), "rows", None) if sel is not None else None
    if rows is None and isinstance(sel, dict):
        rows = (sel.get("selection") or {}).get("rows")
    tiles_in_order = st.session_state.get("_review_order_tiles") or []
    if rows and rows[0] < len(tiles_in_order):
        st.session_state["review_tile"] = tiles_in_order[rows[0]]


def tiles_section(rr: ReviewRun, pair: Pair, tiles: Tiles) -> None:
    """The "Tiles" section: how the tiles are ordered, and their table (pick a row to open the tile)."""
    st.subheader("Tiles")
    _tiles_captions(rr, pair, tiles)
    table, L, R = tiles.table, pair.L, pair.R
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
    if tiles.drill_col is not None:
        shown.insert(1, tiles.drill_col, table[tiles.drill_col])
    if pair.left == LABEL:
        shown = shown.drop(columns=["Δ Boundary IoU (pts)", f"Boundary IoU {L}", "Δ mIoU (pts)", "metric says"])
    if shown["domain"].isna().all():
        shown = shown.drop(columns=["domain"])
    fmt = {c: st.column_config.NumberColumn(c, format="%+.2f" if c.startswith("Δ") else "%.2f")
           for c in shown.columns if "IoU" in c}
    st.session_state["_review_order_tiles"] = tiles.order
    st.dataframe(shown, hide_index=True, width="stretch", column_config=fmt,
                 height=min(36 * (len(shown) + 1) + 4, 320), on_select=_pick_row, selection_mode="single-row",
                 key="review_table", placeholder="–")


def pick_tile(tiles: Tiles) -> str:
    """Previous / the tile selector / Next (keys P and N); ``?tile=`` sets the selector when it changes from
    outside, and the selector keeps it up to date."""
    order_tiles, by_tile = tiles.order, tiles.by_tile
    wanted_tile = (query_list("tile") or [None])[0]
    if wanted_tile != st.session_state.get("_review_qtile"):
        st.session_state["_review_qtile"] = wanted_tile
        if wanted_tile in order_tiles:
            st.session_state["review_tile"] = wanted_tile
    if st.session_state.get("review_tile") not in order_tiles:
        st.session_state["review_tile"] = order_tiles[0]

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
    n3.button("Next", icon=":material/chevron_right:", on_click=_step, args=(1,), key="review_next",
              width="stretch", shortcut="N")
    if st.query_params.get("tile") != tile:
        st.query_params["tile"] = tile
        st.session_state["_review_qtile"] = tile
    return tile
