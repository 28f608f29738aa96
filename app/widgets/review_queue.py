"""The Review page's review queue: the run's tiles ranked so that the next one opened is the one the model is least
sure about (``runners.review_queue``: mean entropy, top-2 margin, low-margin share from the run's saved
probabilities; disagreement between its mask variants; the variants' mutual information), tiles with a verdict or a
correction last.

:func:`queue_section` draws it: the score, the queue as a table (pick a row to open the tile), *Review the next
tile* (the first unreviewed one), a toggle that walks the tile list (Previous / Next, the keys) in queue order, and
the queue as CSV. ``?queue=<score>`` opens it already walking in that order.
"""
from __future__ import annotations

from typing import Optional

import pandas as pd
import streamlit as st

from app.widgets.common import guard, show_error
from mapsage.analysis.uncertainty import DESCENDING, SCORE_LABELS, SCORES
from mapsage.errors import UserError
from runners.review_queue import QueueError, score_tiles
from runners.review_queue import order as order_queue

WALK_KEY = "review_queue_walk"
BY_KEY = "review_queue_by"


@st.cache_data(show_spinner="Scoring the tiles' uncertainty…", max_entries=16)
def _scores(ws: str, run_id: str, n_events: int, variant: Optional[str], ignore_index: int
            ) -> tuple[pd.DataFrame, dict]:

    return score_tiles(run_id, variant=variant, ignore_index=ignore_index)


def _pick_row(order: list[str], in_list: set[str]) -> None:
    sel = st.session_state.get("review_queue_table")
    rows = getattr(getattr(sel, "selection", None), "rows", None) if sel is not None else None
    if rows is None and isinstance(sel, dict):
        rows = (sel.get("selection") or {}).get("rows")
    if rows and rows[0] < len(order) and order[rows[0]] in in_list:
        st.session_state["review_tile"] = order[rows[0]]


def _open(tile: str) -> None:
    st.session_state["review_tile"] = tile


def queue_section(run_id: str, run: dict, table: pd.DataFrame, *, ws: str, n_events: int,
                  drill_active: bool = False) -> pd.DataFrame:
    """Draw the review queue of a run; returns the page's tile table, reordered by the queue when the reviewer
    walks the tiles in queue order (never while a confusion drill-down orders them)."""

    ds = ((run or {}).get("config") or {}).get("dataset") or {}
    ignore = int(ds.get("ignore_index", 255))
    wanted_by = st.query_params.get("queue")
    if wanted_by in SCORES and st.session_state.get("_review_queue_q") != wanted_by:
        st.session_state["_review_queue_q"] = wanted_by
        st.session_state[BY_KEY] = wanted_by
        st.session_state[WALK_KEY] = True
    walking = bool(st.session_state.get(WALK_KEY)) and not drill_active
    with st.expander("Review queue: the tiles the model is least sure about, unreviewed first",
                     expanded=walking or wanted_by in SCORES, icon=":material/format_list_numbered:"):
        try:
            scores, info = _scores(ws, run_id, int(n_events), None, ignore)
        except QueueError as exc:
            st.info(str(exc), icon=":material/info:")
            return table
        except (UserError, OSError, ValueError) as exc:     # an unreadable file must not take the page down
            show_error(exc, "Scoring the tiles")
            return table
        available = info["available"]
        if not available:
            st.info("No tile of this run has probabilities or two mask variants to compare: evaluate its checkpoint "
                    "with `eval.save_probabilities=true` to rank tiles by the model's uncertainty.",
                    icon=":material/info:")
            return table
        if st.session_state.get(BY_KEY) not in available:
            st.session_state[BY_KEY] = "entropy" if "entropy" in available else available[0]
        c1, c2, c3 = st.columns([3, 2, 2], vertical_alignment="bottom")
        by = c1.selectbox("Rank by", available, key=BY_KEY, format_func=lambda s: SCORE_LABELS[s],
                          help="Entropy, margin and low-margin share come from the tile's saved class probabilities; "
                               "disagreement compares the run's mask variants pixel by pixel; BALD is the mutual "
                               "information of the variants' probabilities.")
        hide = c2.toggle("Hide reviewed tiles", value=False, key="review_queue_hide")
        c3.toggle("Walk the tiles in this order", key=WALK_KEY, disabled=drill_active,
                  help="Previous / Next (keys P / N) and the tile list follow the queue.")
        walking = bool(st.session_state.get(WALK_KEY)) and not drill_active
        q = guard(order_queue, scores, run_id, by, run, not hide, default=None, what="Ordering the queue")
        if q is None:
            return table
        in_list = set(table["tile"])
        pending = [t for t, r in zip(q["tile"], q["reviewed"]) if not r and t in in_list]
        src = (f"the probabilities of `{info['variant']}`" if by != "disagreement"
               else f"the masks of {', '.join(f'`{v}`' for v in info['variants'])}")
        direction = "highest first" if DESCENDING[by] else "lowest first"
        n_rev = int(q["reviewed"].sum())
        st.caption(f"{len(q)} tile(s) ranked by **{SCORE_LABELS[by]}** ({direction}; from {src}); tiles with a "
                   f"verdict on this run or a correction in a label version go last ({n_rev} so far). Pick a row "
                   f"to open the tile.")
        b1, b2 = st.columns([2, 5], vertical_alignment="center")
        b1.button("Review the next tile", icon=":material/skip_next:", key="review_queue_next",
                  on_click=_open, args=(pending[0],) if pending else ("",), disabled=not pending, width="stretch")
        if pending:
            row = q[q["tile"] == pending[0]].iloc[0]
            b2.markdown(f"Next: **{pending[0]}** — {SCORE_LABELS[by]} **{row[by]:.4f}**")
        else:
            b2.markdown("Every tile of this queue is reviewed.")
        cols = ["rank", "tile", *available, "reviewed", "verdict", "corrected_in"]
        shown = q[cols].rename(columns={**{s: SCORE_LABELS[s] for s in available},
                                        "corrected_in": "corrected in"})
        order = list(q["tile"])
        st.dataframe(shown, hide_index=True, width="stretch", height=min(36 * (len(shown) + 1) + 4, 320),
                     column_config={SCORE_LABELS[s]: st.column_config.NumberColumn(format="%.4f") for s in available},
                     on_select=lambda: _pick_row(order, in_list), selection_mode="single-row",
                     key="review_queue_table", placeholder="–")
        name = str((run or {}).get("name") or run_id).replace("/", "_")
        st.download_button("Download the queue (CSV)", q.to_csv(index=False).encode(), icon=":material/download:",
                           file_name=f"{name}_review_queue_{by}.csv", mime="text/csv", key="review_queue_csv")
        st.caption(f"Also from the command line: `mapsage queue {run_id} --by {by} --csv queue.csv`.")
    if not walking:
        return table
    rank = {t: i for i, t in enumerate(q["tile"])}
    out = table.assign(_q=table["tile"].map(rank)).sort_values(["_q", "tile"], na_position="last", kind="stable")
    out = out.drop(columns="_q").reset_index(drop=True)
    out.attrs["queue_order"] = f"in review-queue order ({SCORE_LABELS[by]}; Previous / Next follow it)"
    return out
