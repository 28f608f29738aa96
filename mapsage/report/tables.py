"""The report's tables, computed from :class:`~mapsage.report.data.ReportData` (pure pandas/numpy).

Every table keeps the store's units (fractions for metrics, points only where the store has points: A/B ``gain``
and ``threshold``) and carries the ``split`` of each figure, so its CSV can be checked against the store figure by
figure. The HTML and Markdown renderers turn fractions into points.

* ``experiments``: one row per (run, split, variant): the latest evaluation on all domains pooled, with the plan's
  experiment-table columns (backbone, pretrain, loss, aug, LR schedule, size, TTA, post, mIoU, Boundary IoU, FPS).
* ``per_class``: the per-class rows (IoU, Boundary IoU, accuracy, precision, F1) of those evaluations, per domain.
* ``confusion``: their confusion matrices, long format (label class, predicted class, pixel count).
* ``differences``: paired tile bootstrap (``mapsage.metrics.paired_bootstrap``) of each run against the reference
  (the first run) for every split and variant both scored on the same tiles, and of every A/B variant against its
  baseline within its run.
* ``ab``: the A/B decision rows (TTA, post-processing, refinement, ensembles) with their bootstrap intervals.
* ``curves``: per-epoch training scalars and validation figures.
* ``changed_tiles``: per A/B variant, the tiles whose score changed most against the baseline.
* ``config_diff``, ``provenance``, ``verdicts``, ``health``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

from ..metric_names import CURVE_METRICS, REPORT_SUMMARY
from ..registries import EXPERIMENT_COLUMNS as _EXPERIMENT_COLUMNS
from .data import ReportData, is_missing, json_dict, num

EXPERIMENT_COLUMNS = list(_EXPERIMENT_COLUMNS)
SUMMARY_METRICS = list(REPORT_SUMMARY)
IGNORED_CONFIG_KEYS = ("meta.",)


@dataclass
class ReportTables:
    experiments: pd.DataFrame
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    differences: pd.DataFrame
    bootstrap_problems: list[dict]
    ab: pd.DataFrame
    curves: pd.DataFrame
    changed_tiles: pd.DataFrame
    config_diff: pd.DataFrame
    provenance: pd.DataFrame
    verdicts: pd.DataFrame
    health: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    # image-classification runs (``mapsage.report.classification``); the tables above hold segmentation runs only
    cls_experiments: pd.DataFrame = field(default_factory=pd.DataFrame)
    cls_per_class: pd.DataFrame = field(default_factory=pd.DataFrame)
    cls_confusion: pd.DataFrame = field(default_factory=pd.DataFrame)
    cls_groups: pd.DataFrame = field(default_factory=pd.DataFrame)

    # the tables written as CSV (file stem -> frame); the classification ones only when the report has such runs
    def csv_tables(self) -> dict[str, pd.DataFrame]:
        out = {"experiments": self.experiments, "per_class": self.per_class, "confusion": self.confusion,
               "differences": self.differences, "ab": self.ab, "curves": self.curves,
               "changed_tiles": self.changed_tiles, "config_diff": self.config_diff,
               "provenance": self.provenance, "verdicts": self.verdicts, "health": self.health}
        if not self.cls_experiments.empty:
            out.update({"classification": self.cls_experiments, "classification_per_class": self.cls_per_class,
                        "classification_confusion": self.cls_confusion, "classification_groups": self.cls_groups})
        return out


# --------------------------------------------------------------------------------------------------------------
# helpers


def _run_order(data: ReportData) -> dict[str, int]:
    return {rid: i for i, rid in enumerate(data.run_ids)}


def _all_domain(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["domain"].fillna("all") == "all"]


def _epoch(v: Any) -> Optional[int]:
    return None if is_missing(v) else int(v)


def _ints(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Nullable integer columns (so a CSV writes ``3``, not ``3.0``, and an empty cell for none)."""
    for c in cols:
        if c in df.columns:
            df[c] = pd.array([None if is_missing(v) else int(v) for v in df[c]], dtype="Int64")
    return df


