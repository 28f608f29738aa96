"""The Reliability section of exported reports: each run's reliability card (corruption robustness, calibration,
extent invariance, block bootstrap with the minimum detectable effect), runs side by side.

``ReportData.reliability`` maps a run id to its card ``{section: payload}`` (the ``reliability`` events of the
run's newest reliability run; ``store.report_queries.reliability_cards``). HTML tables and a reliability diagram
per run (the app's, :func:`mapsage.figures.reliability_diagram`); Markdown lines; a CSV-ready long table
(:func:`reliability_table`)."""
from __future__ import annotations

import html
from typing import Any

import pandas as pd

from mapsage.figures import reliability_diagram
from mapsage.metric_names import HEADLINE

from .figures import figure_html

PCT = 100.0


def _f(v, k: float = PCT, signed: bool = False) -> str:
    if v is None:
        return "–"
    return f"{k * v:+.2f}" if signed else f"{k * v:.2f}"


def summary_rows(data) -> list[dict[str, Any]]:
    """One row per run with a card: the headline figures (percent / points / ratios)."""
    out = []
    labels = data.labels()
    for rid in data.run_ids:
        card = (getattr(data, "reliability", None) or {}).get(rid)
        if not card:
            continue
        s = (card.get("corruption") or {}).get("summary") or {}
        cal = card.get("calibration") or {}
        ext = card.get("extent") or {}
        boot = card.get("bootstrap") or {}
        comp = (boot.get("comparisons") or [{}])[0]
        out.append({
            "run": labels.get(rid, rid), "clean mIoU %": _f(s.get("clean_miou")),
            "mean corrupted mIoU %": _f(s.get("mean_corrupted_miou")),
            "relative robustness": _f(s.get("relative_robustness"), 1),
            "mean corrupted BIoU %": _f(s.get("mean_corrupted_mbiou")),
            "worst corruption": s.get("worst_corruption") or "–",
            "ECE before %": _f(cal.get("ece_before")), "ECE after T %": _f(cal.get("ece_after")),
            "T": _f(cal.get("temperature"), 1),
            "extent disagreement %": _f(ext.get("rate")),
            "block CI (points)": (f"[{_f(comp['block']['ci_low'], signed=True)}, "
                                  f"{_f(comp['block']['ci_high'], signed=True)}]" if comp else "–"),
            "tile-wise CI (points)": (f"[{_f(comp['tile']['ci_low'], signed=True)}, "
                                      f"{_f(comp['tile']['ci_high'], signed=True)}]" if comp else "–"),
            "MDE (points)": _f(boot.get("mde_points"), 1), "blocks": boot.get("blocks") or "–",
        })
    return out


def reliability_table(data) -> pd.DataFrame:
    """Long table: run, corruption, severity, level, mIoU, Boundary IoU, mAcc, aAcc, mF1 (fractions)."""
    rows = []
    for rid in data.run_ids:
        card = (getattr(data, "reliability", None) or {}).get(rid) or {}
        cor = card.get("corruption") or {}
        clean = cor.get("clean") or {}
        if clean:
            rows.append({"run_id": rid, "split": cor.get("split"), "corruption": "clean", "severity": 0,
                         "level": "", **{k: clean.get(k) for k in HEADLINE}})
        for r in cor.get("rows") or []:
            rows.append({"run_id": rid, "split": cor.get("split"), "corruption": r["corruption"],
                         "severity": r["severity"], "level": r.get("level"),
                         **{k: r.get(k) for k in HEADLINE}})
    return pd.DataFrame(rows)


def _html_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _corruption_grid(card: dict) -> list[dict]:
    cor = card.get("corruption") or {}
    rows = cor.get("rows") or []
    out = []
    for name in dict.fromkeys(r["corruption"] for r in rows):
        mine = {r["severity"]: r for r in rows if r["corruption"] == name}
        rec = {"corruption": mine[min(mine)].get("label", name)}
        for s in sorted(mine):
            rec[f"severity {s}: mIoU / BIoU %"] = f"{_f(mine[s]['miou'])} / {_f(mine[s]['mbiou'])}"
        occ = [mine[s] for s in sorted(mine) if "clear" in mine[s]]
        if occ:
            rec["clear / occluded px (worst)"] = (f"{_f(min(o['clear']['miou'] or 0 for o in occ))} / "
                                                  f"{_f(min(o['occluded']['miou'] or 0 for o in occ))}")
        out.append(rec)
    return out


def reliability_html(data) -> str:
    """The section (empty string when no run has a card)."""
    summ = summary_rows(data)
    if not summ:
        return ""
    parts = ['<section id="reliability"><h2>Reliability</h2>',
             "<p>Corruptions applied at evaluation only, deterministic per tile, single view; ECE over fixed "
             "confidence bins with ignored pixels dropped, temperature fitted by NLL on validation; extent "
             "invariance = share of pixels whose class changes when the window size and grid offset change; "
             "block bootstrap resamples scenes or a grid of blocks per scene; MDE = smallest ΔmIoU detectable at "
             "95 % with 80 % power.</p>", _html_table(summ)]
    labels = data.labels()
    for i, rid in enumerate(data.run_ids):
        card = (data.reliability or {}).get(rid)
        if not card:
            continue
        parts.append(f"<h3>{html.escape(labels.get(rid, rid))}</h3>")
        parts.append(_html_table(_corruption_grid(card)))
        cal = card.get("calibration")
        if cal:
            parts.append(figure_html(reliability_diagram(cal), f"rel_diag_{i}"))
        ext = card.get("extent") or {}
        if ext.get("zones"):
            parts.append(_html_table([{"zone": z["zone"], "share of pixels %": _f(z["pixel_share"]),
                                       "disagreement rate %": _f(z["rate"]),
                                       "share of disagreements %": _f(z["disagreement_share"])}
                                      for z in ext["zones"]]))
        comps = (card.get("bootstrap") or {}).get("comparisons") or []
        if comps:
            parts.append(_html_table([{
                "comparison": f"{c['b']} − {c['a']}", "Δ mIoU": _f(c["delta"], signed=True),
                "block CI": f"[{_f(c['block']['ci_low'], signed=True)}, {_f(c['block']['ci_high'], signed=True)}]",
                "blocks": c["block"]["label"],
                "tile-wise CI": f"[{_f(c['tile']['ci_low'], signed=True)}, {_f(c['tile']['ci_high'], signed=True)}]",
                "MDE block / tile-wise": f"{_f(c['block']['mde'])} / {_f(c['tile']['mde'])}"} for c in comps]))
    parts.append("</section>")
    return "\n".join(parts)


def reliability_markdown(data) -> list[str]:
    summ = summary_rows(data)
    if not summ:
        return []
    cols = list(summ[0])
    lines = ["## Reliability", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in summ]
    return lines + [""]
