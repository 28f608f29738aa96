"""One self-contained HTML file: plotly.js inlined once in the head, every figure a ``<div>`` without its own copy,
thumbnails as ``data:`` URIs, no external URL (a Content-Security-Policy forbids any fetch). Jinja2 autoescaping
escapes every run name, title, class name, variant, comment and config value."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd
import yaml

from ..palette import class_colours
from . import plots
from .data import ReportData, is_missing, num
from .figures import figure_html
from .reliability import reliability_html
from .tables import ReportTables, build_tables
from .template import REPORT_TEMPLATE
from .thumbs import tile_thumbnails

# --------------------------------------------------------------------------------------------------------------
# table view models


@dataclass
class Col:
    label: str
    tip: Optional[str] = None


@dataclass
class Cell:
    text: str
    cls: str = ""


@dataclass
class TableView:
    columns: list[Col]
    rows: list[list[Cell]]
    empty: str = "Nothing stored for these runs."
    id: Optional[str] = None


DASH = "–"


def f_text(v: Any) -> Cell:
    return Cell(DASH if is_missing(v) or v == "" else str(v))


def f_mono(v: Any) -> Cell:
    c = f_text(v)
    c.cls = "mono"
    return c


def f_wrap(v: Any) -> Cell:
    c = f_text(v)
    c.cls = "wrap"
    return c


def f_pts(v: Any) -> Cell:
    """A fraction as points, 2 decimals."""
    x = num(v)
    return Cell(DASH if x is None else f"{100 * x:.2f}", "num")


def f_dpts(v: Any) -> Cell:
    """A difference (fraction) as signed points."""
    x = num(v)
    if x is None:
        return Cell(DASH, "num")
    return Cell(f"{100 * x:+.2f}", "num " + ("pos" if x > 0 else "neg" if x < 0 else ""))


def f_points_signed(v: Any) -> Cell:
    """A value already in points, signed."""
    x = num(v)
    if x is None:
        return Cell(DASH, "num")
    return Cell(f"{x:+.2f}", "num " + ("pos" if x > 0 else "neg" if x < 0 else ""))


def f_float(digits: int = 2) -> Callable[[Any], Cell]:
    def fmt(v: Any) -> Cell:
        x = num(v)
        return Cell(DASH if x is None else f"{x:.{digits}f}", "num")
    return fmt


def f_int(v: Any) -> Cell:
    x = num(v)
    return Cell(DASH if x is None else f"{int(x):,}", "num")


def f_epoch(v: Any) -> Cell:
    return Cell("final" if is_missing(v) else str(int(v) + 1), "num")


def f_decision(v: Any) -> Cell:
    text = DASH if is_missing(v) else str(v)
    return Cell(text, text if text in ("keep", "drop", "baseline") else "")


def f_bool(v: Any) -> Cell:
    if is_missing(v):
        return Cell(DASH)
    return Cell("yes" if bool(v) else "no")


def view(df: pd.DataFrame, spec: Sequence[tuple], empty: str = "Nothing stored for these runs.",
         id: Optional[str] = None) -> TableView:
    """``spec``: (column, label, formatter[, tooltip]) tuples; a column absent from ``df`` is skipped."""
    spec = [s for s in spec if s[0] in df.columns]
    cols = [Col(s[1], s[3] if len(s) > 3 else None) for s in spec]
    rows = [[s[2](r[s[0]]) for s in spec] for _, r in df.iterrows()]
    return TableView(cols, rows, empty, id)


def transposed(df: pd.DataFrame, header: str, spec: Sequence[tuple]) -> TableView:
    """One column per row of ``df`` (headed by its ``header`` value), one row per field of ``spec``."""
    cols = [Col("")] + [Col(str(v)) for v in df[header]] if header in df.columns else [Col("")]
    rows = []
    for s in spec:
        if s[0] not in df.columns:
            continue
        rows.append([Cell(s[1])] + [s[2](v) for v in df[s[0]]])
    return TableView(cols, rows if len(df) else [])


# --------------------------------------------------------------------------------------------------------------
# sections


SECTIONS = [("runs", "Runs"), ("experiments", "Experiment table"), ("differences", "Differences & CIs"),
            ("ab", "A/B decisions"), ("tiles", "Changed tiles"), ("classes", "Per-class"),
            ("confusion", "Confusion"), ("curves", "Curves"), ("review", "Review & health"),
            ("config", "Config diff"), ("provenance", "Provenance")]


def _ci(lo: Any, hi: Any) -> Cell:
    a, b = num(lo), num(hi)
    if a is None or b is None:
        return Cell(DASH, "num")
    return Cell(f"[{100 * a:+.2f}, {100 * b:+.2f}]", "num")


MIN_RELIABLE_TILES = 10   # below this many tiles a bootstrap interval is itself unreliable


def _verdict(sig: Any, delta: Any) -> str:
    d = num(delta)
    if is_missing(sig) or d is None:
        return DASH
    if not bool(sig):
        return "inside the noise"
    return "real gain" if d > 0 else "real loss"


def _caveat(n_tiles: Any) -> Cell:
    n = num(n_tiles)
    if n is not None and n < MIN_RELIABLE_TILES:
        return Cell(f"only {int(n)} tiles: the interval itself is unreliable", "neg")
    return Cell("")


def differences_view(diffs: pd.DataFrame, level: str) -> TableView:
    rows = []
    for _, r in diffs.iterrows():
        b_label = f"{r['run_b']} · {r['variant_b']}"
        a_label = f"{r['run_a']} · {r['variant_a']}" if r["comparison"] != "A/B" else str(r["variant_a"])
        rows.append([
            Cell(str(r["comparison"]) + (f" ({r['ab_kind']})" if not is_missing(r["ab_kind"]) else "")),
            Cell(b_label), Cell(a_label), Cell(str(r["split"])), f_int(r["n_tiles"]),
            f_pts(r["miou_a"]), f_pts(r["miou_b"]), f_dpts(r["delta_miou"]), _ci(r["ci_low_miou"], r["ci_high_miou"]),
            Cell(_verdict(r["significant_miou"], r["delta_miou"])),
            f_dpts(r["delta_mbiou"]), _ci(r["ci_low_mbiou"], r["ci_high_mbiou"]),
            Cell(_verdict(r["significant_mbiou"], r["delta_mbiou"])), _caveat(r["n_tiles"])])
    cols = [Col("comparison"), Col("B"), Col("A (reference / baseline)"), Col("split"), Col("tiles"),
            Col("mIoU A %"), Col("mIoU B %"), Col("Δ mIoU"), Col(f"{level} % CI"), Col("mIoU verdict"),
            Col("Δ Boundary IoU"), Col(f"{level} % CI "), Col("Boundary IoU verdict"), Col("caveat")]
    return TableView(cols, rows, "No pair of evaluations on the same tiles to compare (see below).", "differences-table")


def _class_wide(per_class: pd.DataFrame, metric: str, metrics: pd.DataFrame) -> TableView:
    """Rows: one evaluation (run, variant, split, domain); columns: classes, then the evaluation's own stored mean
    (mIoU / mBIoU, classes absent from label and prediction excluded)."""
    df = per_class
    means = {}
    if not metrics.empty:
        key = "miou" if metric == "iou" else "mbiou"
        means = {(r, int(q)): v for r, q, v in zip(metrics["run_id"], metrics["seq"], metrics[key])}
    if df.empty:
        return TableView([], [], "No per-class rows stored for these runs.")
    classes = list(dict.fromkeys(df.sort_values("class_id")["class_name"]))
    keys = list(dict.fromkeys(zip(df["run_id"], df["eval_seq"])))
    rows = []
    for rid, seq in keys:
        g = df[(df["run_id"] == rid) & (df["eval_seq"] == seq)]
        first = g.iloc[0]
        run, variant, split, epoch = first["run"], first["variant"], first["split"], first["epoch"]
        domain = first["domain"] if not is_missing(first["domain"]) else "all"
        vals = dict(zip(g["class_name"], g[metric]))
        excl = set(g[g["excluded"]]["class_name"])
        cells = [Cell(str(run)), Cell(str(variant)), Cell(str(split)), Cell(str(domain)), f_epoch(epoch)]
        for c in classes:
            cell = f_pts(vals.get(c))
            if c in excl:
                cell.text += " (absent)"
            cells.append(cell)
        cells.append(f_pts(means.get((rid, int(seq)))))
        rows.append(cells)
    name = "IoU" if metric == "iou" else "Boundary IoU"
    cols = [Col("run"), Col("variant"), Col("split"), Col("domain"), Col("epoch")] + \
        [Col(c, f"{name} of class {c}, % of the split") for c in classes] + [Col(f"mean {name} %")]
    return TableView(cols, rows)


def _weakest(per_class: pd.DataFrame, n: int = 3) -> str:
    df = per_class[(per_class["domain"].fillna("all") == "all") & per_class["iou"].notna()]
    if df.empty:
        return ""
    parts = []
    for (run, variant, split), g in df.groupby(["run", "variant", "split"], sort=False):
        g = g.sort_values("iou").head(n)
        parts.append(f"{run} · {variant} ({split}): " + ", ".join(f"{c} {100 * v:.1f}"
                                                                   for c, v in zip(g["class_name"], g["iou"])))
    return "; ".join(parts)


def _config_text(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, width=110) if cfg else "(no config stored)"


def render(data: ReportData, tables: Optional[ReportTables] = None, thumbnails: Optional[list] = None) -> str:
    """The report as one HTML string."""
    import jinja2
    from plotly.offline import get_plotlyjs


    t = tables if tables is not None else build_tables(data)
    thumbs = thumbnails if thumbnails is not None else tile_thumbnails(data, t.changed_tiles)
    labels = data.labels()
    level = f"{100 * (1 - data.alpha):g}"
    fig_id = iter(range(10 ** 6))

    def fig_html(fig) -> Optional[str]:
        return None if fig is None else figure_html(fig, f"fig-{next(fig_id)}")

    # runs
    runs_rows = []
    for i, r in enumerate(data.runs):
        runs_rows.append([Cell("reference" if i == 0 else str(i + 1)), Cell(labels[r["run_id"]]),
                          Cell(str(r.get("title") or DASH)), f_mono(r["run_id"]), f_text(r.get("kind")),
                          f_text(r.get("status")), f_text(r.get("dataset")), f_text(r.get("split")),
                          f_pts(r.get("best_val_miou")), f_epoch(r.get("best_epoch"))
                          if not is_missing(r.get("best_epoch")) else Cell(DASH, "num"),
                          f_text(r.get("best_variant"))])
    runs_cols = [Col("#"), Col("run"), Col("title"), Col("run id"), Col("kind"), Col("status"), Col("dataset"),
                 Col("split"), Col("best mIoU % (run's split)"), Col("best epoch"), Col("best weights")]
    if any(not is_missing(r.get("external_miou")) for r in data.runs):
        # a benchmark's own score (mapsage runs score) beside what validation promised
        runs_cols += [Col("external mIoU %"), Col("val→test gap (points)")]
        for row, r in zip(runs_rows, data.runs):
            ext, gap = r.get("external_miou"), r.get("val_test_gap")
            row += [f_pts(ext) if is_missing(ext) else
                    Cell(f"{100 * ext:.2f} ({r.get('external_split')} · {r.get('external_source')})", "num"),
                    Cell(DASH if is_missing(gap) else f"{100 * gap:+.2f}", "num")]
    runs_table = TableView(runs_cols, runs_rows)

    cls_runs = set(data.classification_run_ids())
    e = t.experiments
    experiments = view(e, [
        ("run", "run", f_text), ("variant", "weights / variant", f_text), ("split", "split", f_text),
        ("epoch", "epoch", f_epoch), ("backbone", "Backbone", f_text), ("pretrain", "Pretrain", f_text),
        ("loss", "Loss", f_text), ("aug", "Aug", f_text), ("lr_schedule", "LR schedule", f_text),
        ("size", "Size", f_text), ("tta", "TTA", f_text), ("post", "Post", f_text),
        ("miou", "mIoU %", f_pts, "mean IoU over the split named in the split column"),
        ("mbiou", "bIoU %", f_pts, "mean Boundary IoU"), ("macc", "mAcc %", f_pts), ("mf1", "Dice (mmseg mDice) %", f_pts),
        ("aacc", "aAcc %", f_pts), ("images_per_s", "FPS (img/s)", f_float(3)), ("n_images", "tiles", f_int),
        ("excluded_classes", "classes absent", f_text)],
        "No evaluation stored for these runs yet." if not cls_runs else "No segmentation evaluation among these "
        "runs: the image-classification runs are in the Image classification section.", "experiment-table")
    classification = classification_context(data, t, fig_html)

    diffs_view = differences_view(t.differences, level)
    forest = "\n".join(fig_html(f) for f in plots.forest_figures(t.differences, level)) or None
    problems = [f"{p.get('run_b') or p.get('run_id_b')}"
                + (f" · {p['variant_b']}" if p.get("variant_b") else "")
                + f" vs {p.get('run_a') or p.get('run_id_a')}"
                + (f" · {p['variant_a']}" if p.get("variant_a") else "")
                + (f" on {p['split']}" if p.get("split") else "") + f": {p['reason']}"
                for p in t.bootstrap_problems]

    ab_groups = []
    ab = t.ab
    for (rid, kind), g in ab.groupby(["run_id", "ab_kind"], sort=False) if not ab.empty else []:
        kept = [v for v, d in zip(g["variant"], g["decision"]) if d == "keep"]
        base = next(iter(g["baseline"].dropna()), DASH)
        splits = ", ".join(sorted(set(g["split"].dropna())))
        heading = f"{labels.get(rid, rid)} — {kind} A/B on split {splits}"
        tv = view(g, [
            ("variant", "variant", f_text), ("baseline", "baseline", f_text), ("split", "split", f_text),
            ("decision", "decision", f_decision), ("criterion", "criterion", f_text),
            ("gain", "gain (points)", f_points_signed), ("threshold", "threshold (points)", f_float(2)),
            ("miou", "mIoU %", f_pts), ("baseline_miou", "baseline mIoU %", f_pts),
            ("mbiou", "bIoU %", f_pts), ("baseline_mbiou", "baseline bIoU %", f_pts),
            ("ci_low", f"CI low (Δ {level} %)", f_dpts), ("ci_high", f"CI high (Δ {level} %)", f_dpts),
            ("significant", "interval excludes 0", f_bool), ("n_tiles", "tiles", f_int),
            ("tiles_better", "tiles better", f_int), ("tiles_worse", "tiles worse", f_int),
            ("images_per_s", "img/s", f_float(3)), ("wall_s", "wall s", f_float(1)), ("rule", "rule", f_text)])
        warnings = []
        for _, r in g.iterrows():
            lo, hi = num(r["ci_low"]), num(r["ci_high"])
            if r["decision"] == "keep" and lo is not None and hi is not None and lo <= 0 <= hi:
                warnings.append(f"{r['variant']} is kept on its gain of {num(r['gain']):+.2f} points, but its "
                                f"{level} % interval [{100 * lo:+.2f}, {100 * hi:+.2f}] over "
                                f"{r['n_tiles']} tiles contains 0: the gain is inside the tile-sampling noise; "
                                f"confirm on more tiles before adopting it.")
            elif r["decision"] == "drop" and lo is not None and lo > 0:
                warnings.append(f"{r['variant']} is dropped (below the threshold) although its gain is real "
                                f"({level} % interval [{100 * lo:+.2f}, {100 * hi:+.2f}] excludes 0).")
        ab_groups.append({"heading": heading, "kept": ", ".join(kept), "baseline": base, "table": tv,
                          "warnings": warnings,
                          "figure": fig_html(plots.ab_figure(g, f"{labels.get(rid, rid)}: {kind} gain over the "
                                                                f"baseline ({splits})"))})

    thumb_groups = []
    for t_ in thumbs:
        key = (t_.run_id, t_.variant, t_.baseline, t_.split)
        if not thumb_groups or thumb_groups[-1]["key"] != key:
            names = data.class_names(t_.run_id)
            thumb_groups.append({"key": key, "heading": f"{labels.get(t_.run_id, t_.run_id)}: {t_.variant} against "
                                                        f"{t_.baseline} (split {t_.split})",
                                 "legend": [{"name": n, "colour": c} for n, c in
                                            zip(names, class_colours(data.palette(t_.run_id), len(names)))],
                                 "tiles": []})
        thumb_groups[-1]["tiles"].append({
            "rank": t_.rank, "tile": t_.tile, "split": t_.split, "criterion": t_.criterion, "baseline": t_.baseline,
            "variant": t_.variant, "baseline_score": f"{100 * t_.baseline_score:.2f}",
            "variant_score": f"{100 * t_.variant_score:.2f}", "delta": f"{100 * t_.delta:+.2f}",
            "panels": t_.panels})
    if data.thumb_tiles <= 0:
        thumbs_empty = "Thumbnails were not asked for (0 tiles per variant)."
    elif t.ab.empty:
        thumbs_empty = ("None of these runs is an A/B run; thumbnails come from TTA A/B, post-processing and "
                        "refinement runs, which save their predictions (eval.save_predictions on).")
    else:
        thumbs_empty = "The A/B runs stored no per-tile rows for their variants, so no tile can be ranked."

    class_figures = [fig_html(f) for f in plots.class_figures(data, t.per_class)]

    confusion_figures = _confusion_figures(data, cls_runs, labels, fig_html)

    curve_figures = [fig_html(f) for f in plots.curve_figures(t.curves)]

    verdicts = view(t.verdicts, [("run", "run", f_text), ("tile", "tile", f_text), ("variant", "variant", f_text),
                                 ("baseline", "baseline", f_text), ("verdict", "verdict", f_text),
                                 ("comment", "comment", f_wrap), ("reviewer", "reviewer", f_text),
                                 ("time", "time", f_text)], "No review verdicts for these runs.")
    health = view(t.health, [("run", "run", f_text), ("check", "check", f_text), ("status", "status", f_text),
                             ("verdict", "verdict", f_wrap)], "No health-check rows for these runs.")
    cd = t.config_diff
    config_diff = view(cd, [(c, c, f_mono if c == "key" else f_wrap) for c in cd.columns],
                       "The resolved configs are identical (provenance keys under meta aside)."
                       if len(data.runs) > 1 else "One run: nothing to compare.")
    configs = [{"label": labels[r["run_id"]], "run_id": r["run_id"],
                "hash": r.get("config_hash") or (data.config(r["run_id"]).get("meta") or {}).get("config_hash")
                or DASH, "text": _config_text(data.config(r["run_id"]))} for r in data.runs]
    provenance = transposed(t.provenance, "run", [
        ("run_id", "run id", f_mono), ("name", "name", f_text), ("title", "title", f_wrap), ("kind", "kind", f_text),
        ("plan_stage", "plan stage", f_text), ("status", "status", f_text), ("dataset", "dataset", f_text),
        ("run_split", "run's split", f_text), ("evaluated_splits", "evaluated splits", f_text),
        ("code_commit", "code commit", f_mono), ("config_hash", "config hash", f_mono),
        ("created_at", "created", f_text), ("started_at", "started", f_text), ("ended_at", "ended", f_text),
        ("host", "host", f_text), ("device", "device", f_text), ("parent_run", "parent run (checkpoint of)", f_mono),
        ("checkpoint", "checkpoint", f_wrap), ("config_source", "config file", f_wrap),
        ("launched_by", "launched by", f_text)])

    m = data.metrics
    boundary = sorted({int(b) for b in m["boundary_px"].dropna()}) if not m.empty else []
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)
    tmpl = env.from_string(REPORT_TEMPLATE)
    datasets = sorted({str(r.get("dataset")) for r in data.runs if r.get("dataset")})
    splits = sorted(set(m["split"].dropna())) if not m.empty else []
    return tmpl.render(
        title=data.title or default_title(data), generated_at=data.generated_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        generator_commit=data.generator_commit or "unknown", runs=data.runs, datasets=", ".join(datasets) or DASH,
        splits=", ".join(splits) or DASH,
        boundary_px=(" / ".join(f"{b} px" for b in boundary) if boundary else "n px"), n_boot=data.n_boot,
        seed=data.seed, ci_level=level, sections=[{"id": i, "title": s} for i, s in sections(classification)],
        plotlyjs=get_plotlyjs(), runs_table=runs_table, experiments=experiments, classification=classification,
        differences=diffs_view,
        forest=forest, bootstrap_problems=problems, ab_groups=ab_groups, thumb_groups=thumb_groups,
        thumbs_empty=thumbs_empty, class_figures=class_figures,
        class_iou=_class_wide(t.per_class, "iou", data.metrics),
        class_biou=_class_wide(t.per_class, "biou", data.metrics),
        weakest=_weakest(t.per_class), confusion_figures=confusion_figures, curve_figures=curve_figures,
        verdicts=verdicts, health=health, config_diff=config_diff, configs=configs, provenance=provenance,
        reliability_section=_reliability_html(data))


def _confusion_figures(data: ReportData, skip: set, labels: dict, fig_html) -> list:
    """The segmentation runs' confusion matrices (pixels; the app's heatmap), all domains pooled; ``skip``:
    classification runs (their matrices, in images, are in the Image classification section)."""
    out = []
    cf = data.confusion[~data.confusion["run_id"].isin(skip)]
    if cf.empty:
        return out
    order = {rid: i for i, rid in enumerate(data.run_ids)}
    cf = cf[cf["domain"].fillna("all") == "all"].assign(_o=lambda d: d["run_id"].map(order)).sort_values(
        ["_o", "split", "seq"])
    for _, c in cf.iterrows():
        if c["matrix"] is None:
            continue
        m = np.asarray(c["matrix"], dtype=np.int64)
        names = list(c["class_names"]) if c["class_names"] is not None else data.class_names(c["run_id"])
        names = [str(n) for n in names] + [str(i) for i in range(len(names), m.shape[0])]
        head = f"{labels.get(c['run_id'])} · {c['variant']} · {plots.epoch_text(c['epoch'])}"
        out.append(fig_html(plots.confusion_figure(data, c["run_id"], m, names, head, str(c["split"]))))
    return out


def sections(classification: Optional[dict]) -> list[tuple[str, str]]:
    """The navigation: the Image classification section after the experiment table when the report has one."""
    if not classification:
        return list(SECTIONS)
    return SECTIONS[:2] + [("classification", "Classification")] + SECTIONS[2:]


def classification_context(data: ReportData, t: ReportTables, fig_html) -> Optional[dict]:
    from .classification import html_context
    return html_context(data, t, fig_html)


def _reliability_html(data: ReportData) -> str:
    return reliability_html(data)


def default_title(data: ReportData) -> str:
    labels = list(data.labels().values())
    if len(labels) <= 3:
        return "MapSage report: " + " vs ".join(labels)
    return f"MapSage report: {labels[0]} and {len(labels) - 1} other runs"
