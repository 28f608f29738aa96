"""The refinement A/B stage (stage kind ``refine``): raw vs CRF vs SAM vs SAM+CRF on a validation subset.

``run(ctx)``:

1. loads the model of ``stage.checkpoint`` (a checkpoint file, a run id, ``<run id>/<file>`` or
   ``latest:<template>``; resolved by :mod:`mapsage.infer.checkpoints`, loaded with
   :func:`mapsage.models.checkpoint.load_for_inference`);
2. takes the first ``refine.max_tiles`` tiles of the ``eval.split`` split (all when null), and per tile computes
   the softmax with :func:`mapsage.infer.infer_probs` (``eval`` settings: whole/slide, TTA) and applies every
   chain of ``refine.chains`` (:class:`mapsage.refine.Refiner`); the SAM chains are skipped, with a log record
   naming ``refine.sam.checkpoint``, when SAM cannot run, and CRF still runs;
3. scores each chain with :class:`mapsage.metrics.SegMetrics` (mIoU and Boundary IoU, per tile and overall) and
   writes, per chain, a ``metrics`` event and a ``tiles`` event (variant ``refine=<chain>``), then one ``ab`` event
   per chain against ``refine=raw`` (``ab_kind`` refine, ``criterion`` mbiou, ``decision`` keep when the Boundary
   IoU gain exceeds ``refine.threshold_biou`` points, else drop; the raw row is the baseline);
4. saves per tile the label (kind ``label``), the raw prediction (kind ``pred``, variant ``refine=raw``) and each
   refined mask (kind ``refined``, variant ``refine=<chain>``) as an id PNG with a colour PNG beside it
   (``meta.color``), and registers the image itself (kind ``image``), so the Review page can draw them.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..abrule import decide, rule_text
from ..config import to_dict
from ..data import build_dataset
from ..data.normalization import get_normalization, normalize_image
from ..errors import CheckpointError, UserError
from ..evalid import model_params, split_size, stamp, stamp_checkpoint, tile_facts
from ..infer import infer_probs, resolve_device
from ..infer.checkpoints import load_checkpoint_model
from ..infer.evaluate import device_name
from ..infer.predictions import colorize, palette_array, safe_part, tile_stem
from ..infer.stage import check_classes, eval_differences
from ..metrics import SegMetrics
from ..metrics.settings import metric_kwargs
from .chains import SAM_CHAINS, Refiner, validate_chains
from .sam import SamUnavailable

ARTIFACT_DIR = "refine"


# ------------------------------------------------------------------------------------------------------------
# Files


class _MaskWriter:
    """Id PNG + colour PNG per (variant, tile), registered as artifacts."""

    def __init__(self, ctx, palette, num_classes: int, split: str):
        self.ctx = ctx
        self.root = ctx.run_dir / "predictions" / ARTIFACT_DIR
        self.lut = palette_array(palette, num_classes)
        self.split = split

    def write(self, kind: str, variant: str, tile: str, ids: np.ndarray, **meta) -> Path:
        from PIL import Image


        stem = self.root / safe_part(variant) / tile_stem(tile)
        stem.parent.mkdir(parents=True, exist_ok=True)
        ids = np.asarray(ids, dtype=np.uint8)
        id_path = stem.with_name(stem.name + ".png")
        color_path = stem.with_name(stem.name + "_color.png")
        Image.fromarray(ids).save(id_path, compress_level=1)
        Image.fromarray(colorize(ids, self.lut)).save(color_path, compress_level=1)
        rel_color = str(color_path.relative_to(self.ctx.run_dir))
        self.ctx.events.artifact(kind, id_path, tile=tile, variant=variant, split=self.split, color=rel_color,
                                 encoding="class_id", **meta)
        return id_path


# ------------------------------------------------------------------------------------------------------------
# Figures


def _tile_scores(row: dict) -> tuple[float, float]:
    """(mIoU, Boundary IoU) of one tile from its ``tiles`` row (classes present in label or prediction)."""
    def mean_ratio(num, den):
        vals = [n / d for n, d in zip(num, den) if d > 0]
        return float(np.mean(vals)) if vals else float("nan")

    return mean_ratio(row["intersect"], row["union"]), mean_ratio(row["b_intersect"], row["b_union"])


def _points(x: Optional[float]) -> Optional[float]:
    return None if x is None or not math.isfinite(x) else 100.0 * x


# ------------------------------------------------------------------------------------------------------------
# The stage


def run(ctx) -> None:
    import torch


    cfg = ctx.cfg
    rcfg = cfg.refine
    if cfg.runtime.threads:
        torch.set_num_threads(int(cfg.runtime.threads))
    chains = validate_chains(rcfg.chains)
    split = cfg.eval.split
    num_classes = cfg.dataset.num_classes
    device = resolve_device(cfg.runtime.device)

    ctx.progress(force=True, phase="load", message=f"loading {cfg.stage.checkpoint}")
    model, model_cfg, resolved = load_checkpoint_model(cfg.stage.checkpoint, key="stage.checkpoint",
                                                       metric=cfg.train.save_best_by)
    check_classes(cfg, model_cfg, "stage.checkpoint")
    ckpt = resolved.path
    model.to(device).eval()
    mean, std = get_normalization(model_cfg)
    diffs = eval_differences(cfg, model_cfg)
    if diffs:
        ctx.events.log("refinement inference settings differ from the training run's validation: "
                       + "; ".join(f"{k}: training {v[0]} vs now {v[1]}" for k, v in diffs.items())
                       + " - raw numbers here are not comparable with training-time validation", level="warning")

    dataset = build_dataset(cfg, split, train=False)
    if not dataset.has_masks:
        raise UserError(f"split '{split}' of {cfg.dataset.name} has no masks; the refinement A/B needs labels - "
                        f"set eval.split to a labelled split")
    n_total = len(dataset)
    n_tiles = n_total if rcfg.max_tiles is None else min(int(rcfg.max_tiles), n_total)
    if n_tiles <= 0:
        raise UserError(f"split '{split}' of {cfg.dataset.name} has no tiles (refine.max_tiles={rcfg.max_tiles})")

    refiner = Refiner(cfg, device=str(device))
    unavailable: dict[str, str] = {}
    if SAM_CHAINS & set(chains):
        reason = refiner.sam_unavailable()
        if reason is None:
            try:
                refiner.get_predictor()
            except (SamUnavailable, CheckpointError) as exc:
                reason = str(exc)
        if reason:
            for c in chains:
                if c in SAM_CHAINS:
                    unavailable[c] = reason
            ctx.events.log(f"SAM chains {sorted(unavailable)} skipped: {reason}", level="warning")
            chains = [c for c in chains if c not in SAM_CHAINS]

    stamp(ctx.events, dataset=cfg.dataset.name, split_size=split_size(dataset), device=device_name(device))
    stamp_checkpoint(ctx.events, resolved)
    stamp(ctx.events, params=model_params(model))
    ctx.events.emit("run_info", stage="refine", kind="refine", checkpoint=str(ckpt), parent_run=resolved.run_id,
                    weights=resolved.weights, split=split,
                    dataset=cfg.dataset.name, n_tiles=n_tiles, n_split=n_total, chains=chains,
                    unavailable_chains=unavailable, device=device_name(device),
                    sam_model=rcfg.sam.model_type if not unavailable else None)

    boundary_px = cfg.eval.boundary_px
    mkw = metric_kwargs(cfg)
    metrics = {c: SegMetrics(num_classes, keep_tiles=True, **mkw) for c in chains}
    seconds = {c: 0.0 for c in chains}
    infer_s = 0.0
    sam_totals = {"prompts": 0, "accepted": 0, "rejected": 0, "changed_pixels": 0}
    writer = _MaskWriter(ctx, list(cfg.dataset.palette), num_classes, split)
    t_start = time.perf_counter()
    done = 0
    for i in range(n_tiles):
        if ctx.should_stop():
            ctx.events.log(f"stopped after {done} of {n_tiles} tiles; figures cover those tiles", level="warning")
            break
        sample = dataset.samples[i]
        image, label = dataset.load_pair(i)
        tile = sample.id
        domain = sample.domain or ""
        x = normalize_image(image, mean, std).unsqueeze(0).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            probs = infer_probs(model, x, cfg.eval, num_classes)[0]
        probs_np = probs.float().cpu().numpy()
        infer_s += time.perf_counter() - t0
        results = refiner.run(image, probs_np, chains)
        tags = {"domain": domain} if domain else None
        per_tile = {}
        for c, res in results.items():
            metrics[c].update(res.labels, label, tags=tags, tile=tile)
            seconds[c] += res.seconds
            single = SegMetrics(num_classes, **mkw)
            single.update(res.labels, label)
            r = single.result()
            per_tile[c] = {"miou": r.miou, "mbiou": r.mbiou}
        sam_rep = next((res.sam for res in results.values() if res.sam is not None), None)
        if sam_rep is not None:
            for k in sam_totals:
                sam_totals[k] += getattr(sam_rep, k)
        # artifacts: the image, its label, the raw prediction and every refined mask
        ctx.events.artifact("image", sample.image_path, tile=tile, variant=None, split=split, domain=domain,
                            shape=list(image.shape[:2]))
        writer.write("label", "label", tile, label, domain=domain)
        for c, res in results.items():
            kind = "pred" if c == "raw" else "refined"
            meta = {"domain": domain, "chain": c, "miou": per_tile[c]["miou"], "mbiou": per_tile[c]["mbiou"],
                    "seconds": res.seconds}
            if c != "raw":
                meta["d_mbiou_points"] = _points(per_tile[c]["mbiou"] - per_tile["raw"]["mbiou"])
                meta["d_miou_points"] = _points(per_tile[c]["miou"] - per_tile["raw"]["miou"])
            if res.sam is not None:
                meta["sam"] = res.sam.to_dict()
            writer.write(kind, f"refine={c}", tile, res.labels, **meta)
        done += 1
        ctx.progress(step=done, steps=n_tiles, frac=done / n_tiles, phase="refine",
                     message=f"{split}: {done}/{n_tiles} tiles")
    if done == 0:
        ctx.events.log("no tile was refined; nothing to compare", level="warning")
        return
    wall = time.perf_counter() - t_start

    # per chain: metrics + tiles events
    results = {}
    rows = {}
    for c in chains:
        res = metrics[c].result()
        results[c] = res
        variant = f"refine={c}"
        rows[c] = metrics[c].tile_rows()
        ctx.events.emit("metrics", **res.to_event(split, "all", variant, None),
                        identity=tile_facts(r["tile"] for r in rows[c]))
        for dom, dres in metrics[c].by_tag("domain").items():
            ctx.events.emit("metrics", **dres.to_event(split, dom, variant, None),
                            identity=tile_facts(r["tile"] for r in rows[c] if r.get("domain") == dom))
        ctx.events.emit("tiles", split=split, variant=variant, rows=rows[c])

    # A/B rows against raw
    base = results["raw"]
    base_tiles = {r["tile"]: _tile_scores(r) for r in rows["raw"]}
    per_tile_infer = infer_s / done
    ctx.events.emit("ab", ab_kind="refine", variant="refine=raw", baseline="refine=raw", split=split,
                    summary=base.summary, baseline_summary=base.summary, gain=0.0, criterion="mbiou",
                    threshold=rcfg.threshold_biou, decision="baseline",
                    images_per_s=done / infer_s if infer_s > 0 else None, wall_s=infer_s,
                    details={"n_tiles": done, "device": device_name(device), "unavailable_chains": unavailable,
                             "checkpoint": str(ckpt)})
    lines = [f"refinement A/B on {done} {split} tiles of {cfg.dataset.name} "
             f"(raw mIoU {100 * base.miou:.2f}, mBIoU {100 * base.mbiou:.2f}):"]
    for c in chains:
        if c == "raw":
            continue
        res = results[c]
        gain = _points(res.mbiou - base.mbiou)
        miou_gain = _points(res.miou - base.miou)
        guard = cfg.eval.ab_guard
        # the A/B rule every decision uses (mapsage.infer.ab.decide), with the guard: a chain that sharpens
        # boundaries but costs more than eval.ab_guard mIoU points is refused
        g = float("nan") if gain is None else gain
        passed = decide(g, rcfg.threshold_biou) == "keep"
        keep = decide(g, rcfg.threshold_biou, miou_gain, guard) == "keep"
        refused = passed and not keep
        better = worse = same = 0
        for r in rows[c]:
            b = base_tiles.get(r["tile"])
            if b is None:
                continue
            d = _tile_scores(r)[1] - b[1]
            if not math.isfinite(d) or abs(d) < 1e-4:
                same += 1
            elif d > 0:
                better += 1
            else:
                worse += 1
        per_class = {name: _points(a - b) for name, a, b in zip(cfg.dataset.classes, res.biou, base.biou)
                     if math.isfinite(a) and math.isfinite(b)}
        details = {"n_tiles": done, "miou_gain": miou_gain, "guard": guard, "refused_by_guard": refused,
                   "rule": rule_text("mbiou", rcfg.threshold_biou, guard), "biou_gain_per_class": per_class,
                   "tiles_better": better, "tiles_worse": worse, "tiles_same": same,
                   "refine_s_per_tile": seconds[c] / done, "infer_s_per_tile": per_tile_infer,
                   "device": device_name(device), "unavailable_chains": unavailable,
                   "checkpoint": str(ckpt), "boundary_px": boundary_px}
        if c == "crf" or c == "sam+crf":
            details["crf"] = to_dict(rcfg.crf)
        if c in SAM_CHAINS:
            details["sam"] = {**to_dict(rcfg.sam), **sam_totals}
        total = infer_s + seconds[c]
        ctx.events.emit("ab", ab_kind="refine", variant=f"refine={c}", baseline="refine=raw", split=split,
                        summary=res.summary, baseline_summary=base.summary, gain=gain, criterion="mbiou",
                        threshold=rcfg.threshold_biou, decision="keep" if keep else "drop",
                        images_per_s=done / total if total > 0 else None, wall_s=seconds[c], details=details)
        lines.append(f"  {c}: mBIoU {100 * res.mbiou:.2f} ({gain:+.2f} pts), mIoU {100 * res.miou:.2f} "
                     f"({miou_gain:+.2f} pts), tiles better/worse/same {better}/{worse}/{same}, "
                     f"{seconds[c] / done:.2f} s/tile -> {'ADOPT' if keep else 'drop'} "
                     f"(threshold +{rcfg.threshold_biou:g} pts)")
    for c, reason in unavailable.items():
        lines.append(f"  {c}: unavailable - {reason}")
    lines.append(f"  inference {per_tile_infer:.2f} s/tile on {device_name(device)}; wall {wall:.1f} s")
    ctx.events.log("\n".join(lines))
    print("\n".join(lines), flush=True)
