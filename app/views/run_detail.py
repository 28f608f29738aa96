"""Run detail: curves, plateau note, per-class IoU with the weakest classes marked, confusion matrix, Boundary IoU
per class, the Urban/Rural breakdown, health checks, the resolved config and the log tail of one run."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import streamlit as st
import yaml

from app.widgets import charts, data, evals, interop
from app.widgets.common import (
    ACTIVE,
    PAGE_FILES,
    ago,
    duration,
    guard,
    isnum,
    pct,
    progress_fraction,
    progress_text,
    query_list,
    refresh,
    status_text,
)
from app.widgets.deliver import deliver_section
from app.widgets.launch import cancel, resume
from app.widgets.nav import ensure_routed
from app.widgets.report_button import report_button
from mapsage.metrics.names import evaluation_warnings, metric_label

ensure_routed()
st.title(":material/query_stats: Run detail")

runs = guard(data.runs, default=pd.DataFrame(), what="Reading the run list")
if runs is None or runs.empty:
    st.info("No runs yet. Launch one from the Plan board.", icon=":material/arrow_forward:")
    st.page_link(PAGE_FILES["plan"], label="Open the Plan board", icon=":material/map:")
    st.stop()

wanted = (query_list("run") or [None])[0]
ids = list(runs["run_id"])
names = dict(zip(runs["run_id"], runs["name"] + "  ·  " + runs["status"].fillna("?")))
if wanted and wanted not in names:
    st.warning(f"Run `{wanted}` is not in the store (yet?). Pick another one.")
    wanted = None
rid = st.selectbox("Run (newest first)", ids, index=ids.index(wanted) if wanted else 0, key="detail_run")
if rid != wanted:
    st.query_params["run"] = rid

run = guard(data.run_row, rid, what=f"Reading run {rid}")
if not run:
    st.stop()

# ---------------------------------------------------------------------------------------------------------- header
st.subheader(run.get("name") or rid)
st.markdown(f"{status_text(run.get('status'))} &nbsp; `{rid}` · stage {run.get('plan_stage')} · `{run.get('kind')}` "
            f"· dataset `{run.get('dataset')}` · figures on split `{run.get('split')}`")
if run.get("kind") == "classify":          # image classification: its own figures (app/widgets/classify_view.py)
    from app.widgets.classify_view import classification_detail

    guard(classification_detail, run, what=f"Drawing classification run {rid}")
    st.stop()
if run.get("kind") == "health":
    c = st.columns(5)
    import store

    checks = guard(store.health, rid, default=pd.DataFrame())
    n = checks["status"].value_counts() if checks is not None and not checks.empty else {}
    for col, status in zip(c[:3], ("pass", "warn", "fail")):
        col.metric(f"Checks: {status}", int(n.get(status, 0)) if len(n) else "–")
else:
    # ONE evaluation's figures together (the run's headline by the ranking rule, or the one picked)
    evs = guard(data.run_evaluations, rid, run.get("n_events"), default=pd.DataFrame())
    evs = evs[evs["domain"] == "all"].reset_index(drop=True) if evs is not None and not evs.empty else pd.DataFrame()
    if evs.empty:
        st.caption("No evaluation yet.")
    else:
        best_seq = run.get("best_seq")
        seqs = list(evs["seq"].astype(int))
        default_i = seqs.index(int(best_seq)) if isnum(best_seq) and int(best_seq) in seqs else len(seqs) - 1
        ident = dict(zip(seqs, evs["identity"]))
        head_seq = st.selectbox(
            "Headline evaluation", seqs, index=default_i, key="detail_headline",
            format_func=lambda q: ("★ " if isnum(best_seq) and q == int(best_seq) else "") + ident[q],
            help="every figure below comes from this one evaluation; ★ is the one the run is ranked by (its own "
                 "best result, or the variant it adopted)")
        h = evs[evs["seq"] == head_seq].iloc[0]
        hc = st.columns(5)
        hc[0].metric("mIoU", pct(h["miou"]))
        hc[1].metric("Boundary IoU", pct(h["mbiou"]))
        hc[2].metric("mAcc", pct(h["macc"]))
        hc[3].metric("mF1", pct(h["mf1"]))
        hc[4].metric("Images/s", f"{h['images_per_s']:.2f}" if isnum(h.get("images_per_s")) else "–",
                     help=f"on {h['device']}" if isinstance(h.get("device"), str) else None)
        roles = {"result": "the run's own result", "adopted": "the variant this run adopted",
                 "lineage": "the parent's checkpoint re-scored (lineage, not this run's result)",
                 "rejected": "a variant this run did not adopt", "pending": "the decision is still pending"}
        st.caption(f"**{h['identity']}** — {roles.get(h['role'], h['role'])}"
                   + (f" · checkpoint `{h['checkpoint']}` (sha256 {h['ckpt_hash']})"
                      if isinstance(h.get("checkpoint"), str) else "")
                   + (f" · {h['params'] / 1e6:.2f} M parameters" if isnum(h.get("params")) else ""))
started, ended = run.get("started_at"), run.get("ended_at")
dur = ((ended or pd.Timestamp.now(tz="UTC")) - started).total_seconds() if isinstance(started, pd.Timestamp) else None
if run.get("kind") == "health":
    c[3].metric("Duration", duration(dur))
else:
    st.caption(f"Duration {duration(dur)}")

facts = [f"host `{run.get('host') or '–'}` pid `{run.get('pid') or '–'}` GPUs `{run.get('gpus') or 'none'}`",
         f"config hash `{run.get('config_hash')}` · code `{run.get('code_commit')}`"]
if run.get("parent_run"):
    facts.append(f"{run.get('parent_relation') or 'child'} of `{run['parent_run']}`")
st.caption(" · ".join(facts))
from app.widgets.run_notes import tags_and_note  # noqa: E402

tags_and_note(rid)
interop.imported_note(run)
report_button([rid], key="detail", names=[run.get("name") or rid])
deliver_section(run)
if run.get("status") in ("failed", "died") and (run.get("status_message") or run.get("traceback")):
    st.error(f"{run['status']}: {run.get('status_message') or ''}")
    if run.get("traceback"):
        with st.expander("Traceback"):
            st.code(run["traceback"], language="text")

if run.get("status") in ACTIVE:
    if st.button("Cancel run", key="detail_cancel", icon=":material/stop_circle:"):
        got = cancel(rid)
        if got:
            st.toast(f"{rid}: {got}")
elif run.get("kind") in ("train", "distill") and run.get("status") in ("failed", "cancelled", "died"):
    if st.button("Resume", key="detail_resume", icon=":material/play_circle:",
                 help="a new run continuing from this run's last checkpoint"):
        new = resume(rid)
        if new:
            st.success(f"Resumed as `{new}`.")
elif run.get("kind") in ("train", "distill") and run.get("status") == "succeeded":
    from app.widgets.export_ab import export_action
    export_action(rid)              # ONNX / TorchScript builds with parity and speed
    from app.widgets.warm_start import warm_start_action
    warm_start_action(rid)          # fine-tune at a new crop size from this run's weights


@st.fragment(run_every=2.0)
def _live(run_id: str) -> None:
    from runners import api

    refresh()
    try:
        live = api.status(run_id)
    except Exception as exc:  # noqa: BLE001 - shown
        st.caption(f"status unavailable: {exc}")
        return
    if live.get("final"):
        st.rerun(scope="app")
    frac = progress_fraction(live.get("progress"), live.get("status"))
    st.progress(frac or 0.0, text=progress_text(live.get("progress"), live.get("status"))
                or status_text(live.get("status")))
    st.caption(f"heartbeat {ago(live.get('last_heartbeat'))} · refreshed {time.strftime('%H:%M:%S')}")


if run.get("status") in ACTIVE:
    _live(rid)

# ---------------------------------------------------------------------------------------------------------- data
b = data.bundle(rid, run.get("n_events"))
metrics, per_class, scalars = b["metrics"], b["per_class"], b["scalars"]
from app.widgets.lr_find_view import lr_find_section  # noqa: E402

lr_find_section(run, scalars)
palette = data.palette_of(run)
overall = evals.overall(metrics)

TABS = ["Curves", "Per class", "Confusion", "Domains", "Health", "A/B", "Config", "Log", "Reliability"]
first = {"health": "Health", "tta_ab": "A/B", "refine": "A/B", "ensemble": "A/B", "evaluate": "Per class",
         "reliability": "Reliability"}
# lazy tabs, bound to the URL (?tab=Per+class): only the open tab's content is computed and drawn
tabs = st.tabs(TABS, default=first.get(run.get("kind"), "Curves"), key="tab", bind="query-params")


def shown(i: int) -> bool:
    return tabs[i].open is not False


@st.cache_data(show_spinner=False, max_entries=64)
def _curve_figures(ws: str, run_id: str, n_events: int, split: str, variant: str | None, colors: tuple):
    """The Curves tab's figures of one run (cached by its event count: they change only when events arrive)."""
    from app.widgets.palette import ClassPalette

    bb = data.bundle(run_id, n_events)
    m, pcl, sc = bb["metrics"], bb["per_class"], bb["scalars"]
    ev = m[m["epoch"].notna() & (m["split"] == split)] if not m.empty else m
    pal = ClassPalette(*colors)
    pc_rows = pcl[(pcl["variant"] == variant) & (pcl["split"] == split) & (pcl["domain"].fillna("all") == "all")
                  & pcl["epoch"].notna()] if variant is not None and not pcl.empty else pcl.iloc[0:0]
    return (charts.miou_curves(ev, split), charts.per_class_curves(pc_rows, pal, split),
            charts.training_curves(sc), charts.step_losses(sc))


