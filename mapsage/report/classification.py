"""Image-classification runs in a report: their experiment table (top-1, top-k, macro F1, ECE before → after
temperature scaling), per-class precision / recall / F1 / support, confusion matrices in images, the reliability
diagram before and after temperature scaling, and the mean ± sd of fold/seed groups.

Every figure comes from the store (the evaluations written by ``mapsage.metrics.classification.ClsResult.to_event``
and ingested by ``store.ingest``): top-1, top-k, macro F1, ECE and NLL from the evaluation's ``extra_json``, the
final evaluation's ``ece_calibrated`` / ``nll_calibrated`` / ``temperature`` / ``checkpoint_name``, precision /
recall (``acc``) / F1 from ``class_metrics``, the support of a class = its label row of the stored confusion matrix.
The reliability diagram reads the run's ``calibration.json`` (its ``calibration`` artifact: bins before and after),
else the final evaluation's own bins (before only). Nothing is recomputed from predictions.

A run is a classification run when its evaluations say so (``ReportData.classification_run_ids``); the
segmentation tables of :mod:`mapsage.report.tables` leave such runs out, so a mixed report shows both tables, each
with its own runs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from mapsage import figures
from mapsage.registries import CLASSIFICATION_COLUMNS

from . import plots
from .data import ReportData, is_missing, json_dict, num
from .htmlreport import Cell, f_epoch, f_float, f_int, f_pts, f_text, f_wrap, view
from .markdown import _table, md_escape
from .tables import _all_domain, _epoch, _ints, latest_evaluations

RUN_COLUMNS = list(CLASSIFICATION_COLUMNS)
FIGURES = ["top1", "top5", "macro_f1", "ece", "ece_calibrated", "temperature", "nll", "nll_calibrated"]
EXPERIMENT_COLUMNS = ["run", "run_id", "kind", "status", "split", "variant", "epoch", "checkpoint", "n_images",
                      *RUN_COLUMNS, *FIGURES, "topk", "dataset", "cv_group", "cv_fold", "seed", "eval_seq"]
PER_CLASS_COLUMNS = ["run", "run_id", "split", "variant", "epoch", "checkpoint", "class_id", "class_name",
                     "precision", "recall", "f1", "support", "excluded", "eval_seq"]
CONFUSION_COLUMNS = ["run", "run_id", "split", "variant", "epoch", "label_id", "label_class", "pred_id",
                     "pred_class", "images", "eval_seq"]
GROUP_COLUMNS = ["group", "split", "runs", "folds", "seeds", "variants", "top1_mean", "top1_sd", "macro_f1_mean",
                 "macro_f1_sd", "n_images", "run_ids"]
MD_MAX_CLASSES = 20          # a confusion matrix wider than this is left to the HTML report and the CSV


# --------------------------------------------------------------------------------------------------------------
# tables (store units: fractions; the CSV files hold these)


def _checkpoint(e: Any, extra: dict) -> Optional[str]:
    """The weights an evaluation measured: the kept checkpoint's file name, else the in-training weights."""
    name = extra.get("checkpoint_name")
    if not name and not is_missing(e.get("checkpoint")):
        name = Path(str(e["checkpoint"])).name
    if name:
        return str(name)
    if not is_missing(e.get("epoch")):
        return f"weights in training (epoch {int(e['epoch']) + 1})"
    return None


def _group_facts(data: ReportData, rid: str) -> dict:
    """cv group, fold and seed of a run: ``store.groups.run_links`` (attached to the run rows by the store's report
    query), else the resolved config's ``cv.group`` / ``dataset.split.fold`` / ``train.seed``."""
    r, cfg = data.run(rid), data.config(rid)
    split = (cfg.get("dataset") or {}).get("split") or {}
    group = r.get("cv_group") if "cv_group" in r else (cfg.get("cv") or {}).get("group")
    fold = r.get("cv_fold") if "cv_fold" in r else (split.get("fold") if (split.get("folds") or 0) > 1 else None)
    seed = r.get("seed") if "seed" in r else (cfg.get("train") or {}).get("seed")
    return {"cv_group": None if is_missing(group) else str(group), "cv_fold": None if is_missing(fold) else fold,
            "seed": None if is_missing(seed) else seed}


