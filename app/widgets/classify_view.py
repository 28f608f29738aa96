"""Run detail of an image-classification run (stage kind ``classify``): headline figures, curves, per-class
precision/recall/F1, confusion matrix, the error gallery (most confident mistakes with thumbnails), Grad-CAM of a
chosen mistake, the calibration diagram before/after temperature scaling, the config and the log.

Everything is read from the store (evaluations, scalars, per-class rows, confusion, artifacts) and from the files
the run's artifacts name; nothing here runs a model."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

import store
from mapsage import figures
from mapsage.workspace import run_dir

TABS = ["Curves", "Per class", "Confusion", "Errors", "Grad-CAM", "Calibration", "Health", "Config", "Log"]


def _extra(row) -> dict:
    raw = row.get("extra_json")
    try:
        return json.loads(raw) if isinstance(raw, str) else (raw or {})
    except ValueError:
        return {}


def _artifact(run_id: str, kind: str) -> dict | None:
    a = store.artifacts(run_id, kind=kind)
    if a.empty:
        return None
    path = Path(a.iloc[-1]["abs_path"])
    try:
        return {"path": path, "data": json.loads(path.read_text(encoding="utf-8"))}
    except (OSError, ValueError):
        return None


def _run_dir(run_id: str) -> Path:
    return run_dir(run_id)


def classification_detail(run: dict) -> None:
    rid = run["run_id"]
    ev = store.metrics(rid, domain="all")
    if not ev.empty:
        ex = ev.apply(_extra, axis=1)
        for k in ("top1", "top5", "macro_f1", "ece", "ece_calibrated", "temperature", "nll"):
            ev[k] = [e.get("summary_" + k, e.get(k)) for e in ex]
    final = ev[ev["epoch"].isna()] if not ev.empty else ev
    head = final.iloc[-1] if not final.empty else (ev.iloc[-1] if not ev.empty else None)
    c = st.columns(5)
    if head is not None:
        c[0].metric(f"Top-1 ({head['split']})", f"{100 * head['top1']:.2f} %")
        c[1].metric("Macro F1", f"{100 * head['macro_f1']:.2f} %")
        c[2].metric("Top-5", f"{100 * head['top5']:.2f} %")
        ece_t = head.get("ece_calibrated")
        c[3].metric("ECE", f"{100 * head['ece']:.2f} %",
                    delta=(f"{100 * (ece_t - head['ece']):+.2f} pts after T" if ece_t == ece_t and ece_t is not None
                           else None), delta_color="inverse")
        c[4].metric("Weights", f"{head['variant']} · ep {int(head['ckpt_epoch']) + 1}"
                    if head.get("ckpt_epoch") == head.get("ckpt_epoch") and head.get("ckpt_epoch") is not None
                    else str(head["variant"]))
        st.caption(f"{'Final evaluation of the kept weights' if not final.empty else 'Latest epoch'} · "
                   f"{int(head['n_images'])} validation images · classes labelled or predicted enter the macro "
                   f"mean")
    else:
        st.info("No validation yet: figures appear after the first epoch.")
    tabs = st.tabs(TABS, key="cls_tab")
    with tabs[0]:
        ep = ev[ev["epoch"].notna()] if not ev.empty else ev
        if ep.empty:
            st.caption("No evaluated epoch yet.")
        else:
            st.plotly_chart(figures.classification_curves(ep), width="stretch", key="cls_curves")
        sc = store.scalars(rid)
        if not sc.empty:
            tr = sc[(sc["split"] == "train") & sc["name"].isin(["train_loss"]) & sc["epoch"].notna()]
            vl = sc[(sc["split"] == "val") & sc["name"].isin(["val_loss", "val_loss_ema"])]
            st.plotly_chart(figures.classification_losses(pd.concat([tr, vl])), width="stretch", key="cls_losses")
    with tabs[1]:
        pc = store.per_class(rid, split="val", epoch="final")
        if pc.empty:
            pc = store.per_class(rid, split="val")
        if pc.empty:
            st.caption("No per-class figures yet.")
        else:
            conf = store.confusion_matrix(rid, split="val", epoch="final") or store.confusion_matrix(rid, split="val")
            support = conf[0].sum(1) if conf is not None else None
            tab = pd.DataFrame({"Class": pc["class_name"], "Precision": pc["precision"] * 100,
                                "Recall": pc["acc"] * 100, "F1": pc["f1"] * 100})
            if support is not None and len(support) == len(tab):
                tab["Images (label)"] = support
            st.dataframe(tab, hide_index=True, width="stretch", key="cls_pc", placeholder="–",
                         column_config={k: st.column_config.NumberColumn(format="%.1f")
                                        for k in ("Precision", "Recall", "F1")})
            st.caption("Precision = right among images predicted as the class; recall = right among images labelled "
                       "with it; a class with no true positive scores F1 0.")
    with tabs[2]:
        conf = store.confusion_matrix(rid, split="val", epoch="final") or store.confusion_matrix(rid, split="val")
        if conf is None:
            st.caption("No confusion matrix yet.")
        else:
            st.plotly_chart(figures.confusion_heatmap(*conf, unit="images"), width="stretch", key="cls_conf")
    errs = _artifact(rid, "cls_errors")
    with tabs[3]:
        if not errs:
            st.caption("The error gallery is written when the run finishes.")
        else:
            d = errs["data"]
            st.markdown(f"**{d['n_errors']} of {d['n_images']} validation images are misclassified**; the "
                        f"{len(d['rows'])} most confident mistakes (calibrated confidence):")
            rows = d["rows"]
            per_row = 6
            for i in range(0, len(rows), per_row):
                cols = st.columns(per_row)
                for col, r in zip(cols, rows[i:i + per_row]):
                    p = _run_dir(rid) / r["thumb"]
                    if p.is_file():
                        col.image(str(p), width="stretch")
                    col.caption(f"**{r['pred']}** {100 * r['confidence']:.0f} % · label *{r['label']}* "
                                f"({100 * r['p_label']:.0f} %)  \n`{r['filename']}`")
    with tabs[4]:
        rows = [r for r in (errs["data"]["rows"] if errs else []) if r.get("gradcam_pred")]
        if not rows:
            st.caption("Grad-CAM maps are written for the most confident mistakes when the run finishes "
                       "(classify.gradcam_images).")
        else:
            pick = st.selectbox("Image", [r["filename"] for r in rows], key="cls_cam_pick",
                                format_func=lambda f: next(f"{x['filename']} · predicted {x['pred']}, label "
                                                           f"{x['label']}" for x in rows if x["filename"] == f))
            r = next(x for x in rows if x["filename"] == pick)
            c1, c2, c3 = st.columns(3)
            c1.image(str(_run_dir(rid) / r["thumb"]), caption="image", width="stretch")
            c2.image(str(_run_dir(rid) / r["gradcam_pred"]), width="stretch",
                     caption=f"Grad-CAM for the prediction: {r['pred']} ({100 * r['confidence']:.0f} %)")
            c3.image(str(_run_dir(rid) / r["gradcam_label"]), width="stretch",
                     caption=f"Grad-CAM for the label: {r['label']} ({100 * r['p_label']:.0f} %)")
            st.caption("Grad-CAM (Selvaraju et al. 2017) on the backbone's last feature map: red = regions that "
                       "raise the class's score. `mapsage classify gradcam RUN IMAGE` draws it for any image.")
    with tabs[5]:
        cal = _artifact(rid, "calibration")
        if not cal:
            st.caption("Temperature scaling runs when the run finishes (classify.calibrate).")
        else:
            d = cal["data"]
            st.markdown(f"Temperature **T = {d['temperature']:.3f}** fitted on {d['n_images']} validation images "
                        f"(NLL {d['nll_before']:.4f} → {d['nll_after']:.4f}); ECE **{100 * d['ece_before']:.2f} % → "
                        f"{100 * d['ece_after']:.2f} %**. Predictions use it (`mapsage classify predict`).")
            st.plotly_chart(figures.reliability_diagram(d, "Reliability diagram (validation images)", unit="images"),
                            width="stretch", key="cls_calib")
    with tabs[6]:
        h = store.health(rid)
        if h.empty:
            st.caption("No health checks recorded (classify.health_checks).")
        else:
            icon = {"pass": "✓", "warn": "⚠", "fail": "✗"}
            st.dataframe(pd.DataFrame({"Check": h["check_name"], "Status": [f"{icon.get(s, '')} {s}" for s in h["status"]],
                                       "Verdict": h["verdict"]}), hide_index=True, width="stretch", key="cls_health",
                         placeholder="–")
            st.caption("Run at the start of the run (mapsage.classify.health); a failing check fails it.")
    with tabs[7]:
        try:
            st.json(json.loads(run.get("config_json") or "{}"), expanded=False)
        except ValueError:
            st.caption("No config recorded.")
    with tabs[8]:
        logs = store.logs(rid, tail=200)
        if logs.empty:
            st.caption("No log records.")
        else:
            st.code("\n".join(f"[{lv}] {m}" for lv, m in zip(logs["level"], logs["message"])), language=None)