def _speeds(data: ReportData) -> dict[tuple, float]:
    """Inference images/s per (run, split, variant): the evaluation's speed scalars (split ``<split>:<variant>``),
    then the A/B rows' own figure where no scalar was written."""
    out: dict[tuple, float] = {}
    ab = data.ab_rows
    for _, r in ab.sort_values("seq").iterrows() if not ab.empty else []:
        v = num(r["images_per_s"])
        if v is not None:
            out[(r["run_id"], r["split"], r["variant"])] = v
    s = data.scalars
    if not s.empty:
        s = s[(s["name"] == "images_per_s") & s["split"].fillna("").str.contains(":", regex=False)]
        for _, r in s.sort_values("seq").iterrows():
            split, _, variant = str(r["split"]).partition(":")
            v = num(r["value"])
            if v is not None:
                out[(r["run_id"], split, variant)] = v
    return out


def latest_evaluations(data: ReportData) -> pd.DataFrame:
    """The latest evaluation (all domains pooled) per (run, split, variant), in run order then evaluation order."""
    m = _all_domain(data.metrics)
    if m.empty:
        return m.copy()
    m = m.sort_values("seq")
    latest = m.groupby(["run_id", "split", "variant"], dropna=False, sort=False).tail(1).copy()
    order = _run_order(data)
    latest["_order"] = latest["run_id"].map(order)
    return latest.sort_values(["_order", "seq"]).drop(columns="_order").reset_index(drop=True)


def tile_scores(rows: pd.DataFrame, metric: str = "miou") -> pd.Series:
    """Per-tile score (mean over the classes present in the label or the prediction of the tile's IoU or Boundary
    IoU), indexed by tile id."""
    fi, fu = ("intersect", "union") if metric == "miou" else ("b_intersect", "b_union")
    out = {}
    for _, r in rows.iterrows():
        inter = np.asarray(r[fi] if r[fi] is not None else [], np.float64)
        union = np.asarray(r[fu] if r[fu] is not None else [], np.float64)
        present = union > 0
        out[str(r["tile"])] = float(np.mean(inter[present] / union[present])) if present.any() else np.nan
    return pd.Series(out, dtype="float64")


# --------------------------------------------------------------------------------------------------------------
# tables


def experiments(data: ReportData) -> pd.DataFrame:
    """Segmentation runs (image-classification runs have their own table: ``classification.experiments``)."""
    labels = data.labels()
    latest = latest_evaluations(data)
    latest = latest[~latest["run_id"].isin(data.classification_run_ids())] if not latest.empty else latest
    cols = ["run", "run_id", "kind", "status", "split", "variant", "epoch", *EXPERIMENT_COLUMNS, *SUMMARY_METRICS,
            "images_per_s", "n_images", "boundary_px", "excluded_classes", "best_val_miou", "best_epoch",
            "dataset", "eval_seq"]
    rows = []
    speeds = _speeds(data)
    for _, e in latest.iterrows():
        r = data.run(e["run_id"])
        row = {"run": labels.get(e["run_id"], e["run_id"]), "run_id": e["run_id"], "kind": r.get("kind"),
               "status": r.get("status"), "split": e["split"], "variant": e["variant"], "epoch": _epoch(e["epoch"])}
        row.update({c: r.get(c) for c in EXPERIMENT_COLUMNS})
        row.update({c: num(e[c]) for c in SUMMARY_METRICS})
        row["images_per_s"] = num(e["images_per_s"])
        if row["images_per_s"] is None:
            row["images_per_s"] = speeds.get((e["run_id"], e["split"], e["variant"]))
        row["n_images"] = None if is_missing(e["n_images"]) else int(e["n_images"])
        row["boundary_px"] = None if is_missing(e["boundary_px"]) else int(e["boundary_px"])
        excl = e["excluded_classes"]
        row["excluded_classes"] = ";".join(str(x) for x in excl) if isinstance(excl, (list, tuple, np.ndarray)) \
            else (excl or "")
        row["best_val_miou"] = num(r.get("best_val_miou"))
        row["best_epoch"] = _epoch(r.get("best_epoch"))
        row["dataset"] = r.get("dataset")
        row["eval_seq"] = int(e["seq"])
        rows.append(row)
    return _ints(pd.DataFrame(rows, columns=cols), ["epoch", "n_images", "boundary_px", "best_epoch", "eval_seq"])