def experiments(data: ReportData, cls: Optional[list[str]] = None) -> pd.DataFrame:
    """One row per classification run, split and weights/variant: its latest evaluation."""
    cls = data.classification_run_ids() if cls is None else cls
    latest = latest_evaluations(data)
    latest = latest[latest["run_id"].isin(cls)] if not latest.empty else latest
    labels = data.labels()
    rows = []
    for _, e in latest.iterrows():
        rid, x = e["run_id"], json_dict(e["extra_json"])
        r = data.run(rid)
        rows.append({"run": labels.get(rid, rid), "run_id": rid, "kind": r.get("kind"), "status": r.get("status"),
                     "split": e["split"], "variant": e["variant"], "epoch": _epoch(e["epoch"]),
                     "checkpoint": _checkpoint(e, x),
                     "n_images": None if is_missing(e["n_images"]) else int(e["n_images"]),
                     **{c: r.get(c) for c in RUN_COLUMNS}, **{k: num(x.get(k)) for k in FIGURES},
                     "topk": None if num(x.get("topk")) is None else int(x["topk"]),
                     "dataset": e.get("dataset") if not is_missing(e.get("dataset")) else r.get("dataset"),
                     **_group_facts(data, rid), "eval_seq": int(e["seq"])})
    return _ints(pd.DataFrame(rows, columns=EXPERIMENT_COLUMNS),
                 ["epoch", "n_images", "topk", "cv_fold", "seed", "eval_seq"])


def _matrices(data: ReportData, cls: list[str]) -> dict[tuple, tuple[np.ndarray, list[str]]]:
    """(run id, evaluation seq) -> (confusion matrix as int64, class names) of the classification runs."""
    cf = _all_domain(data.confusion)
    out = {}
    for _, c in cf[cf["run_id"].isin(cls)].iterrows():
        if c["matrix"] is None:
            continue
        m = np.asarray(c["matrix"], dtype=np.int64)
        names = list(c["class_names"]) if c["class_names"] is not None else data.class_names(c["run_id"])
        names = [str(n) for n in names] + [str(i) for i in range(len(names), m.shape[0])]
        out[(c["run_id"], int(c["seq"]))] = (m, names)
    return out


def _eval_checkpoints(data: ReportData, cls: list[str]) -> dict[tuple, Optional[str]]:
    m = data.metrics
    return {(r["run_id"], int(r["seq"])): _checkpoint(r, json_dict(r["extra_json"]))
            for _, r in m[m["run_id"].isin(cls)].iterrows()}


def per_class(data: ReportData, cls: Optional[list[str]] = None) -> pd.DataFrame:
    """Precision, recall, F1 and support (images labelled with the class) per class of each latest evaluation."""
    cls = data.classification_run_ids() if cls is None else cls
    cm = _all_domain(data.class_metrics)
    cm = cm[cm["run_id"].isin(cls)]
    if cm.empty:
        return pd.DataFrame(columns=PER_CLASS_COLUMNS)
    labels, mats, ckpts = data.labels(), _matrices(data, cls), _eval_checkpoints(data, cls)
    order = {rid: i for i, rid in enumerate(data.run_ids)}
    cm = cm.assign(_o=cm["run_id"].map(order)).sort_values(["_o", "split", "seq", "class_id"])
    rows = []
    for _, c in cm.iterrows():
        key, cid = (c["run_id"], int(c["seq"])), int(c["class_id"])
        mat = mats.get(key)
        support = int(mat[0][cid].sum()) if mat is not None and cid < mat[0].shape[0] else None
        rows.append({"run": labels.get(c["run_id"]), "run_id": c["run_id"], "split": c["split"],
                     "variant": c["variant"], "epoch": _epoch(c["epoch"]), "checkpoint": ckpts.get(key),
                     "class_id": cid, "class_name": c["class_name"], "precision": num(c["precision"]),
                     "recall": num(c["acc"]), "f1": num(c["f1"]), "support": support,
                     "excluded": bool(c["excluded"]) if not is_missing(c["excluded"]) else False,
                     "eval_seq": int(c["seq"])})
    return _ints(pd.DataFrame(rows, columns=PER_CLASS_COLUMNS), ["epoch", "support", "eval_seq"])


