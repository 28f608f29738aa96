"""Run detail's tabs (``app/views/run_detail.py`` lays them out), one function each: :func:`curves`,
:func:`per_class`, :func:`confusion`, :func:`domains`, :func:`health`, :func:`ab`, :func:`config`, :func:`log`;
:func:`pick_evaluation` is the sidebar's pick of the evaluation the per-class, confusion and domain tabs show.
Every read goes through :mod:`app.widgets.data` (cached) or the store's helpers."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pandas as pd
import streamlit as st
import yaml

import store
from app.widgets import data, evals, interop
from app.widgets.common import ACTIVE, PAGE_FILES, guard, isnum, pct
from app.widgets.curve_tools import live_log_tail, step_curves_panel
from app.widgets.drilldown import confusion_drilldown
from app.widgets.palette import ClassPalette
from mapsage import figures as charts
from mapsage.metrics.names import evaluation_warnings, metric_label
from mapsage.workspace import run_dir


@st.cache_data(show_spinner=False, max_entries=64)
def _curve_figures(ws: str, run_id: str, n_events: int, split: str, variant: str | None, colors: tuple):
    """The Curves tab's figures of one run (cached by its event count: they change only when events arrive)."""
    bb = data.bundle(run_id, n_events)
    m, pcl, sc = bb["metrics"], bb["per_class"], bb["scalars"]
    ev = m[m["epoch"].notna() & (m["split"] == split)] if not m.empty else m
    pal = ClassPalette(*colors)
    pc_rows = pcl[(pcl["variant"] == variant) & (pcl["split"] == split) & (pcl["domain"].fillna("all") == "all")
                  & pcl["epoch"].notna()] if variant is not None and not pcl.empty else pcl.iloc[0:0]
    return (charts.miou_curves(ev, split), charts.per_class_curves(pc_rows, pal, split),
            charts.training_curves(sc), charts.step_losses(sc))


def _plateau_note(run: dict, epoch_evals: pd.DataFrame, split: str) -> None:
    note = charts.plateau_note(epoch_evals)
    if note:
        gain = note["gain_points"]
        verdict = ("still improving" if gain >= 1.0 else "flattening" if gain >= 0.2 else "plateaued")
        st.info(f"**Plateau note:** mIoU ({split}, {note['variant']} weights) went from "
                f"{note['start'] * 100:.2f} at epoch {note['start_epoch']} to {note['end'] * 100:.2f} at epoch "
                f"{note['end_epoch']}: **{gain:+.2f} points over the last 20 % of the {note['epochs']} "
                f"evaluated epochs** — {verdict}.",
                icon=":material/trending_up:")
    elif run.get("kind") in ("train", "distill"):
        st.caption("Plateau note: needs at least two evaluated epochs.")


def curves(rid: str, run: dict, metrics: pd.DataFrame, per_class_rows: pd.DataFrame, scalars: pd.DataFrame,
           palette: ClassPalette) -> None:
    """Plateau note, mIoU and per-class curves, validation loss and metrics, training and step curves."""
    from app.widgets import reliability as rel_w

    split = run.get("split") or "val"
    epoch_evals = (metrics[metrics["epoch"].notna() & (metrics["split"] == split)] if not metrics.empty
                   else metrics)
    _plateau_note(run, epoch_evals, split)
    variants = sorted(per_class_rows["variant"].dropna().unique()) if not per_class_rows.empty else []
    v = None
    if variants:
        v = st.radio("Per-class curves of the weights", variants, horizontal=True, key="curve_variant",
                     index=variants.index("raw") if "raw" in variants else 0)
    f_miou, f_pc, f_train, f_steps = _curve_figures(data.workspace_key(), rid, int(run.get("n_events") or 0),
                                                    split, v, (palette.names, palette.colors))
    st.plotly_chart(f_miou, width="stretch", key="c_miou")
    if variants:
        st.plotly_chart(f_pc, width="stretch", key="c_pc")
    if rel_w.has_val_loss(scalars):
        st.plotly_chart(rel_w.loss_curves(scalars), width="stretch", key="c_valloss")
    if not epoch_evals.empty:
        st.plotly_chart(rel_w.metric_curves(epoch_evals, split), width="stretch", key="c_metrics5")
    st.plotly_chart(f_train, width="stretch", key="c_train")
    step_curves_panel(scalars, key="c_steps")
    interop.iteration_curves(scalars)