# ---------------------------------------------------------------------------------------------------------- curves
with tabs[0]:
    if shown(0):
        split = run.get("split") or "val"
        epoch_evals = (metrics[metrics["epoch"].notna() & (metrics["split"] == split)] if not metrics.empty
                       else metrics)
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
        variants = sorted(per_class["variant"].dropna().unique()) if not per_class.empty else []
        v = None
        if variants:
            v = st.radio("Per-class curves of the weights", variants, horizontal=True, key="curve_variant",
                         index=variants.index("raw") if "raw" in variants else 0)
        f_miou, f_pc, f_train, f_steps = _curve_figures(data.workspace_key(), rid, int(run.get("n_events") or 0),
                                                        split, v, (palette.names, palette.colors))
        st.plotly_chart(f_miou, width="stretch", key="c_miou")
        if variants:
            st.plotly_chart(f_pc, width="stretch", key="c_pc")
        from app.widgets import reliability as rel_w
        if rel_w.has_val_loss(scalars):
            st.plotly_chart(rel_w.loss_curves(scalars), width="stretch", key="c_valloss")
        if not epoch_evals.empty:
            st.plotly_chart(rel_w.metric_curves(epoch_evals, split), width="stretch", key="c_metrics5")
        st.plotly_chart(f_train, width="stretch", key="c_train")
        from app.widgets.curve_tools import step_curves_panel

        step_curves_panel(scalars, key="c_steps")
        interop.iteration_curves(scalars)