def per_class(data: ReportData) -> pd.DataFrame:
    labels = data.labels()
    cm = data.class_metrics
    cm = cm[~cm["run_id"].isin(data.classification_run_ids())]
    cols = ["run", "run_id", "split", "domain", "variant", "epoch", "class_id", "class_name", "iou", "biou", "acc",
            "precision", "f1", "excluded", "eval_seq"]
    if cm.empty:
        return pd.DataFrame(columns=cols)
    order = _run_order(data)
    df = cm.copy()
    df["_order"] = df["run_id"].map(order)
    df["_dom"] = (df["domain"].fillna("all") != "all").astype(int)
    df = df.sort_values(["_order", "split", "_dom", "domain", "seq", "class_id"])
    out = pd.DataFrame({
        "run": df["run_id"].map(labels), "run_id": df["run_id"], "split": df["split"], "domain": df["domain"],
        "variant": df["variant"], "epoch": df["epoch"], "class_id": df["class_id"].astype(int),
        "class_name": df["class_name"], "iou": df["iou"].map(num), "biou": df["biou"].map(num),
        "acc": df["acc"].map(num), "precision": df["precision"].map(num), "f1": df["f1"].map(num),
        "excluded": df["excluded"].map(lambda v: bool(v) if not is_missing(v) else False),
        "eval_seq": df["seq"].astype(int)})
    return _ints(out.reset_index(drop=True)[cols], ["epoch"])


def confusion(data: ReportData) -> pd.DataFrame:
    labels = data.labels()
    cols = ["run", "run_id", "split", "domain", "variant", "epoch", "label_id", "label_class", "pred_id",
            "pred_class", "pixels", "eval_seq"]
    rows = []
    order = _run_order(data)
    cf = data.confusion[~data.confusion["run_id"].isin(data.classification_run_ids())].copy()
    if cf.empty:
        return pd.DataFrame(columns=cols)
    cf["_order"] = cf["run_id"].map(order)
    for _, c in cf.sort_values(["_order", "split", "seq"]).iterrows():
        m = c["matrix"]
        if m is None:
            continue
        m = np.asarray(m, dtype=np.int64)
        names = list(c["class_names"]) if c["class_names"] is not None else data.class_names(c["run_id"])
        names = [str(n) for n in names] + [str(i) for i in range(len(names), m.shape[0])]
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                rows.append({"run": labels.get(c["run_id"]), "run_id": c["run_id"], "split": c["split"],
                             "domain": c["domain"], "variant": c["variant"], "epoch": _epoch(c["epoch"]),
                             "label_id": i, "label_class": names[i], "pred_id": j, "pred_class": names[j],
                             "pixels": int(m[i, j]), "eval_seq": int(c["seq"])})
    return _ints(pd.DataFrame(rows, columns=cols), ["epoch"])


DIFF_COLUMNS = ["comparison", "ab_kind", "run_a", "run_id_a", "variant_a", "run_b", "run_id_b", "variant_b",
                "split", "n_tiles", "miou_a", "miou_b", "delta_miou", "ci_low_miou", "ci_high_miou",
                "significant_miou", "p_miou", "mbiou_a", "mbiou_b", "delta_mbiou", "ci_low_mbiou", "ci_high_mbiou",
                "significant_mbiou", "p_mbiou", "n_boot", "seed", "alpha"]


def _bootstrap_row(rows_a: pd.DataFrame, rows_b: pd.DataFrame, data: ReportData) -> dict:
    from ..metrics import paired_bootstrap  # the one definition of the tile bootstrap

    res = paired_bootstrap(rows_a, rows_b, n=data.n_boot, seed=data.seed, alpha=data.alpha)
    b = res.get("mbiou") or {}
    return {"n_tiles": int(res["n_tiles"]), "miou_a": res["a"], "miou_b": res["b"], "delta_miou": res["delta"],
            "ci_low_miou": res["ci_low"], "ci_high_miou": res["ci_high"],
            "significant_miou": bool(res["significant"]), "p_miou": res["p_value"],
            "mbiou_a": b.get("a"), "mbiou_b": b.get("b"), "delta_mbiou": b.get("delta"),
            "ci_low_mbiou": b.get("ci_low"), "ci_high_mbiou": b.get("ci_high"),
            "significant_mbiou": bool(b["significant"]) if b else None, "p_mbiou": b.get("p_value"),
            "n_boot": int(res["n_boot"]), "seed": int(res["seed"]), "alpha": float(res["alpha"])}