def pick_evaluation(run: dict, overall: pd.DataFrame) -> Optional[pd.Series]:
    """The sidebar's pick of the evaluation shown by the per-class, confusion and domain tabs (None: none yet).
    Default: the evaluation the run is ranked by (the ranking rule: own result or adopted variant), else the
    best."""
    if overall.empty:
        return None
    ov = overall.reset_index(drop=True)
    ranked_seq = run.get("best_seq")
    on_seq = list(ov.index[ov["seq"] == int(ranked_seq)]) if isnum(ranked_seq) else []
    default = int(on_seq[0]) if on_seq else evals.best_index(ov, run.get("split") or "val")
    labels = [f"{i + 1}. {evals.label(r)}" + (" ★ ranked" if i == default and on_seq else
                                              " ★ best" if i == default else "") for i, (_, r) in
              enumerate(ov.iterrows())]
    with st.sidebar:
        picked = st.selectbox("Evaluation shown (per class, confusion, domains)", labels, index=default,
                              key="detail_eval")
    return ov.iloc[labels.index(picked)]


def per_class(chosen: Optional[pd.Series], per_class_rows: pd.DataFrame, palette: ClassPalette) -> None:
    """The chosen evaluation's headline, warnings, weakest classes, IoU and Boundary IoU bars and table."""
    if chosen is None:
        st.info("No evaluation yet: per-class figures appear after the first validation.")
        return
    split = chosen["split"]
    rows = evals.class_rows_of(per_class_rows, int(chosen["seq"]))
    band = int(chosen["boundary_px"]) if isnum(chosen["boundary_px"]) else "?"
    n_img = int(chosen["n_images"]) if isnum(chosen["n_images"]) else "?"
    st.markdown(f"Evaluation **{evals.label(chosen)}** — mIoU **{pct(chosen['miou'])}**, mAcc "
                f"{pct(chosen['macc'])}, aAcc {pct(chosen['aacc'])}, {metric_label('mf1')} {pct(chosen['mf1'])}, "
                f"Boundary IoU **{pct(chosen['mbiou'])}** ({band} px band), {n_img} images of `{split}`.")
    warnings = evaluation_warnings(chosen.get("extra_json"))
    if warnings:
        st.warning("\n".join(f"- {w}" for w in warnings))
    if chosen["excluded_classes"]:
        st.caption("Left out of the means (absent from both label and prediction): "
                   + ", ".join(chosen["excluded_classes"]))
    weak = charts.weakest(rows, 3)
    if weak:
        st.warning("Weakest classes: " + ", ".join(f"**{w}**" for w in weak), icon=":material/arrow_downward:")
    left, right = st.columns(2)
    left.plotly_chart(charts.per_class_bars(rows, palette, "iou", "IoU", split), width="stretch", key="pc_iou")
    right.plotly_chart(charts.per_class_bars(rows, palette, "biou", "Boundary IoU", split, weakest_k=0),
                       width="stretch", key="pc_biou")
    if not rows.empty:
        tbl = rows[["class_id", "class_name", "iou", "acc", "precision", "f1", "biou", "excluded"]].copy()
        for col in ("iou", "acc", "precision", "f1", "biou"):
            tbl[col] = tbl[col] * 100
        tbl.columns = ["id", "class", f"IoU ({split})", f"Acc ({split})", f"Precision ({split})",
                       f"F1 ({split})", f"Boundary IoU ({split})", "excluded"]
        st.dataframe(tbl, hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(c, format="%.2f")
                                    for c in tbl.columns if f"({split})" in c}, placeholder="–")


def confusion(rid: str, run: dict, chosen: Optional[pd.Series], palette: ClassPalette) -> None:
    """The chosen evaluation's confusion matrix, with the drill-down into a cell."""
    if chosen is None:
        st.info("No confusion matrix yet.")
        return
    got = data.confusion(rid, run.get("n_events"), chosen["split"], chosen["domain"] or "all",
                         chosen["variant"], evals.epoch_arg(chosen))
    if got is None:
        st.info("This evaluation stored no confusion matrix.")
        return
    m, names = got
    norm = st.toggle("Row-normalised (share of each label's pixels)", value=True, key="cm_norm")

    confusion_drilldown(rid, run, chosen, m, names, palette, normalise=norm, key="cm",
                        ws=data.workspace_key(), run_label=run.get("name"))


