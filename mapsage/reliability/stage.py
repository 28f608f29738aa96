"""Stage kind ``reliability`` (``mapsage.reliability.stage:run``): the reliability card of one checkpoint.

For ``stage.checkpoint`` (a run id resolves to its best checkpoint, raw or EMA, as the evaluate stage does) on
``eval.split`` (``reliability.max_tiles`` tiles spread over it, or all), single view (no TTA):

1. **Clean** scoring, with the calibration evidence collected on the way (:mod:`.calibration`).
2. **Corruptions**: every ``reliability.corruptions`` × ``reliability.severities`` pass (:mod:`.corruptions`),
   scored by the one metrics engine: mIoU, Boundary IoU, mAcc, aAcc, Dice per pass; clouds also on the clear and
   on the occluded pixels apart. Summary: mean corrupted mIoU / mBIoU and relative robustness (mean corrupted mIoU
   ÷ clean mIoU), per corruption and overall.
3. **Calibration**: ECE before and after temperature scaling (T fitted by NLL on these validation pixels; also
   cross-fitted on halves of the tiles), per-class ECE, reliability diagrams. ``calibration.json`` holds T;
   inference uses it where ``eval.temperature`` is set to it.
4. **Extent invariance** (:mod:`.extent`).
5. **Spatial statistics**: the checkpoint's training run's last validation scored raw and EMA weights on the same
   tiles; their paired bootstrap over spatial blocks (``reliability.block_by``) beside the tile-wise one, with the
   minimum detectable effect, and the same for clean vs each corruption's middle severity.

Events: ``run_info`` (``parent_run`` = the checkpoint's run, ``parent_relation: reliability``), one
``reliability`` event per section (``section``: corruption | calibration | extent | bootstrap; the payloads are in
:func:`run`), an ``artifact`` of kind ``calibration`` (``calibration.json``) and of kind ``reliability``
(``reliability.json``, the whole card), a ``log`` line per section.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import UserError
from ..evalid import checkpoint_epoch, file_hash
from ..events import EVENTS_FILE, read_events
from ..metric_names import HEADLINE
from ..workspace import run_dir as run_folder


def _summary(m) -> dict[str, Optional[float]]:
    r = m.result()
    return {k: r.summary[k] for k in HEADLINE}


def _nanmean(xs) -> Optional[float]:
    v = [x for x in xs if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else None


def corruption_summary(clean: dict, rows: list[dict]) -> dict[str, Any]:
    """Mean corrupted mIoU / mBIoU and relative robustness, overall and per corruption (rows as the stage writes
    them: ``corruption``, ``severity``, ``miou``, ``mbiou``)."""
    out: dict[str, Any] = {"clean_miou": clean.get("miou"), "clean_mbiou": clean.get("mbiou")}
    out["mean_corrupted_miou"] = _nanmean(r["miou"] for r in rows)
    out["mean_corrupted_mbiou"] = _nanmean(r["mbiou"] for r in rows)
    c = clean.get("miou")
    out["relative_robustness"] = (out["mean_corrupted_miou"] / c) if c and out["mean_corrupted_miou"] is not None \
        else None
    cb = clean.get("mbiou")
    out["relative_robustness_mbiou"] = (out["mean_corrupted_mbiou"] / cb) if cb and \
        out["mean_corrupted_mbiou"] is not None else None
    per = {}
    for name in dict.fromkeys(r["corruption"] for r in rows):
        mine = [r for r in rows if r["corruption"] == name]
        m = _nanmean(r["miou"] for r in mine)
        per[name] = {"mean_miou": m, "relative": (m / c) if c and m is not None else None,
                     "worst_drop_points": (100 * (c - min(r["miou"] for r in mine if r["miou"] is not None)))
                     if c and any(r["miou"] is not None for r in mine) else None}
    out["per_corruption"] = per
    if per:
        worst = min(per, key=lambda k: per[k]["mean_miou"] if per[k]["mean_miou"] is not None else 9)
        out["worst_corruption"] = worst
    return out


def _parent_tiles(run_dir: Path, epoch: Optional[int]) -> dict[str, list[dict]]:
    """The last validation's tile rows per weights variant (raw, ema) of a training run folder (at ``epoch`` when
    given and present)."""

    path = Path(run_dir) / EVENTS_FILE
    if not path.is_file():
        return {}
    recs, _ = read_events(path)
    by: dict[tuple, list[dict]] = {}
    for r in recs:
        if r.get("type") == "tiles" and r.get("variant") in ("raw", "ema") and r.get("epoch") is not None:
            by[(int(r["epoch"]), r["variant"])] = r.get("rows") or []
    if not by:
        return {}
    epochs = sorted({e for e, _ in by})
    pick = epoch if epoch in epochs else epochs[-1]
    return {v: rows for (e, v), rows in by.items() if e == pick} | {"_epoch": pick}   # type: ignore[dict-item]


def compare(rows_a, rows_b, plan, n_boot: int, label_a: str, label_b: str) -> dict[str, Any]:
    """Block and tile-wise paired bootstrap of B − A (fractions) with the minimum detectable effect."""
    from ..metrics import paired_bootstrap

    res = paired_bootstrap(rows_a, rows_b, n=n_boot, seed=0, blocks=plan.ids, block_by=plan.by)
    tw = res.get("tilewise") or res
    return {"a": label_a, "b": label_b, "delta": res["delta"], "block": {
        "by": plan.by, "label": plan.label, "n_blocks": plan.n_blocks, "ci_low": res["ci_low"],
        "ci_high": res["ci_high"], "se": res["se"], "mde": res["mde"], "significant": res["significant"],
        "p_value": res["p_value"]},
        "tile": {"n_tiles": res["n_tiles"], "ci_low": tw["ci_low"], "ci_high": tw["ci_high"], "se": tw["se"],
                 "mde": tw["mde"], "significant": tw["significant"], "p_value": tw["p_value"]},
        "mbiou_delta": (res.get("mbiou") or {}).get("delta"),
        "mbiou_block": {k: (res.get("mbiou") or {}).get(k) for k in ("ci_low", "ci_high", "mde")},
        "n_boot": n_boot, "alpha": res["alpha"], "power": res["power"], "note": plan.note}


def run(ctx) -> None:
    from tqdm import tqdm

    from ..data import build_dataset
    from ..infer.checkpoints import load_checkpoint_model
    from ..infer.evaluate import device_name, resolve_device
    from ..infer.stage import check_classes
    from ..metrics.blocks import block_plan
    from .calibration import CalibrationAccumulator
    from .corruptions import LABELS, CorruptedView, check, describe_level
    from .extent import extent_invariance
    from .scoring import score, single_view

    if not ctx.is_main:
        return
    cfg = ctx.cfg
    rc = cfg.reliability
    for name in rc.corruptions:
        for sev in rc.severities:
            check(name, sev)
    device = resolve_device(cfg.runtime.device)
    if cfg.runtime.threads:
        import torch
        torch.set_num_threads(int(cfg.runtime.threads))
    model, ckpt_cfg, resolved = load_checkpoint_model(cfg.stage.checkpoint, key="stage.checkpoint",
                                                      metric=cfg.train.save_best_by)
    check_classes(cfg, ckpt_cfg, "stage.checkpoint")
    model = model.to(device).eval()
    dataset = build_dataset(cfg, cfg.eval.split, train=False)
    if len(dataset) == 0:
        raise UserError(f"eval.split '{cfg.eval.split}' has no tiles; check dataset.root and the split settings")
    ck_epoch = checkpoint_epoch(resolved.path)
    source = {"run_id": resolved.run_id, "checkpoint": str(resolved.path), "weights": resolved.weights,
              "epoch": ck_epoch, "checkpoint_sha256": file_hash(resolved.path)}
    ctx.events.emit("run_info", stage_kind="reliability", split=cfg.eval.split, device=device_name(device),
                    checkpoint=str(resolved.path), parent_run=resolved.run_id, parent_relation="reliability",
                    weights=resolved.weights, corruptions=list(rc.corruptions), severities=list(rc.severities))
    eval_cfg = single_view(cfg.eval)
    eval_cfg.temperature = None
    passes = [(None, None)] + [(c, s) for c in rc.corruptions for s in rc.severities]
    n_tiles = min(len(dataset), rc.max_tiles or len(dataset))
    total = len(passes) * n_tiles + (min(len(dataset), rc.extent_tiles or len(dataset)))
    done = [0]
    bar = tqdm(total=total, desc="reliability", unit="tile", file=sys.stderr, leave=False)

    def tick(phase: str):
        def f(step: int, steps: int):
            done[0] += 1
            bar.update(1)
            ctx.progress(step=done[0], steps=total, frac=done[0] / total, phase=phase,
                         message=f"{phase}: {step}/{steps} tiles")
        return f

    # 1 + 3. clean, with calibration evidence -------------------------------------------------------------------
    cal = CalibrationAccumulator(cfg.dataset.num_classes, cfg.dataset.ignore_index, rc.calibration_bins,
                                 rc.calibration_binning, rc.sample_per_tile)
    clean = score(model, dataset, cfg, device, eval_cfg=eval_cfg, max_tiles=rc.max_tiles,
                  hook=lambda p, lab, tile: cal.update(p, lab, tile), progress=tick("clean"),
                  should_stop=ctx.should_stop)
    if not clean.complete:
        ctx.events.log("stopped during the clean pass; no card written", level="warning")
        return
    clean_sum = _summary(clean.all)
    clean_rows = clean.all.tile_rows()

    # 2. corruptions ---------------------------------------------------------------------------------------------
    rows: list[dict] = []
    corrupted_tiles: dict[str, list[dict]] = {}
    mid = sorted(rc.severities)[len(rc.severities) // 2]
    for name, sev in passes[1:]:
        view = CorruptedView(dataset, name, sev)
        out = score(model, view, cfg, device, eval_cfg=eval_cfg, max_tiles=rc.max_tiles,
                    progress=tick(f"{name}@{sev}"), should_stop=ctx.should_stop)
        if not out.complete:
            ctx.events.log("stopped during the corruption passes; no card written", level="warning")
            return
        s = _summary(out.all)
        row = {"corruption": name, "label": LABELS[name], "severity": sev, "level": describe_level(name, sev),
               **s, "n_images": out.n_images, "seconds": out.seconds,
               "drop_points": (100 * (clean_sum["miou"] - s["miou"])) if s["miou"] is not None else None}
        if out.clear is not None:
            row.update(occluded_share=out.occluded_share, clear=_summary(out.clear),
                       occluded=_summary(out.occluded))
        rows.append(row)
        if sev == mid:
            corrupted_tiles[name] = out.all.tile_rows()
    summary = corruption_summary(clean_sum, rows)
    corr_payload = {"section": "corruption", "split": cfg.eval.split, "clean": clean_sum, "rows": rows,
                    "summary": summary, "n_images": clean.n_images, "severities": list(rc.severities),
                    "source": source}
    ctx.events.emit("reliability", **corr_payload)
    ctx.events.log(f"corruptions: clean mIoU {100 * clean_sum['miou']:.2f}, mean corrupted mIoU "
                   f"{100 * (summary['mean_corrupted_miou'] or float('nan')):.2f} over {len(rows)} passes, "
                   f"relative robustness {summary['relative_robustness'] or float('nan'):.3f}; worst: "
                   f"{summary.get('worst_corruption')}")

    # 3. calibration ---------------------------------------------------------------------------------------------
    calib = cal.result(fit=True)
    calib["classes"] = list(cfg.dataset.classes)
    cal_file = ctx.run_dir / "calibration.json"
    cal_file.write_text(json.dumps({"temperature": calib["temperature"], "source": source,
                                    "split": cfg.eval.split, "n_tiles": calib["n_tiles"],
                                    "ece_before": calib["ece_before"], "ece_after": calib["ece_after"],
                                    "fitted_by": "NLL, golden-section search over log T"}, indent=2))
    ctx.events.emit("artifact", kind="calibration", path="calibration.json", tile=None, variant=None,
                    meta={"temperature": calib["temperature"]})
    ctx.events.emit("reliability", section="calibration", split=cfg.eval.split, source=source, **calib)
    held = (calib.get("heldout") or {}).get("ece_after")
    ctx.events.log(f"calibration: T = {calib['temperature']:.3f}; ECE {100 * calib['ece_before']:.2f} % -> "
                   f"{100 * calib['ece_after']:.2f} % ({calib['n_bins']} {calib['bins']} bins"
                   + (f"; cross-fitted {100 * held:.2f} %" if held is not None else "") + ")")

    # 4. extent invariance ---------------------------------------------------------------------------------------
    ext = extent_invariance(model, dataset, cfg, device, max_tiles=rc.extent_tiles, scale=rc.extent_window_scale,
                            zone_px=rc.extent_zone_px, progress=tick("extent"), should_stop=ctx.should_stop)
    ctx.events.emit("reliability", section="extent", split=cfg.eval.split, source=source, **ext)
    if ext["rate"] is not None:
        z = {r["zone"]: r for r in ext["zones"]}
        ctx.events.log(f"extent invariance: {100 * ext['rate']:.2f} % of pixels change class between windows "
                       f"{ext['a']['tile']} and {ext['b']['tile']} shifted by {ext['b']['offset']}; seams "
                       f"{100 * (z['seam']['rate'] or 0):.2f} %, borders {100 * (z['border']['rate'] or 0):.2f} %, "
                       f"interior {100 * (z['interior']['rate'] or 0):.2f} %")
    bar.close()

    # 5. spatial statistics --------------------------------------------------------------------------------------
    group_regex = getattr(cfg.dataset.split, "group_regex", None)
    comparisons = []
    plan = block_plan([r["tile"] for r in clean_rows], rc.block_by, group_regex, rc.grid_k, rc.min_blocks)
    if resolved.run_id:
        try:
            parent = _parent_tiles(run_folder(resolved.run_id), ck_epoch)
        except UserError:
            parent = {}
        if "raw" in parent and "ema" in parent:
            tiles_p = [r["tile"] for r in parent["raw"]]
            pplan = block_plan(tiles_p, rc.block_by, group_regex, rc.grid_k, rc.min_blocks)
            try:
                c = compare(parent["raw"], parent["ema"], pplan, rc.n_boot, "raw weights", "EMA weights")
                c["what"] = f"training run's validation, epoch {parent['_epoch'] + 1}"
                comparisons.append(c)
            except ValueError as exc:
                ctx.events.log(f"bootstrap raw vs EMA skipped: {exc}", level="warning")
    for name, trows in corrupted_tiles.items():
        c = compare(clean_rows, trows, plan, rc.n_boot, "clean", f"{name}@{mid}")
        c["what"] = "this card's clean and corrupted passes"
        comparisons.append(c)
    boot = {"section": "bootstrap", "split": cfg.eval.split, "comparisons": comparisons,
            "block_by": plan.by, "blocks": plan.label, "n_blocks": plan.n_blocks, "n_tiles": plan.n_tiles,
            "note": plan.note, "source": source,
            "mde_points": comparisons[0]["block"]["mde"] * 100 if comparisons else None}
    ctx.events.emit("reliability", **boot)
    if comparisons:
        c = comparisons[0]
        ctx.events.log(f"bootstrap {c['b']} − {c['a']}: Δ mIoU {100 * c['delta']:+.2f} points, {plan.by} blocks "
                       f"[{100 * c['block']['ci_low']:+.2f}, {100 * c['block']['ci_high']:+.2f}] vs tile-wise "
                       f"[{100 * c['tile']['ci_low']:+.2f}, {100 * c['tile']['ci_high']:+.2f}]; minimum detectable "
                       f"effect {100 * c['block']['mde']:.2f} points ({c['block']['label']})")

    card = {"corruption": corr_payload, "calibration": calib, "extent": ext, "bootstrap": boot, "source": source}
    (ctx.run_dir / "reliability.json").write_text(json.dumps(_json_safe(card), indent=1))
    ctx.events.emit("artifact", kind="reliability", path="reliability.json", tile=None, variant=None, meta={})
    ctx.progress(force=True, frac=1.0, phase="done", message="reliability card written")


def _json_safe(v):
    if isinstance(v, float):
        return v if np.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return _json_safe(v.item())
    return v