def differences(data: ReportData) -> tuple[pd.DataFrame, list[dict]]:
    """Paired bootstrap rows and the comparisons that could not be made (with the reason)."""
    labels = data.labels()
    t = data.tiles
    rows: list[dict] = []
    problems: list[dict] = []

    def tiles_of(rid, split, variant) -> pd.DataFrame:
        return t[(t["run_id"] == rid) & (t["split"] == split) & (t["variant"] == variant)]

    def add(kind, ab_kind, rid_a, var_a, rid_b, var_b, split):
        ra, rb = tiles_of(rid_a, split, var_a), tiles_of(rid_b, split, var_b)
        base = {"comparison": kind, "ab_kind": ab_kind, "run_a": labels.get(rid_a), "run_id_a": rid_a,
                "variant_a": var_a, "run_b": labels.get(rid_b), "run_id_b": rid_b, "variant_b": var_b,
                "split": split}
        if ra.empty or rb.empty:
            which = [f"{labels.get(r)} · {v}" for r, v, rr in ((rid_a, var_a, ra), (rid_b, var_b, rb)) if rr.empty]
            problems.append({**base, "reason": f"no per-tile rows stored for {', '.join(which)} on {split}"})
            return
        if len(ra) < 2:
            problems.append({**base, "reason": f"only {len(ra)} tile: a bootstrap over tiles needs at least 2"})
            return
        try:
            rows.append({**base, **_bootstrap_row(ra, rb, data)})
        except ValueError as exc:
            problems.append({**base, "reason": str(exc)})

    # runs against the reference run, on every (split, variant) both have per-tile rows for
    ids = data.run_ids
    ref = ids[0]
    cls = set(data.classification_run_ids())
    ref_keys = list(dict.fromkeys(zip(t[t["run_id"] == ref]["split"], t[t["run_id"] == ref]["variant"])))
    for rid in ids[1:]:
        keys = set(zip(t[t["run_id"] == rid]["split"], t[t["run_id"] == rid]["variant"]))
        shared = [k for k in ref_keys if k in keys]
        for split, variant in shared:
            add("run vs reference", None, ref, variant, rid, variant, split)
        if not shared and rid != ref:
            problems.append({"comparison": "run vs reference", "ab_kind": None, "run_a": labels.get(ref),
                             "run_id_a": ref, "variant_a": None, "run_b": labels.get(rid), "run_id_b": rid,
                             "variant_b": None, "split": None,
                             "reason": "image classification: the tile bootstrap compares segmentation runs only"
                             if {ref, rid} & cls else "no split and weights/variant scored by both runs (the "
                             "reference's: " + (", ".join(f"{s}/{v}" for s, v in ref_keys) or "none") + ")"})
    # A/B variants against their baseline, within each run
    ab = data.ab_rows
    for _, r in ab.sort_values("seq").iterrows() if not ab.empty else []:
        if r["decision"] == "baseline" or r["variant"] == r["baseline"]:
            continue
        add("A/B", r["ab_kind"], r["run_id"], r["baseline"], r["run_id"], r["variant"], r["split"])
    df = _ints(pd.DataFrame(rows, columns=DIFF_COLUMNS), ["n_tiles", "n_boot", "seed"])
    return df, problems


AB_COLUMNS = ["run", "run_id", "ab_kind", "split", "variant", "baseline", "decision", "criterion", "gain",
              "threshold", "miou", "mbiou", "baseline_miou", "baseline_mbiou", "ci_low", "ci_high", "significant",
              "n_tiles", "images_per_s", "baseline_images_per_s", "wall_s", "tiles_better", "tiles_worse",
              "tiles_same", "rule", "seq"]


