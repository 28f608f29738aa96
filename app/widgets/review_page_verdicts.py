"""The Review page's verdict sections (``app/views/review.py`` lays them out): the open tile's scores
(:func:`tile_scores`), the verdict form with its one-key shortcuts (:func:`verdict_form`) and the tile's verdicts
(:func:`verdict_history`), the label correction (:func:`label_section`), the run's verdicts against what the metric
says (:func:`run_verdicts`) and the run's error atlas (:func:`error_atlas`)."""
from __future__ import annotations

import getpass
from typing import Optional

import pandas as pd
import streamlit as st

import store
from app.widgets.common import guard, isnum, show_error
from app.widgets.corrections import corrections_section
from app.widgets.review_errors import atlas_figure, atlas_frame, atlas_map_html, georef_footprints
from app.widgets.review_page import Pair, ReviewRun, Tiles
from app.widgets.review_tiles import LABEL, TileLayers, agreement, class_rows, variant_label
from mapsage.errors import UserError
from store import error_queries

VERDICTS = list(store.VERDICTS)      # the store's list (store/review.py)
VERDICT_ICONS = {"better": ":material/thumb_up:", "worse": ":material/thumb_down:", "same": ":material/drag_handle:"}
VERDICT_KEYS = ("B", "W", "S")   # keyboard shortcuts of the one-key verdicts, in the order of VERDICTS


def _score(v) -> str:
    return f"{v * 100:.2f}" if isnum(v) else "–"


def tile_scores(rr: ReviewRun, pair: Pair, tiles: Tiles, tile: str) -> None:
    """The tile's name and domain, its scores (against the baseline where there is one) and its per-class rows."""
    row, L, R = tiles.by_tile.loc[tile], pair.L, pair.R
    st.markdown(f"**{tile}**" + (f" · domain `{row['domain']}`" if isinstance(row["domain"], str) else ""))
    m = st.columns(3)
    if pair.left == LABEL:
        m[0].metric(f"mIoU {R}", _score(row["miou_b"]))
        m[1].metric(f"Boundary IoU {R}", _score(row["mbiou_b"]))
    else:
        m[0].metric(f"Boundary IoU {R}", _score(row["mbiou_b"]),
                    delta=f"{row['d_mbiou']:+.2f} pts vs {L}" if isnum(row["d_mbiou"]) else None)
        m[1].metric(f"mIoU {R}", _score(row["miou_b"]),
                    delta=f"{row['d_miou']:+.2f} pts vs {L}" if isnum(row["d_miou"]) else None)
        m[2].metric("The metric says", row["metric_says"] or "–")
    cr = class_rows(tiles.rows, tile, pair.left, pair.right, rr.classes)
    if cr.empty or not cr[["iou_a", "iou_b", "biou_a", "biou_b"]].notna().any().any():
        st.caption("No per-tile rows in the store for this tile (the run wrote masks without scoring them).")
        return
    per_class = pd.DataFrame({"class": cr["class"], "label share (%)": cr["label_share"] * 100,
                              f"IoU {L}": cr["iou_a"] * 100, f"IoU {R}": cr["iou_b"] * 100,
                              f"Boundary IoU {L}": cr["biou_a"] * 100, f"Boundary IoU {R}": cr["biou_b"] * 100,
                              "Δ Boundary IoU (pts)": cr["d_biou"]})
    if pair.left == LABEL:
        per_class = per_class.drop(columns=[f"IoU {L}", f"Boundary IoU {L}", "Δ Boundary IoU (pts)"])
    st.dataframe(per_class, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(c, format="%+.2f" if c.startswith("Δ") else "%.2f")
                                for c in per_class.columns if c != "class"}, placeholder="–")
    st.caption("Per class on this tile; empty where the class is in neither the label nor the mask.")


