"""The report's Markdown summary: provenance, the experiment table, the differences with their intervals and the
A/B decisions, in points with each figure's split. User text is escaped for Markdown *and* HTML (Markdown viewers
pass raw HTML through): ``<``, ``>``, ``&`` become entities and Markdown's own syntax characters are
backslash-escaped."""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

from .data import ReportData, is_missing, num
from .tables import ReportTables, build_tables

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def md_escape(text: Any) -> str:
    """Text safe inside a Markdown table cell or paragraph (no HTML, no Markdown syntax, no line breaks)."""
    if is_missing(text):
        return "–"
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return " ".join(s.split())


def md_code(text: Any) -> str:
    """Text for inside a code span (taken literally by Markdown, so no entity or backslash escapes): backticks
    replaced, table pipes escaped, one line."""
    if is_missing(text):
        return "–"
    return " ".join(str(text).replace("`", "'").replace("|", "\\|").split())


def _pts(v: Any, signed: bool = False) -> str:
    x = num(v)
    if x is None:
        return "–"
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _experiment_lines(data: ReportData, t: ReportTables) -> list[str]:
    """The segmentation experiment table, then the Image classification section when the report has such runs."""
    lines = ["## Experiment table", "", "Latest evaluation per run, split and weights/variant, all domains pooled.", ""]
    rows = []
    for _, e in t.experiments.iterrows():
        rows.append([md_escape(e["run"]), md_escape(e["variant"]), md_escape(e["split"]),
                     "final" if is_missing(e["epoch"]) else str(int(e["epoch"]) + 1), md_escape(e["backbone"]),
                     md_escape(e["loss"]), md_escape(e["size"]), md_escape(e["tta"]), md_escape(e["post"]),
                     _pts(e["miou"]), _pts(e["mbiou"]), _pts(e["macc"]),
                     "–" if num(e["images_per_s"]) is None else f"{num(e['images_per_s']):.3f}"])
    from .classification import markdown_lines

    cls_lines = markdown_lines(data, t)
    lines += [_table(["run", "variant", "split", "epoch", "backbone", "loss", "size", "TTA", "post", "mIoU %",
                      "bIoU %", "mAcc %", "FPS"], rows) if rows else "No segmentation evaluation stored."
              if cls_lines else "No evaluation stored.", ""]
    return lines + cls_lines


