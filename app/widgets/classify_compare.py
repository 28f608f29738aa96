"""Compare for image-classification runs: headline figures with deltas against the reference, per-class F1
side by side, a paired bootstrap of the top-1 difference where two runs were validated on the same images (same
fold), and the config diff. Read from the store and the runs' ``predictions/val_predictions.csv``."""
from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import streamlit as st

import store
from app.widgets.compare import config_diff
from mapsage import figures
from mapsage.workspace import run_dir


def _final(run_id: str) -> dict | None:
    ev = store.metrics(run_id, split="val", domain="all")
    if ev.empty:
        return None
    fin = ev[ev["epoch"].isna()]
    row = (fin if not fin.empty else ev).iloc[-1]
    try:
        extra = json.loads(row["extra_json"]) if isinstance(row["extra_json"], str) else {}
    except ValueError:
        extra = {}
    return {"seq": int(row["seq"]), "variant": row["variant"], **extra}


def _correct(run_id: str) -> dict[str, bool] | None:
    p = run_dir(run_id) / "predictions" / "val_predictions.csv"
    if not p.is_file():
        return None
    with open(p, newline="") as fh:
        return {r["filename"]: r["label"] == r["pred"] for r in csv.DictReader(fh)}


def paired_top1(a: dict[str, bool], b: dict[str, bool], n: int = 2000, seed: int = 0) -> dict | None:
    """B − A top-1 over the images both were validated on, with a percentile bootstrap 95 % interval."""
    common = sorted(set(a) & set(b))
    if len(common) < 10 or len(common) < 0.9 * max(len(a), len(b)):
        return None
    x = np.array([b[f] for f in common], float) - np.array([a[f] for f in common], float)
    rng = np.random.default_rng(seed)
    boots = x[rng.integers(0, len(x), size=(n, len(x)))].mean(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"n": len(common), "delta": float(x.mean()), "ci_low": float(lo), "ci_high": float(hi)}


def classification_compare(picked: list[str], labels: dict[str, str], rows: dict) -> None:
    ref = picked[0]
    figs = {r: _final(r) for r in picked}
    base = figs.get(ref) or {}
    table = []
    for r in picked:
        f = figs.get(r) or {}
        cfg = (rows.get(r) or {}).get("config") or {}
        sp = ((cfg.get("dataset") or {}).get("split") or {})
        row = {"Run": labels[r], "Fold": sp.get("fold") if sp.get("folds") else None,
               "Top-1": 100 * f["top1"] if "top1" in f else None,
               "Macro F1": 100 * f["macro_f1"] if "macro_f1" in f else None,
               "ECE": 100 * f["ece"] if "ece" in f else None,
               "ECE after T": 100 * f["ece_calibrated"] if f.get("ece_calibrated") is not None else None}
        if r != ref and "top1" in f and "top1" in base:
            row["Δ Top-1"] = 100 * (f["top1"] - base["top1"])
            row["Δ Macro F1"] = 100 * (f["macro_f1"] - base["macro_f1"])
        table.append(row)
    st.markdown(f"**Classification runs** (validation; the reference is `{labels[ref]}`)")
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch", placeholder="–",
                 column_config={c: st.column_config.NumberColumn(format="%+.2f" if c.startswith("Δ") else "%.2f")
                                for c in ("Top-1", "Macro F1", "ECE", "ECE after T", "Δ Top-1", "Δ Macro F1")})
    fig = figures.grouped_class_bars({labels[r]: store.per_class(r, split="val", epoch="final") for r in picked},
                                     "f1", "Per-class F1 (validation)")
    if fig.data:
        st.plotly_chart(fig, width="stretch", key="cls_cmp_pc")
    ca = _correct(ref)
    lines = []
    for r in picked[1:]:
        cb = _correct(r)
        got = paired_top1(ca, cb) if ca and cb else None
        if got is None:
            lines.append(f"- `{labels[r]}`: validated on other images than the reference (another fold) — no paired "
                         f"test; compare fold groups on the Runs page instead")
            continue
        sig = got["ci_low"] > 0 or got["ci_high"] < 0
        lines.append(f"- `{labels[r]}` − reference: top-1 {100 * got['delta']:+.2f} points over {got['n']} shared "
                     f"images, 95 % interval [{100 * got['ci_low']:+.2f}, {100 * got['ci_high']:+.2f}] — "
                     + ("significant" if sig else "inside the noise"))
    st.markdown("**Paired bootstrap of top-1 (images resampled)**\n" + "\n".join(lines))
    diff = config_diff({labels[r]: (rows.get(r) or {}).get("config") for r in picked})
    st.markdown("**Config differences**")
    if diff.empty:
        st.info("The resolved configs are identical (apart from provenance).")
    else:
        st.dataframe(diff, hide_index=True, width="stretch", placeholder="–")