# ---------------------------------------------------------------------------------------------------------- eval pick
chosen = None
if not overall.empty:
    ov = overall.reset_index(drop=True)
    # default: the evaluation the run is ranked by (the ranking rule: own result or adopted variant), else the best
    ranked_seq = run.get("best_seq")
    on_seq = list(ov.index[ov["seq"] == int(ranked_seq)]) if isnum(ranked_seq) else []
    default = int(on_seq[0]) if on_seq else evals.best_index(ov, run.get("split") or "val")
    labels = [f"{i + 1}. {evals.label(r)}" + (" ★ ranked" if i == default and on_seq else
                                              " ★ best" if i == default else "") for i, (_, r) in
              enumerate(ov.iterrows())]
    with st.sidebar:
        picked = st.selectbox("Evaluation shown (per class, confusion, domains)", labels, index=default,
                              key="detail_eval")
    pick = labels.index(picked)
    chosen = ov.iloc[pick]

with tabs[1]:
    if shown(1):
        if chosen is None:
            st.info("No evaluation yet: per-class figures appear after the first validation.")
        else:
            split = chosen["split"]
            rows = evals.class_rows_of(per_class, int(chosen["seq"]))
            band = int(chosen["boundary_px"]) if isnum(chosen["boundary_px"]) else "?"
            n_img = int(chosen["n_images"]) if isnum(chosen["n_images"]) else "?"
            st.markdown(f"Evaluation **{evals.label(chosen)}** — mIoU **{pct(chosen['miou'])}**, mAcc "
                        f"{pct(chosen['macc'])}, aAcc {pct(chosen['aacc'])}, {metric_label('mf1')} {pct(chosen['mf1'])}, Boundary IoU "
                        f"**{pct(chosen['mbiou'])}** ({band} px band), {n_img} images of `{split}`.")
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

