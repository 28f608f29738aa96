"""A/B decisions as the pages show them: pending until every variant is evaluated on the same tiles, and the
paired-bootstrap interval of the deciding delta (over the tiles both sides scored), with a note when the threshold
is finer than what those tiles can resolve."""
from __future__ import annotations

import json
from typing import Any, Optional

import pandas as pd

import store
from mapsage.registries import DECIDING_KINDS

ACTIVE = ("queued", "running")


def pending_runs(runs: pd.DataFrame, ab: pd.DataFrame) -> pd.DataFrame:
    """Deciding runs (TTA, refinement, ensemble A/B, evaluations with post-processing) whose decision is not
    final: the run is still queued or running, or it wrote no decision rows."""
    if runs is None or runs.empty:
        return pd.DataFrame()
    deciding = runs["kind"].isin(DECIDING_KINDS) | ((runs["kind"] == "evaluate")
                                                    & runs["post"].fillna("off").ne("off"))
    decided = set(ab["run_id"]) if ab is not None and not ab.empty else set()
    out = runs[deciding & (runs["status"].isin(ACTIVE) | ~runs["run_id"].isin(decided))]
    return out[~out["status"].isin(("failed", "cancelled", "died")) | ~out["run_id"].isin(decided)]


def evaluated_so_far(run_id: str) -> pd.DataFrame:
    ev = store.evaluations_with_roles(run_id, domain="all")
    return ev[["variant", "identity", "miou", "mbiou", "tile_count", "tile_hash"]] if not ev.empty else ev


def interval(run_id: str, split: str, variant: str, baseline: str, criterion: str, threshold: Optional[float],
             n: int = 1000) -> Optional[dict[str, Any]]:
    """Paired bootstrap (``mapsage.metrics.paired_bootstrap``) of the variant against its baseline on the tiles
    both scored: ``{delta, low, high, n_tiles, resolves}`` in points of ``criterion``; None without tile rows."""
    from mapsage.metrics import paired_bootstrap

    if variant == baseline:
        return None
    a = store.tiles(run_id, split=split, variant=baseline)
    b = store.tiles(run_id, split=split, variant=variant)
    if a.empty or b.empty:
        return None
    from mapsage.metrics.blocks import block_plan

    cfg = (store.run(run_id) or {}).get("config") or {}
    plan = block_plan(list(a["tile"].astype(str)), (cfg.get("reliability") or {}).get("block_by", "auto"),
                      ((cfg.get("dataset") or {}).get("split") or {}).get("group_regex"))
    boot = paired_bootstrap(a, b, n=n, seed=0, blocks=plan.ids, block_by=plan.by)
    tw = boot.get("tilewise") or boot
    d = tw if criterion == "miou" else tw.get("mbiou")
    blk = boot if criterion == "miou" else boot.get("mbiou")
    if not d:
        return None
    half = (d["ci_high"] - d["ci_low"]) * 50.0
    mde = (blk or d)["mde"] * 100
    return {"delta": d["delta"] * 100, "low": d["ci_low"] * 100, "high": d["ci_high"] * 100,
            "n_tiles": int(boot["n_tiles"]), "half_width": half,
            "resolves": threshold is None or abs(float(threshold)) >= half,
            # spatial blocks (scenes, or a grid per scene): the interval and the minimum detectable effect
            "block_low": (blk or d)["ci_low"] * 100, "block_high": (blk or d)["ci_high"] * 100, "mde": mde,
            "blocks": plan.label, "detectable": threshold is None or abs(float(threshold)) >= mde}


def throughput_cells(details: object) -> dict:
    """The spread of a row's warm, repeated timings and its speed against the baseline, as table text."""
    try:
        d = json.loads(details) if isinstance(details, str) and details else {}
    except ValueError:
        d = {}
    tp, vs = d.get("throughput") or {}, d.get("speed_vs_baseline")
    dev = tp.get("device") or d.get("device")
    if tp.get("threads") and dev and "threads" not in str(dev):
        dev = f"{dev} ({tp['threads']} threads)"
    cell = (f"{tp['median']:.3g} [{tp['q1']:.3g}–{tp['q3']:.3g}] (n={tp['n']})" if tp.get("median") else "–")
    if not vs:
        return {"spread": cell, "vs": "–", "device": dev}
    word = "faster" if vs["ratio"] >= 1 else "slower"
    ratio = vs["ratio"] if vs["ratio"] >= 1 else 1 / vs["ratio"]
    txt = "within noise" if vs["within_noise"] else f"{ratio:.2f}× {word}"
    return {"spread": cell, "vs": txt, "device": dev}