def confusion(data: ReportData, cls: Optional[list[str]] = None) -> pd.DataFrame:
    """The confusion matrices of the classification runs, long format (label class, predicted class, images)."""
    cls = data.classification_run_ids() if cls is None else cls
    labels, mats = data.labels(), _matrices(data, cls)
    cf = _all_domain(data.confusion)
    order = {rid: i for i, rid in enumerate(data.run_ids)}
    cf = cf[cf["run_id"].isin(cls)]
    cf = cf.assign(_o=cf["run_id"].map(order)).sort_values(["_o", "split", "seq"]) if not cf.empty else cf
    rows = []
    for _, c in cf.iterrows():
        mat = mats.get((c["run_id"], int(c["seq"])))
        if mat is None:
            continue
        m, names = mat
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                rows.append({"run": labels.get(c["run_id"]), "run_id": c["run_id"], "split": c["split"],
                             "variant": c["variant"], "epoch": _epoch(c["epoch"]), "label_id": i,
                             "label_class": names[i], "pred_id": j, "pred_class": names[j], "images": int(m[i, j]),
                             "eval_seq": int(c["seq"])})
    return _ints(pd.DataFrame(rows, columns=CONFUSION_COLUMNS), ["epoch"])


def headline(exp: pd.DataFrame) -> pd.DataFrame:
    """Per run: its final evaluation (the kept checkpoint, after training) on the run's split, else its latest."""
    if exp.empty:
        return exp
    e = exp.assign(_final=exp["epoch"].isna(), _o=range(len(exp)))
    e = e.sort_values(["_final", "eval_seq"], kind="stable").groupby("run_id", sort=False).tail(1)
    return e.sort_values("_o").drop(columns=["_final", "_o"]).reset_index(drop=True)


def _mean_sd(values: pd.Series) -> tuple[Optional[float], Optional[float]]:
    """Mean and sample sd (n - 1, as ``store.groups.t_interval``) of the figures a group has."""
    v = [x for x in (num(a) for a in values) if x is not None]
    if not v:
        return None, None
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else None)


def groups(exp: pd.DataFrame) -> pd.DataFrame:
    """Fold/seed groups (``cv.group``) with at least two classification runs in the report: mean ± sd of top-1 and
    macro F1 over each run's headline evaluation (:func:`headline`), per split."""
    head = headline(exp)
    rows = []
    if not head.empty:
        head = head[head["cv_group"].notna()]
    for (gid, split), part in (head.groupby(["cv_group", "split"], sort=False) if len(head) else []):
        if len(part) < 2:
            continue
        t_mean, t_sd = _mean_sd(part["top1"])
        f_mean, f_sd = _mean_sd(part["macro_f1"])
        folds = sorted({int(f) for f in part["cv_fold"].dropna()})
        rows.append({"group": gid, "split": split, "runs": len(part), "folds": ", ".join(map(str, folds)) or None,
                     "seeds": ", ".join(str(int(s)) for s in sorted(set(part["seed"].dropna()))) or None,
                     "variants": ", ".join(sorted(set(part["variant"].dropna()))), "top1_mean": t_mean,
                     "top1_sd": t_sd, "macro_f1_mean": f_mean, "macro_f1_sd": f_sd,
                     "n_images": ", ".join(str(int(n)) for n in part["n_images"].dropna()) or None,
                     "run_ids": ";".join(part["run_id"])})
    return pd.DataFrame(rows, columns=GROUP_COLUMNS)


def classification_tables(data: ReportData) -> dict[str, pd.DataFrame]:
    """The ``cls_*`` fields of :class:`~mapsage.report.tables.ReportTables`."""
    cls = data.classification_run_ids()
    exp = experiments(data, cls)
    return {"cls_experiments": exp, "cls_per_class": per_class(data, cls), "cls_confusion": confusion(data, cls),
            "cls_groups": groups(exp)}