def domains(run: dict, chosen: Optional[pd.Series], metrics: pd.DataFrame, per_class_rows: pd.DataFrame,
            palette: ClassPalette) -> None:
    """The chosen evaluation per domain (e.g. LoveDA's Urban / Rural): bars, per-class bars, table."""
    if chosen is None:
        st.info("No evaluation yet.")
        return
    dom = evals.domain_rows(metrics, chosen)
    per_dom = dom[dom["domain"] != "all"]
    if per_dom.empty:
        ds_domains = ((run.get("config") or {}).get("dataset") or {}).get("domains") or []
        st.info("This dataset has no domains (e.g. LoveDA's Urban/Rural), so there is no breakdown."
                if not ds_domains else "This evaluation stored no per-domain rows.")
        return
    st.plotly_chart(charts.domain_bars(dom, chosen["split"]), width="stretch", key="dom_bars")
    seqs = set(per_dom["seq"].astype(int))
    pc = per_class_rows[per_class_rows["seq"].isin(seqs)]
    st.plotly_chart(charts.per_class_domain_bars(pc, palette, chosen["split"]), width="stretch", key="dom_pc")
    st.dataframe(per_dom[["domain", "n_images", "miou", "mbiou", "macc"]].assign(
        miou=lambda d: d["miou"] * 100, mbiou=lambda d: d["mbiou"] * 100, macc=lambda d: d["macc"] * 100)
        .rename(columns={"miou": f"mIoU ({chosen['split']})", "mbiou": f"Boundary IoU ({chosen['split']})",
                         "macc": f"mAcc ({chosen['split']})"}), hide_index=True, placeholder="–")


def health(rid: str, run: dict, runs: pd.DataFrame) -> None:
    """The run's health checks, else the latest health-check run's on the same dataset: one expander per check
    with its evidence and picture."""
    health_rid = rid
    h = data.table(rid, run.get("n_events"), "health")
    if (h is None or h.empty) and run.get("kind") != "health":
        others = runs[(runs["kind"] == "health") & (runs["dataset"] == run.get("dataset"))]
        if not others.empty:
            health_rid = others.iloc[0]["run_id"]
            h = guard(store.health, health_rid, default=pd.DataFrame())
            st.caption(f"The latest health-check run on dataset `{run.get('dataset')}`: `{health_rid}`.")
    if h is None or h.empty:
        st.info("No health check results. Stage 0 runs them: launch the health template from the Plan board.")
        return
    icons = {"pass": ":material/check_circle:", "warn": ":material/warning:", "fail": ":material/cancel:"}
    for _, r in h.iterrows():
        with st.expander(f"{icons.get(r['status'], '·')} **{r['check_name']}** — {r['verdict']}"):
            try:
                st.json(json.loads(r["evidence_json"]) if r["evidence_json"] else {})
            except (TypeError, ValueError):
                st.code(str(r["evidence_json"]))
            pic = r.get("picture")
            if isinstance(pic, str) and pic:        # a missing picture is NULL in the store (NaN here)

                p = Path(pic) if Path(pic).is_absolute() else run_dir(health_rid) / pic
                if p.exists():
                    st.image(str(p), caption=str(pic))


def ab(rid: str, run: dict) -> None:
    """The run's A/B rows as bars, and a link to every A/B decision."""
    rows = data.table(rid, run.get("n_events"), "ab")
    if rows is None or rows.empty:
        st.info("This run wrote no A/B rows (TTA, post-processing, refinement and ensemble stages do).")
        return
    st.plotly_chart(charts.ab_bars(rows), width="stretch", key="ab_bars")
    st.page_link(PAGE_FILES["tta"], label="All A/B decisions", icon=":material/science:")


def config(run: dict) -> None:
    """The resolved config as YAML."""
    cfg = run.get("config")
    if cfg:
        st.code(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), language="yaml")
    else:
        st.info("No resolved config stored for this run.")


def log(rid: str, run: dict) -> None:
    """The log's tail (live while the run is active) and the stored log records."""
    lines = st.select_slider("Lines", [50, 200, 1000], value=200, key="log_lines")

    live_log_tail(rid, lines, run.get("status") in ACTIVE)
    logs = data.table(rid, run.get("n_events"), "logs")
    if logs is not None and not logs.empty:
        st.markdown("**Log records**")
        st.dataframe(logs[["time", "level", "message"]], hide_index=True, width="stretch", placeholder="–")