def ab_table(data: ReportData, diffs: pd.DataFrame, deltas: Optional[dict] = None) -> pd.DataFrame:
    """The A/B rows with their bootstrap interval (of the row's criterion) and tiles better / worse / same (the
    stage's own counts where it wrote them, else from the per-tile scores)."""
    labels = data.labels()
    deltas = ab_tile_deltas(data) if deltas is None else deltas
    ab = data.ab_rows
    if ab.empty:
        return pd.DataFrame(columns=AB_COLUMNS)
    order = _run_order(data)
    ab = ab.assign(_order=ab["run_id"].map(order)).sort_values(["_order", "seq"])
    rows = []
    for _, r in ab.iterrows():
        details = json_dict(r["details_json"])
        crit = r["criterion"] if not is_missing(r["criterion"]) else "miou"
        ci = diffs[(diffs["comparison"] == "A/B") & (diffs["run_id_b"] == r["run_id"])
                   & (diffs["variant_b"] == r["variant"]) & (diffs["variant_a"] == r["baseline"])
                   & (diffs["split"] == r["split"])] if not diffs.empty else diffs
        c = ci.iloc[-1] if len(ci) else None
        counts = {k: details.get(k) for k in ("tiles_better", "tiles_worse", "tiles_same")}
        d = deltas.get((r["run_id"], r["split"], r["baseline"], r["variant"]))
        if d is not None and any(v is None for v in counts.values()):
            counts = dict(zip(("tiles_better", "tiles_worse", "tiles_same"), d.counts()))
        rows.append({
            "run": labels.get(r["run_id"]), "run_id": r["run_id"], "ab_kind": r["ab_kind"], "split": r["split"],
            "variant": r["variant"], "baseline": r["baseline"], "decision": r["decision"], "criterion": crit,
            "gain": num(r["gain"]), "threshold": num(r["threshold"]), "miou": num(r["miou"]),
            "mbiou": num(r["mbiou"]), "baseline_miou": num(r["baseline_miou"]),
            "baseline_mbiou": num(r["baseline_mbiou"]),
            "ci_low": num(c[f"ci_low_{crit}"]) if c is not None else None,
            "ci_high": num(c[f"ci_high_{crit}"]) if c is not None else None,
            "significant": (bool(c[f"significant_{crit}"]) if c is not None
                            and not is_missing(c[f"significant_{crit}"]) else None),
            "n_tiles": int(c["n_tiles"]) if c is not None else details.get("n_tiles", details.get("n_images")),
            "images_per_s": num(r["images_per_s"]), "baseline_images_per_s": num(details.get("baseline_images_per_s")),
            "wall_s": num(r["wall_s"]), **counts,
            "rule": details.get("rule"),
            "seq": int(r["seq"])})
    return _ints(pd.DataFrame(rows, columns=AB_COLUMNS), ["n_tiles", "tiles_better", "tiles_worse", "tiles_same",
                                                         "seq"])


CURVE_COLUMNS = ["run", "run_id", "source", "split", "variant", "epoch", "name", "value"]


def curves(data: ReportData) -> pd.DataFrame:
    labels = data.labels()
    order = _run_order(data)
    rows = []
    s = data.scalars
    s = s[s["epoch"].notna() & (s["split"] == "train_epoch")] if not s.empty else s
    for _, r in s.iterrows():
        rows.append({"run": labels.get(r["run_id"]), "run_id": r["run_id"], "source": "train", "split": "train",
                     "variant": None, "epoch": int(r["epoch"]), "name": r["name"], "value": num(r["value"]),
                     "_seq": int(r["seq"])})
    m = _all_domain(data.metrics)
    m = m[m["epoch"].notna() & ~m["run_id"].isin(data.classification_run_ids())] if not m.empty else m
    for _, r in m.iterrows():
        for name in CURVE_METRICS:
            rows.append({"run": labels.get(r["run_id"]), "run_id": r["run_id"], "source": "eval",
                         "split": r["split"], "variant": r["variant"], "epoch": int(r["epoch"]), "name": name,
                         "value": num(r[name]), "_seq": int(r["seq"])})
    if not rows:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    df = pd.DataFrame(rows)
    df["_order"] = df["run_id"].map(order)
    df = df.sort_values(["_order", "source", "split", "name", "epoch", "_seq"])
    # one value per (run, source, split, variant, name, epoch): the last one written (a resumed epoch repeats)
    df = df.groupby(["run_id", "source", "split", "variant", "name", "epoch"], dropna=False, sort=False).tail(1)
    return _ints(df[CURVE_COLUMNS].reset_index(drop=True), ["epoch"])


CHANGED_COLUMNS = ["run", "run_id", "ab_kind", "split", "baseline", "variant", "criterion", "rank", "tile",
                   "baseline_score", "variant_score", "delta", "tiles_better", "tiles_worse", "tiles_same"]


@dataclass
class TileDeltas:
    """Per-tile scores of one A/B variant and its baseline (same run, split and tiles)."""
    criterion: str
    baseline: pd.Series
    variant: pd.Series
    delta: pd.Series            # variant - baseline, NaN dropped

    def counts(self, tol: float = 1e-9) -> tuple[int, int, int]:
        better = int((self.delta > tol).sum())
        worse = int((self.delta < -tol).sum())
        return better, worse, int(len(self.baseline.index.intersection(self.variant.index)) - better - worse)


