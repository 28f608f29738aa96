"""Compare's confusion drill-down: where a confusion rose or dropped between two evaluations, tile by tile.

For the reference evaluation A and a compared evaluation B on the tiles both scored, :func:`compare_drilldown`
draws B's confusion matrix minus A's (off-diagonal cells only: pixels of label ``c`` predicted ``c'``, red where B
has more of them, blue where it has fewer) as a clickable chart, and for the picked cell the tiles where it rose
most (B's pixels of that cell lit on the thumbnail; *Open B in Review*) and where it dropped most (A's pixels lit:
what B fixed; *Open A in Review*), from ``store.error_queries.confusion_change`` (the per-tile confusion each
evaluation's metrics engine wrote), so the per-tile changes add up to the matrix cell.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import streamlit as st

from app.widgets.common import guard, isnum
from app.widgets.drilldown import REVIEW_PAGE, _layers, _on_click, _thumb, review_params
from mapsage import figures
from mapsage.errors import UserError

N_CARDS = 4


# ---------------------------------------------------------------------------------------------- pure helpers
def change_matrix(change: pd.DataFrame, num_classes: int) -> np.ndarray:
    """B minus A per off-diagonal cell (the diagonal stays 0) from :func:`store.error_queries.confusion_change`."""
    m = np.zeros((num_classes, num_classes), np.int64)
    if change is not None and not change.empty:
        g = change.groupby(["true_id", "pred_id"])["delta"].sum()
        for (t, p), d in g.items():
            if 0 <= t < num_classes and 0 <= p < num_classes:
                m[int(t), int(p)] = int(d)
    return m


def largest_change_cell(m: np.ndarray) -> Optional[tuple[int, int]]:
    """The off-diagonal cell with the largest absolute change (ties: the first in row-major order)."""
    a = np.abs(np.asarray(m, np.int64)).copy()
    if a.size == 0:
        return None
    np.fill_diagonal(a, 0)
    if a.max() <= 0:
        return None
    t, p = np.unravel_index(int(a.argmax()), a.shape)
    return int(t), int(p)


def change_figure(m: np.ndarray, names: Sequence[str], a_label: str, b_label: str, split: str,
                  picked: Optional[tuple[int, int]] = None) -> figures.Figure:
    """The change matrix as a diverging heatmap (diagonal blank) plus one transparent marker per cell that a click
    selects (customdata ``[label id, predicted id, change]``), the picked cell framed
    (:func:`mapsage.figures.confusion_change`)."""
    return figures.confusion_change(m, names, split, picked)


# ---------------------------------------------------------------------------------------------- cached reads
@st.cache_data(show_spinner=False, max_entries=32)
def _change(ws: str, key: tuple, run_a: str, variant_a: str, run_b: str, variant_b: str, split: str,
            seq_a: Optional[int], seq_b: Optional[int]) -> tuple[pd.DataFrame, int]:
    from store import error_queries as q

    return (q.confusion_change(run_a, variant_a, run_b, variant_b, split, seq_a, seq_b),
            q.shared_tile_count(run_a, variant_a, run_b, variant_b, split, seq_a, seq_b))


# ---------------------------------------------------------------------------------------------- the section
def _cards(tiles: pd.DataFrame, side: str, run_id: str, run: dict, variant: str, split: str, t: int, p: int,
           ws: str, key: str, names: Sequence[str]) -> None:
    """Up to :data:`N_CARDS` tile cards: thumbnail with ``run_id``'s cell pixels lit, the change, and a button that
    opens ``run_id`` at that tile in Review."""
    n_events = int(run.get("n_events") or 0)
    layers = guard(_layers, ws, run_id, n_events, default=pd.DataFrame(), what="Reading the mask artifacts")
    has_masks = layers is not None and not layers.empty and (layers["variant"] == variant).any()
    cols = st.columns(2)
    for i, r in enumerate(tiles.head(N_CARDS).itertuples(index=False)):
        with cols[i % 2]:
            try:
                uri, _ = _thumb(ws, run_id, n_events, str(r.tile), variant, t, p, split, run.get("config") or {})
            except (UserError, OSError, ValueError) as exc:
                uri = None
                st.caption(f"no thumbnail: {exc}")
            if uri:
                st.image(uri, width="stretch")
            st.caption(f"**{r.tile}** · A {int(r.pixels_a):,} → B {int(r.pixels_b):,} px (**{int(r.delta):+,}**)")
            if st.button(f"Open {side} in Review", key=f"{key}_{side}_{i}", icon=":material/layers:",
                         disabled=not has_masks, width="stretch",
                         help=None if has_masks else f"this run saved no `{variant}` prediction masks"):
                st.switch_page(REVIEW_PAGE, query_params=review_params(run_id, str(r.tile), t, p, variant))


def compare_drilldown(evals: Mapping[str, pd.Series], eval_of: Mapping[str, tuple[str, Any]],
                      runs: Mapping[str, Optional[dict]], reference: str, split: str, names: Sequence[str],
                      ws: str, key: str = "cmpdd") -> None:
    """The confusion change between the reference evaluation and one compared evaluation, and its tiles."""
    others = [lab for lab in evals if lab != reference]
    if not others:
        return
    b_lab = st.selectbox("Compared with the reference", others, key=f"{key}_b") if len(others) > 1 else others[0]
    ev_a, ev_b = evals[reference], evals[b_lab]
    (run_a, seq_a), (run_b, seq_b) = eval_of[reference], eval_of[b_lab]
    var_a, var_b = str(ev_a["variant"]), str(ev_b["variant"])
    ra, rb = runs.get(run_a) or {}, runs.get(run_b) or {}
    names = [str(n) for n in names]
    C = len(names)
    cache_key = (int(ra.get("n_events") or 0), int(rb.get("n_events") or 0))
    change, shared = guard(_change, ws, cache_key, run_a, var_a, run_b, var_b, split,
                           int(seq_a) if isnum(seq_a) else None, int(seq_b) if isnum(seq_b) else None,
                           default=(pd.DataFrame(), 0), what="Reading the per-tile confusion")
    st.caption(f"**A** = {reference} (`{var_a}`), **B** = {b_lab} (`{var_b}`), {shared} tile(s) scored by both on "
               f"`{split}`.")
    if shared == 0:
        st.info("These two evaluations share no scored tile, or one of them has no per-tile rows: nothing to drill "
                "into.", icon=":material/info:")
        return
    if change is None or change.empty:
        from store import error_queries

        has = [guard(error_queries.has_tile_confusion, r, split, v, s, default=False)
               for r, v, s in ((run_a, var_a, seq_a), (run_b, var_b, seq_b))]
        if not all(has):
            st.info("One of these evaluations has no per-tile confusion in the store (it was written before the "
                    "workbench recorded it): evaluate its checkpoint again to drill down.", icon=":material/info:")
        else:
            st.info("Neither evaluation misclassifies a pixel on the shared tiles.", icon=":material/check_circle:")
        return
    m = change_matrix(change, C)
    t_key, p_key, chart_key = f"{key}_true", f"{key}_pred", f"{key}_chart"
    default = largest_change_cell(m) or (0, 1 if C > 1 else 0)
    if st.session_state.get(t_key) not in names:
        st.session_state[t_key] = names[default[0]]
    if st.session_state.get(p_key) not in names:
        st.session_state[p_key] = names[default[1]]
    picked = (names.index(st.session_state[t_key]), names.index(st.session_state[p_key]))
    st.plotly_chart(change_figure(m, names, reference, b_lab, split, picked), width="stretch", key=chart_key,
                    on_select=lambda: _on_click(chart_key, t_key, p_key, names), selection_mode="points")
    c1, c2 = st.columns(2)
    c1.selectbox("Label class", names, key=t_key)
    c2.selectbox("Predicted as", names, key=p_key)
    t, p = names.index(st.session_state[t_key]), names.index(st.session_state[p_key])
    if t == p:
        st.info("The diagonal holds correct pixels; pick an off-diagonal cell.", icon=":material/info:")
        return
    cell = change[(change["true_id"] == t) & (change["pred_id"] == p)].sort_values(
        ["delta", "tile"], ascending=[False, True], kind="stable")
    total_a, total_b = int(cell["pixels_a"].sum()), int(cell["pixels_b"].sum())
    st.markdown(f"#### Label **{names[t]}** predicted as **{names[p]}**: A {total_a:,} px → B {total_b:,} px "
                f"(**{total_b - total_a:+,}**) on the shared tiles")
    rose = cell[cell["delta"] > 0]
    dropped = cell[cell["delta"] < 0].sort_values(["delta", "tile"], ascending=[True, True], kind="stable")
    left, right = st.columns(2)
    with left:
        st.markdown(f"**Rose most in B** — {len(rose)} tile(s); B's pixels of this confusion in magenta")
        if rose.empty:
            st.caption("No tile has more of this confusion in B.")
        else:
            _cards(rose, "B", run_b, rb, var_b, split, t, p, ws, key, names)
    with right:
        st.markdown(f"**Dropped most in B** — {len(dropped)} tile(s); A's pixels of this confusion in magenta "
                    f"(what B fixed)")
        if dropped.empty:
            st.caption("No tile has less of this confusion in B.")
        else:
            _cards(dropped, "A", run_a, ra, var_a, split, t, p, ws, key, names)
    with st.expander(f"All {len(cell)} tile(s) where this confusion changed or occurs"):
        shown = pd.DataFrame({"tile": cell["tile"], "domain": cell["domain"], "A (px)": cell["pixels_a"],
                              "B (px)": cell["pixels_b"], "Δ B − A (px)": cell["delta"]})
        if shown["domain"].isna().all():
            shown = shown.drop(columns=["domain"])
        st.dataframe(shown, hide_index=True, width="stretch", placeholder="–")
        st.download_button("Download CSV", shown.to_csv(index=False).encode(), icon=":material/download:",
                           file_name=f"confusion_change_{names[t]}_as_{names[p]}_{split}.csv".replace("/", "_"),
                           mime="text/csv", key=f"{key}_csv")