def verdict_form(rr: ReviewRun, pair: Pair, tiles: Tiles, tile: str) -> None:
    """Better / worse / same for the compared mask on this tile, with a comment and the reviewer; *Save and next*
    and the one-key verdicts (B / W / S) move on to the next tile. Saving reruns the page."""
    flash = st.session_state.pop("_review_flash", None)
    if flash:
        st.success(flash, icon=":material/check_circle:")
    if pair.left == LABEL:
        st.info("A verdict compares two masks: choose a baseline variant on the left to record one.",
                icon=":material/info:")
        return
    # the form belongs to one tile: a pick or a comment left on another tile (Save and next, Next, a key, the
    # selector) never carries over
    if st.session_state.get("_review_form_for") != (rr.rid, pair.left, pair.right, tile):
        st.session_state["_review_form_for"] = (rr.rid, pair.left, pair.right, tile)
        for k in ("review_verdict", "review_comment"):
            st.session_state.pop(k, None)
    with st.form("review_verdict_form", clear_on_submit=True, border=True):
        st.markdown(f"**Verdict on {tile}**: is `{pair.R}` better than `{pair.L}` here?")
        choice = st.radio("Verdict", VERDICTS, index=None, horizontal=True, key="review_verdict",
                          format_func=lambda v: f"{VERDICT_ICONS[v]} {v}")
        comment = st.text_area("Comment", key="review_comment", height=80,
                               placeholder="e.g. CRF closes the road gaps but eats the small buildings")
        if "review_reviewer" not in st.session_state:
            try:
                st.session_state["review_reviewer"] = getpass.getuser()
            except (KeyError, OSError):
                st.session_state["review_reviewer"] = ""
        reviewer = st.text_input("Reviewer", key="review_reviewer_input", value=st.session_state["review_reviewer"])
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
        _save(rr, pair, tiles, tile, choice, comment, reviewer, save_next)


def _save(rr: ReviewRun, pair: Pair, tiles: Tiles, tile: str, choice: Optional[str], comment: str,
          reviewer: str, then_next: bool) -> None:
    if choice is None:
        st.warning("Choose better, worse or same first.", icon=":material/warning:")
        return
    try:
        vid = store.add_verdict(rr.rid, tile, choice, comment or "", reviewer=(reviewer or "").strip() or None,
                                variant=pair.right, baseline=pair.left)
    except UserError as exc:
        show_error(exc, "Saving the verdict")
        return
    st.session_state["review_reviewer"] = reviewer
    st.session_state["_review_flash"] = (f"Saved verdict #{vid}: **{choice}** for `{pair.R}` against `{pair.L}` "
                                         f"on {tile}.")
    if then_next:
        order_tiles = tiles.order
        i = order_tiles.index(tile)
        st.session_state["_review_next_tile"] = order_tiles[(i + 1) % len(order_tiles)]
    st.rerun()


def verdict_history(rid: str, tile: str) -> None:
    """Every verdict recorded on the tile, newest first."""
    history = guard(store.verdicts, rid, tile=tile, default=pd.DataFrame(), what="Reading the verdicts")
    if history is not None and not history.empty:
        h = history.sort_values("verdict_id", ascending=False)
        st.markdown("**Verdicts on this tile**")
        st.dataframe(pd.DataFrame({"when": h["time"].dt.strftime("%Y-%m-%d %H:%M"), "verdict": h["verdict"],
                                   "compared": h["variant"].map(variant_label),
                                   "baseline": h["baseline"].map(variant_label), "reviewer": h["reviewer"],
                                   "comment": h["comment"]}), hide_index=True, width="stretch", placeholder="–")


def label_section(rr: ReviewRun, pair: Pair, tile: str, lay: Optional[TileLayers]) -> None:
    """The section "Correct the label of this tile" (:func:`app.widgets.corrections.corrections_section`)."""
    st.subheader("Correct the label of this tile")
    if lay is not None:
        corrections_section(rr.rid, rr.cfg, tile, lay, pair.left, pair.right, rr.classes, list(rr.palette.colors),
                            rr.ignore_index, reviewer_default=st.session_state.get("review_reviewer", ""))