def ab_tile_deltas(data: ReportData) -> dict[tuple, TileDeltas]:
    """``(run_id, split, baseline, variant) -> TileDeltas`` for every non-baseline A/B row whose variant and
    baseline both have stored per-tile rows; the score is the row's criterion (mIoU or Boundary IoU)."""
    out: dict[tuple, TileDeltas] = {}
    ab, t = data.ab_rows, data.tiles
    if ab.empty or t.empty:
        return out
    for _, r in ab.sort_values("seq").iterrows():
        if r["decision"] == "baseline" or r["variant"] == r["baseline"]:
            continue
        crit = r["criterion"] if r["criterion"] in ("miou", "mbiou") else "miou"
        base = t[(t["run_id"] == r["run_id"]) & (t["split"] == r["split"]) & (t["variant"] == r["baseline"])]
        var = t[(t["run_id"] == r["run_id"]) & (t["split"] == r["split"]) & (t["variant"] == r["variant"])]
        if base.empty or var.empty:
            continue
        sb, sv = tile_scores(base, crit), tile_scores(var, crit)
        common = sb.index.intersection(sv.index)
        out[(r["run_id"], r["split"], r["baseline"], r["variant"])] = TileDeltas(
            crit, sb, sv, (sv[common] - sb[common]).dropna())
    return out


def changed_tiles(data: ReportData, per_variant: Optional[int] = None,
                  deltas: Optional[dict[tuple, TileDeltas]] = None) -> pd.DataFrame:
    """Per A/B variant (non-baseline rows): the ``per_variant`` tiles whose per-tile score of the row's criterion
    changed most against the baseline (largest absolute change first, ties by tile id), from the stored per-tile
    areas."""
    k = data.thumb_tiles if per_variant is None else per_variant
    labels = data.labels()
    deltas = ab_tile_deltas(data) if deltas is None else deltas
    rows = []
    ab = data.ab_rows
    order = _run_order(data)
    ab = ab.assign(_order=ab["run_id"].map(order)).sort_values(["_order", "seq"]) if not ab.empty else ab
    for _, r in ab.iterrows():
        d = deltas.get((r["run_id"], r["split"], r["baseline"], r["variant"]))
        if d is None:
            continue
        better, worse, same = d.counts()
        ranked = sorted(d.delta.index, key=lambda tile: (-abs(d.delta[tile]), tile))
        for rank, tile in enumerate(ranked[:k], start=1):
            rows.append({"run": labels.get(r["run_id"]), "run_id": r["run_id"], "ab_kind": r["ab_kind"],
                         "split": r["split"], "baseline": r["baseline"], "variant": r["variant"],
                         "criterion": d.criterion, "rank": rank, "tile": tile,
                         "baseline_score": float(d.baseline[tile]), "variant_score": float(d.variant[tile]),
                         "delta": float(d.delta[tile]), "tiles_better": better, "tiles_worse": worse,
                         "tiles_same": same})
    return _ints(pd.DataFrame(rows, columns=CHANGED_COLUMNS), ["rank", "tiles_better", "tiles_worse", "tiles_same"])


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        if not d and prefix:
            out[prefix[:-1]] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = d
    return out


def _value_text(v: Any) -> str:
    if v is _ABSENT:
        return "(absent)"
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True, default=str)


_ABSENT = object()


def config_diff(data: ReportData) -> pd.DataFrame:
    """The resolved-config keys whose values differ between the runs (``meta`` left out): key, one column per
    run label."""
    labels = data.labels()
    flat = {rid: flatten(data.config(rid)) for rid in data.run_ids}
    cols = ["key", *[labels[r] for r in data.run_ids]]
    if len(flat) < 2:
        return pd.DataFrame(columns=cols)
    keys = sorted(set().union(*[set(f) for f in flat.values()]))
    rows = []
    for k in keys:
        if k.startswith(IGNORED_CONFIG_KEYS):
            continue
        texts = [_value_text(flat[rid].get(k, _ABSENT)) for rid in data.run_ids]
        if len(set(texts)) > 1:
            rows.append({"key": k, **{labels[rid]: tx for rid, tx in zip(data.run_ids, texts)}})
    return pd.DataFrame(rows, columns=cols)