with tabs[2]:
    if shown(2):
        if chosen is None:
            st.info("No confusion matrix yet.")
        else:
            got = data.confusion(rid, run.get("n_events"), chosen["split"], chosen["domain"] or "all",
                                 chosen["variant"], evals.epoch_arg(chosen))
            if got is None:
                st.info("This evaluation stored no confusion matrix.")
            else:
                m, names = got
                norm = st.toggle("Row-normalised (share of each label's pixels)", value=True, key="cm_norm")
                from app.widgets.drilldown import confusion_drilldown

                confusion_drilldown(rid, run, chosen, m, names, palette, normalise=norm, key="cm",
                                    ws=data.workspace_key(), run_label=run.get("name"))

with tabs[3]:
    if shown(3):
        if chosen is None:
            st.info("No evaluation yet.")
        else:
            dom = evals.domain_rows(metrics, chosen)
            per_dom = dom[dom["domain"] != "all"]
            if per_dom.empty:
                ds_domains = ((run.get("config") or {}).get("dataset") or {}).get("domains") or []
                st.info("This dataset has no domains (e.g. LoveDA's Urban/Rural), so there is no breakdown."
                        if not ds_domains else "This evaluation stored no per-domain rows.")
            else:
                st.plotly_chart(charts.domain_bars(dom, chosen["split"]), width="stretch", key="dom_bars")
                seqs = set(per_dom["seq"].astype(int))
                pc = per_class[per_class["seq"].isin(seqs)]
                st.plotly_chart(charts.per_class_domain_bars(pc, palette, chosen["split"]), width="stretch",
                                key="dom_pc")
                st.dataframe(per_dom[["domain", "n_images", "miou", "mbiou", "macc"]].assign(
                    miou=lambda d: d["miou"] * 100, mbiou=lambda d: d["mbiou"] * 100, macc=lambda d: d["macc"] * 100)
                    .rename(columns={"miou": f"mIoU ({chosen['split']})", "mbiou": f"Boundary IoU ({chosen['split']})",
                                     "macc": f"mAcc ({chosen['split']})"}), hide_index=True, placeholder="–")

with tabs[4]:
    if shown(4):
        health_rid = rid
        h = data.table(rid, run.get("n_events"), "health")
        if (h is None or h.empty) and run.get("kind") != "health":
            others = runs[(runs["kind"] == "health") & (runs["dataset"] == run.get("dataset"))]
            if not others.empty:
                health_rid = others.iloc[0]["run_id"]
                import store

                h = guard(store.health, health_rid, default=pd.DataFrame())
                st.caption(f"The latest health-check run on dataset `{run.get('dataset')}`: `{health_rid}`.")
        if h is None or h.empty:
            st.info("No health check results. Stage 0 runs them: launch the health template from the Plan board.")
        else:
            icons = {"pass": ":material/check_circle:", "warn": ":material/warning:", "fail": ":material/cancel:"}
            for _, r in h.iterrows():
                with st.expander(f"{icons.get(r['status'], '·')} **{r['check_name']}** — {r['verdict']}"):
                    try:
                        st.json(json.loads(r["evidence_json"]) if r["evidence_json"] else {})
                    except (TypeError, ValueError):
                        st.code(str(r["evidence_json"]))
                    pic = r.get("picture")
                    if isinstance(pic, str) and pic:        # a missing picture is NULL in the store (NaN here)
                        from mapsage.workspace import run_dir

                        p = Path(pic) if Path(pic).is_absolute() else run_dir(health_rid) / pic
                        if p.exists():
                            st.image(str(p), caption=str(pic))

with tabs[5]:
    if shown(5):
        ab = data.table(rid, run.get("n_events"), "ab")
        if ab is None or ab.empty:
            st.info("This run wrote no A/B rows (TTA, post-processing, refinement and ensemble stages do).")
        else:
            st.plotly_chart(charts.ab_bars(ab), width="stretch", key="ab_bars")
            st.page_link(PAGE_FILES["tta"], label="All A/B decisions", icon=":material/science:")

with tabs[6]:
    if shown(6):
        cfg = run.get("config")
        if cfg:
            st.code(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), language="yaml")
        else:
            st.info("No resolved config stored for this run.")

with tabs[7]:
    if shown(7):
        lines = st.select_slider("Lines", [50, 200, 1000], value=200, key="log_lines")
        from app.widgets.curve_tools import live_log_tail

        live_log_tail(rid, lines, run.get("status") in ACTIVE)
        logs = data.table(rid, run.get("n_events"), "logs")
        if logs is not None and not logs.empty:
            st.markdown("**Log records**")
            st.dataframe(logs[["time", "level", "message"]], hide_index=True, width="stretch", placeholder="–")

with tabs[8]:
    if shown(8):
        from app.widgets.reliability import reliability_section
        reliability_section(rid, run)