def calibration(data: ReportData, run_id: str) -> Optional[dict]:
    """The reliability card of a run's temperature scaling, in the shape ``reliability._diagram`` draws:
    ``ece_before``, ``ece_after``, ``temperature``, ``diagram_before`` / ``diagram_after`` (bins: conf, acc,
    count), ``split``, ``n_images``, ``variant``, ``source``."""
    a = data.artifacts
    a = a[(a["run_id"] == run_id) & (a["kind"] == "calibration")] if not a.empty else a
    for _, art in a.iloc[::-1].iterrows():
        try:
            d = json.loads(Path(str(art["abs_path"])).read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            continue
        if isinstance(d, dict):
            return {"source": "calibration.json", "split": d.get("split"), "n_images": d.get("n_images"),
                    "variant": None if is_missing(art.get("variant")) else art.get("variant"),
                    "temperature": num(d.get("temperature")), "ece_before": num(d.get("ece_before")),
                    "ece_after": num(d.get("ece_after")), "diagram_before": d.get("bins_before") or {},
                    "diagram_after": d.get("bins_after") or {}}
    m = _all_domain(data.metrics)
    m = m[(m["run_id"] == run_id) & m["epoch"].isna()].sort_values("seq") if not m.empty else m
    for _, e in m.iloc[::-1].iterrows():
        x = json_dict(e["extra_json"])
        if x.get("calibration_bins"):
            return {"source": "store", "split": e["split"], "variant": e["variant"],
                    "n_images": None if is_missing(e["n_images"]) else int(e["n_images"]),
                    "temperature": num(x.get("temperature")), "ece_before": num(x.get("ece")),
                    "ece_after": num(x.get("ece_calibrated")), "diagram_before": x["calibration_bins"],
                    "diagram_after": {}}
    return None


def error_gallery(data: ReportData, run_id: str) -> Optional[str]:
    """A line about the run's error gallery (``predictions/errors.json``), or None."""
    a = data.artifacts
    a = a[(a["run_id"] == run_id) & (a["kind"] == "cls_errors")] if not a.empty else a
    if a.empty:
        return None
    art = a.iloc[-1]
    n = json_dict(art.get("meta_json")).get("n_errors")
    what = f"{int(n)} misclassified images" if num(n) is not None else "the misclassified images"
    return (f"Error gallery: {what}, the most confident mistakes with thumbnails and Grad-CAM overlays, in the run "
            f"folder ({art['path']}).")


# --------------------------------------------------------------------------------------------------------------
# rendering helpers shared by HTML and Markdown


def pts(v: Any) -> str:
    x = num(v)
    return "–" if x is None else f"{100 * x:.2f}"


def ece_text(before: Any, after: Any) -> str:
    """ECE in points, ``before → after`` temperature scaling where the evaluation has both."""
    if num(after) is None:
        return pts(before)
    return f"{pts(before)} → {pts(after)}"


def mean_sd_text(mean: Any, sd: Any) -> str:
    if num(mean) is None:
        return "–"
    return pts(mean) + ("" if num(sd) is None else f" ± {pts(sd)}")


def temp_text(v: Any) -> str:
    x = num(v)
    return "–" if x is None else f"{x:.3f}"


def epoch_text(v: Any) -> str:
    return "final" if is_missing(v) else str(int(v) + 1)


def evaluation_heading(g: pd.DataFrame) -> str:
    """"run · weights · split · epoch · checkpoint" of one evaluation's per-class rows."""
    f = g.iloc[0]
    ck = "" if is_missing(f["checkpoint"]) else f" · {f['checkpoint']}"
    when = "final evaluation" if is_missing(f["epoch"]) else f"epoch {int(f['epoch']) + 1}"
    return f"{f['run']} · {f['variant']} · split {f['split']} · {when}{ck}"


def evaluations(per_class_df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(run id, rows) of each evaluation in a per-class table, in table order."""
    if per_class_df.empty:
        return []
    keys = list(dict.fromkeys(zip(per_class_df["run_id"], per_class_df["eval_seq"])))
    return [(rid, per_class_df[(per_class_df["run_id"] == rid) & (per_class_df["eval_seq"] == seq)])
            for rid, seq in keys]


def class_label(name: Any, excluded: Any) -> str:
    return f"{name} (absent: no label, no prediction)" if bool(excluded) else str(name)



# --------------------------------------------------------------------------------------------------------------
# HTML


def _num_cell(text: str):
    return Cell(text, "num")


def _experiments_view(t):
    e = t.cls_experiments
    e = e.assign(_ece=[ece_text(b, a) for b, a in zip(e["ece"], e["ece_calibrated"])],
                 _nll=[("–" if num(b) is None else f"{b:.3f}") + ("" if num(a) is None else f" → {a:.3f}")
                       for b, a in zip(e["nll"], e["nll_calibrated"])])
    return view(e, [
        ("run", "run", f_text), ("split", "split", f_text), ("variant", "weights / variant", f_text),
        ("epoch", "epoch", f_epoch), ("checkpoint", "checkpoint", f_wrap),
        ("n_images", "images", f_int, "images of the split the figures were measured on"),
        ("backbone", "Backbone", f_text), ("pretrain", "Pretrain", f_text), ("loss", "Loss", f_text),
        ("aug", "Aug", f_text), ("size", "Size", f_text),
        ("top1", "top-1 %", f_pts, "accuracy of the top prediction over the split named in the split column"),
        ("top5", "top-5 %", f_pts, "label among the k most probable classes (k = min(5, classes))"),
        ("macro_f1", "macro F1 %", f_pts, "mean F1 over the classes present in labels or predictions"),
        ("_ece", "ECE % (before → after T)", _num_cell,
         "expected calibration error, 15 fixed bins; after: with the temperature fitted on this split"),
        ("temperature", "T", f_float(3), "temperature fitted by NLL on the split (final evaluation only)"),
        ("_nll", "NLL (before → after T)", _num_cell)],
        "No classification evaluation stored for these runs yet.", "classification-table")


def _groups_view(t):
    g = t.cls_groups
    if g.empty:
        return None
    g = g.assign(_top1=[mean_sd_text(m, s) for m, s in zip(g["top1_mean"], g["top1_sd"])],
                 _f1=[mean_sd_text(m, s) for m, s in zip(g["macro_f1_mean"], g["macro_f1_sd"])])
    return view(g, [("group", "group", f_text), ("split", "split", f_text), ("runs", "runs", f_int),
                    ("folds", "folds", f_text), ("seeds", "seeds", f_text), ("variants", "weights", f_text),
                    ("n_images", "images per run", f_text),
                    ("_top1", "top-1 % (mean ± sd)", _num_cell), ("_f1", "macro F1 % (mean ± sd)", _num_cell)])


def _per_class_views(t, rid: str) -> list[dict]:
    out = []
    for _, g in evaluations(t.cls_per_class[t.cls_per_class["run_id"] == rid]):
        g = g.assign(_class=[class_label(n, x) for n, x in zip(g["class_name"], g["excluded"])])
        out.append({"heading": evaluation_heading(g), "table": view(g, [
            ("_class", "class", f_text), ("precision", "precision %", f_pts), ("recall", "recall %", f_pts),
            ("f1", "F1 %", f_pts), ("support", "support (images)", f_int, "images labelled with the class")])})
    return out


def _run_figures(data: ReportData, rid: str, fig_html) -> list[str]:
    """The run's confusion matrices (images) and its reliability diagram: the app's figures (Run detail of a
    classification run)."""
    label = data.labels().get(rid, rid)
    figs = []
    cf = _all_domain(data.confusion)
    cf = cf[cf["run_id"] == rid].sort_values("seq")
    mats = _matrices(data, [rid])
    for _, c in cf.iterrows():
        mat = mats.get((rid, int(c["seq"])))
        if mat is not None:
            head = f"{label} · {c['variant']} · {c['split']} · {plots.epoch_text(c['epoch'])}"
            figs.append(fig_html(figures.confusion_heatmap(mat[0], list(mat[1]), True, str(c["split"]), unit="images",
                                                           title=f"{head}: confusion (images)")))
    cal = calibration(data, rid)
    if cal is not None:
        figs.append(fig_html(figures.reliability_diagram(
            cal, f"{label}: reliability, T = {temp_text(cal['temperature'])} ({cal['split'] or '–'}, "
                 f"{cal['n_images'] or '–'} images)", unit="images")))
    return [f for f in figs if f]


def html_context(data: ReportData, t, fig_html) -> Optional[dict]:
    """What the template's Image classification section shows, or None when the report has no such run."""
    cls = data.classification_run_ids()
    if not cls:
        return None
    labels = data.labels()
    runs = []
    for rid in cls:
        notes = [n for n in (error_gallery(data, rid),) if n]
        cal = calibration(data, rid)
        if cal is not None and cal["source"] == "store":
            notes.append("calibration.json is missing: the diagram shows the stored bins before scaling only.")
        runs.append({"heading": labels.get(rid, rid), "per_class": _per_class_views(t, rid),
                     "figures": _run_figures(data, rid, fig_html), "notes": notes})
    return {"experiments": _experiments_view(t), "groups": _groups_view(t), "runs": runs}


# --------------------------------------------------------------------------------------------------------------
# Markdown


def _md_experiments(t, esc) -> list[str]:
    rows = [[esc(e["run"]), esc(e["split"]), esc(e["variant"]), epoch_text(e["epoch"]), esc(e["checkpoint"]),
             "–" if is_missing(e["n_images"]) else str(int(e["n_images"])), esc(e["backbone"]), pts(e["top1"]),
             pts(e["top5"]), pts(e["macro_f1"]), ece_text(e["ece"], e["ece_calibrated"]),
             temp_text(e["temperature"])] for _, e in t.cls_experiments.iterrows()]
    if not rows:
        return ["No classification evaluation stored.", ""]
    return [_table(["run", "split", "variant", "epoch", "checkpoint", "images", "backbone", "top-1 %", "top-5 %",
                    "macro F1 %", "ECE % (before → after T)", "T"], rows), ""]


def _md_groups(t, esc) -> list[str]:
    g = t.cls_groups
    if g.empty:
        return []
    rows = [[esc(r["group"]), esc(r["split"]), str(int(r["runs"])), esc(r["folds"]), esc(r["variants"]),
             mean_sd_text(r["top1_mean"], r["top1_sd"]), mean_sd_text(r["macro_f1_mean"], r["macro_f1_sd"])]
            for _, r in g.iterrows()]
    return ["### Fold / seed groups", "", "Mean ± sd (n − 1) over each run's final evaluation (the kept "
            "checkpoint).", "", _table(["group", "split", "runs", "folds", "weights", "top-1 %", "macro F1 %"], rows),
            ""]


def _md_run(data: ReportData, t, rid: str, esc) -> list[str]:
    lines = [f"### {esc(data.labels().get(rid, rid))}", ""]
    for _, g in evaluations(t.cls_per_class[t.cls_per_class["run_id"] == rid]):
        rows = [[esc(class_label(c["class_name"], c["excluded"])), pts(c["precision"]), pts(c["recall"]),
                 pts(c["f1"]), "–" if is_missing(c["support"]) else str(int(c["support"]))] for _, c in g.iterrows()]
        lines += [f"Per class — {esc(evaluation_heading(g))}", "",
                  _table(["class", "precision %", "recall %", "F1 %", "support (images)"], rows), ""]
        mat = _matrices(data, [rid]).get((rid, int(g["eval_seq"].iloc[0])))
        if mat is not None and len(mat[1]) <= MD_MAX_CLASSES:
            m, names = mat
            lines += ["Confusion (images; rows = label, columns = prediction)", "",
                      _table(["label / predicted", *[esc(n) for n in names]],
                             [[esc(names[i]), *[str(int(v)) for v in m[i]]] for i in range(m.shape[0])]), ""]
    cal = calibration(data, rid)
    if cal is not None:
        lines += [f"Calibration ({esc(cal['split'])}, {cal['n_images'] or '–'} images): ECE "
                  f"{ece_text(cal['ece_before'], cal['ece_after'])} % with temperature scaling, "
                  f"T = {temp_text(cal['temperature'])} (source: {esc(cal['source'])}).", ""]
    note = error_gallery(data, rid)
    return lines + ([esc(note), ""] if note else [])


def markdown_lines(data: ReportData, t) -> list[str]:
    """The Markdown section (empty when the report has no classification run)."""

    cls = data.classification_run_ids()
    if not cls:
        return []
    lines = ["## Image classification", "",
             "Latest evaluation per run, split and weights/variant (a “final” evaluation scores the kept checkpoint "
             "after training); figures are % of the split's images; ECE before → after temperature scaling.", ""]
    lines += _md_experiments(t, md_escape) + _md_groups(t, md_escape)
    for rid in cls:
        lines += _md_run(data, t, rid, md_escape)
    return lines