PROVENANCE_COLUMNS = ["run", "run_id", "name", "title", "kind", "plan_stage", "status", "dataset", "run_split",
                      "evaluated_splits", "code_commit", "config_hash", "created_at", "started_at", "ended_at",
                      "host", "device", "parent_run", "checkpoint", "config_source", "launched_by"]


def _iso(v: Any) -> Optional[str]:
    if is_missing(v):
        return None
    if isinstance(v, (int, float)):
        v = pd.Timestamp(v, unit="s", tz="UTC")
    try:
        ts = pd.Timestamp(v)
    except (TypeError, ValueError):
        return str(v)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC").strftime("%Y-%m-%d %H:%M:%S UTC")


def provenance(data: ReportData) -> pd.DataFrame:
    labels = data.labels()
    m = data.metrics
    rows = []
    for r in data.runs:
        rid = r["run_id"]
        info = r.get("info") if isinstance(r.get("info"), dict) else {}
        meta = data.config(rid).get("meta") or {}
        splits = sorted(set(m[m["run_id"] == rid]["split"].dropna())) if not m.empty else []
        rows.append({
            "run": labels[rid], "run_id": rid, "name": r.get("name"), "title": r.get("title"), "kind": r.get("kind"),
            "plan_stage": None if is_missing(r.get("plan_stage")) else int(r["plan_stage"]),
            "status": r.get("status"), "dataset": r.get("dataset"), "run_split": r.get("split"),
            "evaluated_splits": ";".join(splits),
            "code_commit": r.get("code_commit") or meta.get("code_commit"),
            "config_hash": r.get("config_hash") or meta.get("config_hash"),
            "created_at": _iso(r.get("created_at")), "started_at": _iso(r.get("started_at")),
            "ended_at": _iso(r.get("ended_at")), "host": r.get("host"), "device": info.get("device"),
            "parent_run": r.get("parent_run") or info.get("parent_run"), "checkpoint": info.get("checkpoint"),
            "config_source": info.get("config_source"), "launched_by": info.get("launched_by")})
    return _ints(pd.DataFrame(rows, columns=PROVENANCE_COLUMNS), ["plan_stage"])


def verdicts(data: ReportData) -> pd.DataFrame:
    labels = data.labels()
    cols = ["run", "run_id", "tile", "variant", "baseline", "verdict", "comment", "reviewer", "time"]
    v = data.verdicts
    if v.empty:
        return pd.DataFrame(columns=cols)
    order = _run_order(data)
    v = v.assign(_order=v["run_id"].map(order)).sort_values(["_order", "verdict_id"])
    return pd.DataFrame({"run": v["run_id"].map(labels), "run_id": v["run_id"], "tile": v["tile"],
                         "variant": v["variant"], "baseline": v["baseline"], "verdict": v["verdict"],
                         "comment": v["comment"], "reviewer": v["reviewer"],
                         "time": [_iso(x) for x in v["ts"]]}, columns=cols).reset_index(drop=True)


def health(data: ReportData) -> pd.DataFrame:
    labels = data.labels()
    cols = ["run", "run_id", "check", "status", "verdict"]
    h = data.health
    if h.empty:
        return pd.DataFrame(columns=cols)
    order = _run_order(data)
    h = h.assign(_order=h["run_id"].map(order)).sort_values(["_order", "seq"])
    return pd.DataFrame({"run": h["run_id"].map(labels), "run_id": h["run_id"], "check": h["check_name"],
                         "status": h["status"], "verdict": h["verdict"]}, columns=cols).reset_index(drop=True)


def build_tables(data: ReportData) -> ReportTables:
    from . import classification as C

    diffs, problems = differences(data)
    deltas = ab_tile_deltas(data)
    notes = []
    if data.tiles.empty:
        notes.append("No per-tile rows are stored for these runs: no bootstrap interval can be given.")
    return ReportTables(experiments=experiments(data), per_class=per_class(data), confusion=confusion(data),
                        differences=diffs, bootstrap_problems=problems, ab=ab_table(data, diffs, deltas),
                        curves=curves(data), changed_tiles=changed_tiles(data, deltas=deltas),
                        config_diff=config_diff(data),
                        provenance=provenance(data), verdicts=verdicts(data), health=health(data), notes=notes,
                        **C.classification_tables(data))