def run_verdicts(rr: ReviewRun, pair: Pair, tiles: Tiles, runs: pd.DataFrame) -> None:
    """The section "Verdicts of this run": per compared mask, how far they agree with the metric, and every run's
    verdicts."""
    st.subheader("Verdicts of this run")
    summary = guard(store.verdict_summary, rr.rid, default=pd.DataFrame(), what="Reading the verdict summary")
    if summary is None or summary.empty:
        st.caption("No verdict yet for this run.")
    else:
        layers = tiles.layers
        n_by_variant = (layers[layers["kind"].isin(["pred", "refined"])].groupby("variant")["tile"].nunique()
                        if not layers.empty else pd.Series(dtype=int))
        st.dataframe(pd.DataFrame({
            "compared": summary["variant"].map(variant_label),
            "tiles reviewed": summary["reviewed"],
            "of tiles": summary["variant"].map(lambda v: int(n_by_variant.get(v, 0))),
            "better": summary["better"], "worse": summary["worse"], "same": summary["same"],
        }), hide_index=True, width="stretch", placeholder="–")
        st.caption("Latest verdict per tile and reviewer.")
    _agreement(pair, tiles)

    all_summary = guard(store.verdict_summary, default=pd.DataFrame(), what="Reading the verdict summary")
    if all_summary is not None and not all_summary.empty and all_summary["run_id"].nunique() > 1:
        with st.expander("Verdicts of every run"):
            names = dict(zip(runs["run_id"], runs["name"]))
            st.dataframe(all_summary.assign(run=all_summary["run_id"].map(lambda r: names.get(r, r)),
                                            variant=all_summary["variant"].map(variant_label))
                         [["run", "variant", "reviewed", "better", "worse", "same", "run_id"]], hide_index=True,
                         width="stretch", placeholder="–")


def _agreement(pair: Pair, tiles: Tiles) -> None:
    """The reviewers' latest verdicts against what the metric says, and the tiles where they disagree."""
    agree = agreement(tiles.table, tiles.verdicts)
    if pair.left == LABEL or not agree["reviewed"]:
        return
    rv, mt = agree["reviewer"], agree["metric"]
    reading = "the decision rule" if tiles.rule.from_ab else "the sign of the Boundary IoU change"
    st.markdown(f"On the {agree['reviewed']} reviewed tiles of `{pair.R}` against `{pair.L}`, the reviewers' latest "
                f"verdicts agree with what the metric says ({reading}) on **{agree['agree']} of {agree['reviewed']}** "
                f"(reviewers: {rv['better']} better / {rv['worse']} worse / {rv['same']} same; the metric: "
                f"{mt['better']} / {mt['worse']} / {mt['same']}).")
    if agree["disagreements"]:
        with st.expander(f"{len(agree['disagreements'])} tile(s) where the eye and the metric disagree"):
            st.dataframe(pd.DataFrame(agree["disagreements"]).rename(
                columns={"d_mbiou": "Δ Boundary IoU (pts)", "metric": "metric says"}), hide_index=True,
                column_config={"Δ Boundary IoU (pts)": st.column_config.NumberColumn(format="%+.2f")},
                placeholder="–")


def error_atlas(rr: ReviewRun, pair: Pair, tiles: Tiles) -> None:
    """The run's misclassified share per tile of the compared mask: heatmap, georeferenced map, worst tiles."""
    with st.expander(f"Error atlas of this run: misclassified share per tile of `{pair.R}`"):
        errs = guard(error_queries.tile_errors, rr.rid, rr.split, pair.right, default=pd.DataFrame(),
                     what="Reading the per-tile errors")
        if errs is None or errs.empty:
            st.caption("No per-tile confusion in the store for this mask variant (evaluations written before it "
                       "was recorded have none).")
            return
        st.plotly_chart(atlas_figure(errs, rr.split, pair.R), width="stretch", key="review_atlas")
        layers = tiles.layers
        imgs = layers[layers["kind"] == "image"] if not layers.empty else pd.DataFrame()
        feet = georef_footprints(dict(zip(imgs["tile"], imgs["abs_path"]))) if not imgs.empty else {}
        if feet:
            st.iframe(atlas_map_html(errs, feet), height=420, alt="Error atlas map")
            st.caption(f"{len(feet)} georeferenced tile(s) at their real place, coloured by error rate.")
        worst = atlas_frame(errs).sort_values("error_rate", ascending=False).head(10)
        st.dataframe(pd.DataFrame({"tile": worst["tile"], "wrong (%)": worst["error_rate"] * 100,
                                   "wrong px": worst["wrong"], "valid px": worst["valid"]}), hide_index=True,
                     width="stretch", column_config={"wrong (%)": st.column_config.NumberColumn(format="%.2f")},
                     placeholder="–")
