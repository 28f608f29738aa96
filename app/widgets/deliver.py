"""Run detail's delivery section: "Predict with this model" (a split, an image folder or a GeoTIFF; launched as
a ``predict`` job through ``runners.api``), the form that records a benchmark's score of the run (the store's
``external_scores``), and the val→test gap of the scores already recorded."""
from __future__ import annotations

import streamlit as st

from mapsage.registries import MODEL_KINDS
from mapsage.workspace import run_dir

from .common import guard, isnum
from .delivery_map import delivery_map_html
from .launch import predict


def _splits(run: dict) -> list[str]:
    cfg = run.get("config") or {}
    ds = cfg.get("dataset") or {}
    names = [ds.get("test_split"), ds.get("val_split"), ds.get("train_split")]
    return [str(n) for n in names if n]


def predict_form(run: dict) -> None:
    rid = run["run_id"]
    with st.form(f"predict_{rid}", border=False):
        c1, c2 = st.columns([2, 1])
        splits = _splits(run) or ["test"]
        choice = c1.selectbox("Predict", [*splits, "a folder or GeoTIFF…"], index=0, key=f"predict_on_{rid}",
                              help="a split of the run's dataset (LoveDA's Test split needs no masks), or a path")
        path = c1.text_input("Folder or GeoTIFF path (when chosen above)", "", key=f"predict_path_{rid}")
        probs = c2.selectbox("Probabilities", ["off", "uint8", "float16"], index=0, key=f"predict_probs_{rid}",
                             help="per-class probabilities beside the class ids (uint8: quantised, smaller)")
        weights = c2.selectbox("Weights", ["auto", "raw", "ema"], index=0, key=f"predict_weights_{rid}")
        go = st.form_submit_button("Predict with this model", icon=":material/online_prediction:")
    if go:
        on = path.strip() if choice.startswith("a folder") else choice
        if not on:
            st.error("Give the folder or GeoTIFF path to predict.")
            return
        new = predict(rid, on, [f"predict.probabilities={probs}", f"predict.weights={weights}"])
        if new:
            st.success(f"Queued `{new}`; it shows in Runs, and its predictions in Review.")


def score_form(run: dict) -> None:
    import store

    rid = run["run_id"]
    gaps = guard(store.val_test_gaps, rid, default=None, what="Reading external scores")
    if gaps is not None and not gaps.empty:
        for r in gaps.itertuples():
            val = f"{100 * r.val_value:.2f}" if isnum(r.val_value) else "–"
            gap = f"{100 * r.gap:+.2f} points" if isnum(r.gap) else "no validation figure"
            st.markdown(f"**{r.split}** {r.metric} **{100 * r.external_value:.2f}** ({r.source}) · val {val} · "
                        f"val→{r.split} gap **{gap}**")
    with st.form(f"score_{rid}", border=False):
        c1, c2, c3 = st.columns(3)
        split = c1.text_input("Split", "test", key=f"score_split_{rid}")
        value = c2.number_input("mIoU (points)", min_value=0.0, max_value=100.0, value=None, step=0.01,
                                key=f"score_value_{rid}")
        source = c3.text_input("Source", "codalab", key=f"score_source_{rid}")
        note = st.text_input("Note", "", key=f"score_note_{rid}")
        ok = st.form_submit_button("Record the score", icon=":material/leaderboard:")
    if ok:
        if value is None:
            st.error("Give the score in points (e.g. 52.4).")
            return
        if guard(store.add_external_score, rid, split, value, source, note=note, default=None,
                 what="Recording the score") is not None:
            from . import data
            data.clear()
            st.success(f"Recorded {split} mIoU {value:.2f} ({source}).")
            st.rerun()


def predictions_section(run: dict) -> None:
    """A predict run's outputs: the manifest's summary and, per raster, its map with the polygons."""
    import json
    from pathlib import Path


    mpath = run_dir(run["run_id"]) / "predictions" / "manifest.json"
    if not mpath.is_file():
        return
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        st.error(f"{mpath}: cannot read the manifest ({exc})")
        return
    src = m.get("source") or {}
    st.markdown(f"**Predictions** of {src.get('kind')} `{src.get('name')}`: {len(m.get('outputs') or [])} of "
                f"{src.get('count')} inputs · {m.get('identity_short')} · checkpoint sha256 "
                f"`{str((m.get('checkpoint') or {}).get('sha256'))[:12]}` · manifest `{mpath}`")
    rasters = [o for o in m.get("outputs") or [] if o.get("classes")]
    if not rasters:
        return
    pick = st.selectbox("Raster", [o["id"] for o in rasters], key=f"deliver_raster_{run['run_id']}") \
        if len(rasters) > 1 else rasters[0]["id"]
    out = next(o for o in rasters if o["id"] == pick)
    poly = (out.get("polygons") or {}).get("path")
    st.caption(f"{out['width']}×{out['height']} px · CRS {out.get('crs') or 'none (pixel coordinates)'} · COG "
               f"`{out['classes']}`" + (f" · polygons `{poly}` ({out['polygons']['polygons']})" if poly else ""))
    for w in out.get("warnings") or []:
        st.warning(w)

    html = guard(delivery_map_html, out["input"], out["classes"], classes=m.get("classes") or [],
                 palette=m.get("palette") or [], polygons=poly if poly and Path(poly).exists() else None,
                 what="Drawing the map", default=None)
    if html:
        if hasattr(st, "iframe"):
            st.iframe(html, height=560)
        else:  # Streamlit before st.iframe
            import streamlit.components.v1 as components
            components.html(html, height=560)


def deliver_section(run: dict) -> None:
    """The expander on Run detail: a predict run's outputs; a model run's predict and score forms."""
    if run.get("kind") == "predict" and run.get("status") == "succeeded":
        with st.expander("Predictions: manifest, map of the predicted raster", expanded=True,
                         icon=":material/map:"):
            predictions_section(run)
        return
    if run.get("kind") not in MODEL_KINDS or run.get("status") != "succeeded":
        return
    with st.expander("Deliver: predict unlabelled data · benchmark score", icon=":material/outbox:"):
        predict_form(run)
        st.divider()
        score_form(run)
