"""Comparing runs: config diff, metric deltas, per-class deltas and the paired bootstrap over tiles.

Each run contributes its *latest* evaluation on the chosen split with the chosen weights (``raw``, ``ema``,
``tta=...``): that is the evaluation whose per-tile areas the store keeps, so the deltas in the table and the
bootstrap intervals describe the same numbers. The bootstrap is :func:`mapsage.metrics.paired_bootstrap`
(tiles resampled with replacement, the same draw for both runs, dataset-level mIoU recomputed from the summed
areas); a difference whose 95 % interval contains 0 is inside the noise."""
from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np
import pandas as pd

IGNORED_KEYS = ("meta.",)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = d
    return out


def config_diff(configs: dict[str, Optional[dict]]) -> pd.DataFrame:
    """Keys whose values differ between the runs' resolved configs (``meta`` left out). Columns: key, then one
    column per run label."""
    flat = {label: flatten(cfg or {}) for label, cfg in configs.items()}
    keys = sorted(set().union(*[set(f) for f in flat.values()]) if flat else set())
    rows = []
    for k in keys:
        if k.startswith(IGNORED_KEYS):
            continue
        vals = [flat[label].get(k, "∅") for label in flat]
        texts = [json.dumps(v, sort_keys=True, default=str) if not isinstance(v, str) else v for v in vals]
        if len(set(texts)) > 1:
            rows.append({"key": k, **{label: t for label, t in zip(flat, texts)}})
    return pd.DataFrame(rows, columns=["key", *flat])


def metric_deltas(evals: dict[str, Optional[pd.Series]], reference: str) -> pd.DataFrame:
    """One row per run: mIoU, Boundary IoU, mAcc, Dice (points) and their deltas against ``reference``."""
    from mapsage.metrics.names import metric_label
    cols = [("miou", "mIoU"), ("mbiou", "Boundary IoU"), ("macc", "mAcc"), ("mf1", metric_label("mf1"))]
    ref = evals.get(reference)
    rows = []
    for label, ev in evals.items():
        row: dict[str, Any] = {"run": label, "role": "reference" if label == reference else ""}
        for c, name in cols:
            v = float(ev[c]) if ev is not None and pd.notna(ev[c]) else np.nan
            r = float(ref[c]) if ref is not None and pd.notna(ref[c]) else np.nan
            row[name] = v * 100
            row[f"Δ {name}"] = (v - r) * 100
        row["epoch"] = (int(ev["epoch"]) + 1) if ev is not None and pd.notna(ev["epoch"]) else None
        row["images"] = int(ev["n_images"]) if ev is not None and pd.notna(ev["n_images"]) else None
        rows.append(row)
    return pd.DataFrame(rows)


def class_deltas(per_class: dict[str, pd.DataFrame], reference: str, col: str = "iou") -> pd.DataFrame:
    """Long table run, class_name, class_id, delta (fraction) of ``col`` against the reference, per class name."""
    ref = per_class.get(reference)
    if ref is None or ref.empty:
        return pd.DataFrame(columns=["run", "class_id", "class_name", "delta"])
    ref_vals = ref.set_index("class_name")[col]
    out = []
    for label, rows in per_class.items():
        if label == reference or rows is None or rows.empty:
            continue
        for _, r in rows.sort_values("class_id").iterrows():
            base = ref_vals.get(r["class_name"], np.nan)
            out.append({"run": label, "class_id": int(r["class_id"]), "class_name": r["class_name"],
                        "delta": (r[col] - base) if pd.notna(r[col]) and pd.notna(base) else np.nan})
    return pd.DataFrame(out, columns=["run", "class_id", "class_name", "delta"])


def bootstrap_rows(tiles: dict[str, pd.DataFrame], reference: str, n: int = 2000, seed: int = 0,
                   group_regex: str | None = None, block_by: str = "auto"
                   ) -> tuple[pd.DataFrame, dict[str, str]]:
    """Paired bootstrap of each run against the reference. Returns (rows: run, delta, lo, hi, significant,
    p_value, n_tiles, a, b, bdelta, blo, bhi, bsignificant, and the spatial-block figures block_lo, block_hi,
    block_significant, blocks (what was resampled), mde (block) and tile_mde, in fractions; problems: run -> why
    it could not be compared). ``lo``/``hi`` stay the tile-wise interval."""
    from mapsage.metrics import paired_bootstrap
    from mapsage.metrics.blocks import block_plan

    ref = tiles.get(reference)
    rows, problems = [], {}
    if ref is None or ref.empty:
        return pd.DataFrame(), {reference: "the reference run has no per-tile rows for this split and weights"}
    for label, t in tiles.items():
        if label == reference:
            continue
        if t is None or t.empty:
            problems[label] = "no per-tile rows for this split and weights"
            continue
        try:
            plan = block_plan(list(ref["tile"].astype(str)), block_by, group_regex)
            full = paired_bootstrap(ref, t, n=n, seed=seed, blocks=plan.ids, block_by=plan.by)
        except ValueError as exc:
            problems[label] = str(exc)
            continue
        res = full.get("tilewise") or full
        res = {**full, **{k: res[k] for k in ("ci_low", "ci_high", "significant", "p_value", "se", "mde")}}
        b = full.get("mbiou") if "tilewise" not in full else (full["tilewise"].get("mbiou") or {})
        b = b or {}
        rows.append({"run": label, "delta": res["delta"], "lo": res["ci_low"], "hi": res["ci_high"],
                     "block_lo": full["ci_low"], "block_hi": full["ci_high"],
                     "block_significant": bool(full["significant"]), "mde": full["mde"], "tile_mde": res["mde"],
                     "blocks": plan.label, "block_note": plan.note,
                     "significant": bool(res["significant"]), "p_value": res["p_value"], "n_tiles": res["n_tiles"],
                     "a": res["a"], "b": res["b"], "bdelta": b.get("delta", np.nan), "blo": b.get("ci_low", np.nan),
                     "bhi": b.get("ci_high", np.nan), "bsignificant": bool(b.get("significant", False))})
    return pd.DataFrame(rows), problems


def verdict(row: pd.Series) -> str:
    if not row["significant"]:
        return "inside the noise (95 % CI contains 0)"
    return "real gain" if row["delta"] > 0 else "real loss"