def render_markdown(data: ReportData, tables: Optional[ReportTables] = None) -> str:
    from .htmlreport import default_title

    t = tables if tables is not None else build_tables(data)
    level = f"{100 * (1 - data.alpha):g}"
    lines = [f"# {md_escape(data.title or default_title(data))}", "",
             f"Generated {data.generated_at.strftime('%Y-%m-%d %H:%M:%S UTC')} by MapSage code "
             f"`{md_escape(data.generator_commit or 'unknown')}`. Figures are points (%) of the split named beside "
             f"them; intervals are {level} % paired-bootstrap intervals over tiles ({data.n_boot} resamples, seed "
             f"{data.seed}).", ""]

    lines += ["## Runs", ""]
    rows = []
    for _, p in t.provenance.iterrows():
        rows.append([md_escape(p["run"]), f"`{md_code(p['run_id'])}`", md_escape(p["kind"]), md_escape(p["status"]),
                     md_escape(p["dataset"]), md_escape(p["evaluated_splits"] or "–"),
                     f"`{md_code(p['code_commit'])}`", f"`{md_code(p['config_hash'])}`",
                     md_escape(p["created_at"])])
    lines += [_table(["run", "run id", "kind", "status", "dataset", "evaluated splits", "code commit", "config hash",
                      "created"], rows), ""]

    ext_rows = [[md_escape(r.get("name") or r["run_id"]), md_escape(r.get("external_split")),
                 md_escape(r.get("external_source")), _pts(r.get("external_miou")), _pts(r.get("best_val_miou")),
                 _pts(r.get("val_test_gap"), True)]
                for r in data.runs if not is_missing(r.get("external_miou"))]
    if ext_rows:
        lines += ["## External scores", "", "A benchmark's own figure (recorded with `mapsage runs score`) beside the "
                  "run's best validation mIoU; the gap is external − validation, in points.", "",
                  _table(["run", "split", "source", "external mIoU %", "best val mIoU %", "val→test gap"], ext_rows),
                  ""]

    lines += _experiment_lines(data, t)

    lines += ["## Differences", "", "B − A on the same tiles; *inside the noise* when the interval contains 0.", ""]
    rows = []
    for _, d in t.differences.iterrows():
        a = f"{d['run_a']} · {d['variant_a']}" if d["comparison"] != "A/B" else d["variant_a"]
        sig = d["significant_miou"]
        verdict = "–" if is_missing(sig) else ("inside the noise" if not sig else
                                               "real gain" if num(d["delta_miou"]) > 0 else "real loss")
        rows.append([md_escape(d["comparison"]), md_escape(f"{d['run_b']} · {d['variant_b']}"), md_escape(a),
                     md_escape(d["split"]), str(int(d["n_tiles"])), _pts(d["delta_miou"], True),
                     f"[{_pts(d['ci_low_miou'], True)}, {_pts(d['ci_high_miou'], True)}]", verdict,
                     _pts(d["delta_mbiou"], True),
                     f"[{_pts(d['ci_low_mbiou'], True)}, {_pts(d['ci_high_mbiou'], True)}]"])
    lines += [_table(["comparison", "B", "A", "split", "tiles", "Δ mIoU", f"{level} % CI", "verdict", "Δ bIoU",
                      f"{level} % CI (bIoU)"], rows) if rows else "No pair of evaluations on the same tiles.", ""]
    for p in t.bootstrap_problems:
        lines.append(f"- not compared: {md_escape(p.get('run_b'))} vs {md_escape(p.get('run_a'))}: "
                     f"{md_escape(p['reason'])}")
    if t.bootstrap_problems:
        lines.append("")

    lines += ["## A/B decisions", ""]
    rows = []
    for _, r in t.ab.iterrows():
        gain = num(r["gain"])
        rows.append([md_escape(r["run"]), md_escape(r["ab_kind"]), md_escape(r["split"]), md_escape(r["variant"]),
                     md_escape(r["baseline"]), f"**{md_escape(r['decision'])}**", md_escape(r["criterion"]),
                     "–" if gain is None else f"{gain:+.2f}",
                     "–" if num(r["threshold"]) is None else f"{num(r['threshold']):g}",
                     f"[{_pts(r['ci_low'], True)}, {_pts(r['ci_high'], True)}]", _pts(r["miou"]), _pts(r["mbiou"])])
    lines += [_table(["run", "kind", "split", "variant", "baseline", "decision", "criterion", "gain (points)",
                      "threshold", f"{level} % CI", "mIoU %", "bIoU %"], rows) if rows
              else "No A/B rows for these runs.", ""]

    if not t.changed_tiles.empty:
        lines += ["## Tiles that changed most", ""]
        rows = [[md_escape(c["run"]), md_escape(c["variant"]), md_escape(c["split"]), str(int(c["rank"])),
                 md_escape(c["tile"]), md_escape(c["criterion"]), _pts(c["baseline_score"]), _pts(c["variant_score"]),
                 _pts(c["delta"], True)] for _, c in t.changed_tiles.iterrows()]
        lines += [_table(["run", "variant", "split", "rank", "tile", "criterion", "baseline %", "variant %",
                          "Δ"], rows), ""]

    weak = t.per_class[(t.per_class["domain"].fillna("all") == "all") & t.per_class["iou"].notna()]
    if not weak.empty:
        lines += ["## Weakest classes", ""]
        for (run, variant, split), g in weak.groupby(["run", "variant", "split"], sort=False):
            g = g.sort_values("iou").head(3)
            lines.append(f"- {md_escape(run)} · {md_escape(variant)} ({md_escape(split)}): "
                         + ", ".join(f"{md_escape(c)} {100 * v:.1f}" for c, v in zip(g["class_name"], g["iou"])))
        lines.append("")
    if not t.verdicts.empty:
        lines += ["## Review verdicts", ""]
        rows = [[md_escape(v["run"]), md_escape(v["tile"]), md_escape(v["variant"]), md_escape(v["verdict"]),
                 md_escape(v["comment"]), md_escape(v["reviewer"])] for _, v in t.verdicts.iterrows()]
        lines += [_table(["run", "tile", "variant", "verdict", "comment", "reviewer"], rows), ""]
    if not t.config_diff.empty:
        lines += [f"## Config differences ({len(t.config_diff)} keys)", ""]
        cols = list(t.config_diff.columns)
        rows = [[md_escape(r[c]) for c in cols] for _, r in t.config_diff.head(60).iterrows()]
        lines += [_table([md_escape(c) for c in cols], rows), ""]
        if len(t.config_diff) > 60:
            lines += [f"… {len(t.config_diff) - 60} more keys in config_diff.csv and the HTML report.", ""]
    from .reliability import reliability_markdown
    lines += reliability_markdown(data)
    for n in t.notes:
        lines.append(f"> {md_escape(n)}")
    return "\n".join(lines).rstrip() + "\n"
