"""Stage 3 entry points (``run(ctx)``-style, registered in ``runners/stages.py``):

* :func:`run_evaluate` (kind ``evaluate``): the final evaluation of one checkpoint (``stage.checkpoint``) on
  ``eval.split`` with the same inference settings as training-time validation (``cfg.eval``: whole/slide, tile,
  stride, TTA), through the same :func:`mapsage.infer.evaluate` code path. Its variant is named after the weights
  (``raw`` or ``ema``), as training-time validation names them. With ``post.enabled`` the same inference pass is
  also scored post-processed (variant ``<weights>+post``) and an ``ab`` row (``ab_kind: post``) decides whether
  post-processing is kept (``post.threshold`` points of mIoU).
* :func:`run_tta_ab` (kind ``tta_ab``): the checkpoint with TTA off (variant ``tta=off``) and with each
  ``tta_ab.variants`` entry (``tta=<name>``); one ``ab`` row per variant with mIoU, mAcc, per-class IoU, Boundary
  IoU, images/s, wall time and the keep/drop decision (``tta_ab.threshold`` points, plan: +0.8), plus the
  baseline's own row (decision ``baseline``).
* :func:`run_ensemble` (kind ``ensemble``): every ``ensemble.members`` checkpoint alone (``member=<name>``) and
  their weighted probability/logit average (``ensemble``); an ``ab`` row (``ab_kind: ensemble``) compares the
  ensemble with the best member (``ensemble.threshold`` points).

Predictions go to ``run_dir/predictions/<variant>/`` when ``eval.save_predictions`` is on, registered as
``artifact`` events. Checkpoint references are resolved by :mod:`mapsage.infer.checkpoints` (a file, a run id,
``<run id>/<file>`` or ``latest:<template>``)."""
from __future__ import annotations

import copy
from typing import Any, Optional

import torch

from ..config import to_dict
from ..config.schema import TTACfg
from ..data import build_dataset, get_normalization
from ..errors import CheckpointError, UserError
from ..evalid import model_params, split_size, stamp, stamp_checkpoint, tile_hash
from ..lineage import stored_temperature
from ..sweep.members import expand_members
from .ab import ab_row
from .checkpoints import load_checkpoint_model
from .core import tta_views
from .ensemble import Ensemble, Renormalize, default_weights
from .evaluate import EvalOutcome, device_name, evaluate_variants, resolve_device
from .post import PostProcessor

_INFER_KEYS = ("mode", "tile", "stride", "tta", "boundary_px", "boundary_strip_px")


# ----------------------------------------------------------------------------------------------------------------
# shared set-up


def _threads(cfg) -> None:
    if cfg.runtime.threads:
        torch.set_num_threads(int(cfg.runtime.threads))


def check_classes(cfg, ckpt_cfg, where: str) -> None:
    if ckpt_cfg is None:
        return
    have, want = list(ckpt_cfg.dataset.classes), list(cfg.dataset.classes)
    if have != want:
        raise CheckpointError(f"{where}: the checkpoint was trained for classes {have} but this config's "
                              f"dataset.classes is {want}; evaluate it with the dataset it was trained on")


def eval_differences(cfg, ckpt_cfg) -> dict[str, Any]:
    """Inference settings that differ between this config's ``eval`` and the training run's (``{key: [train,
    now]}``): the plan's health check 6 asks that they agree."""
    if ckpt_cfg is None:
        return {}
    a, b = to_dict(ckpt_cfg.eval), to_dict(cfg.eval)
    return {f"eval.{k}": [a.get(k), b.get(k)] for k in _INFER_KEYS if a.get(k) != b.get(k)}


def _dataset(cfg):
    return build_dataset(cfg, cfg.eval.split, train=False)


def _save_dir(ctx):
    return ctx.predictions_dir if ctx.cfg.eval.save_predictions else None


def _load(ctx, reference: Optional[str], key: str):
    model, ckpt_cfg, resolved = load_checkpoint_model(reference, key=key, metric=ctx.cfg.train.save_best_by)
    check_classes(ctx.cfg, ckpt_cfg, key)
    stamp_checkpoint(ctx.events, resolved)     # the evaluations that follow measured this checkpoint
    stamp(ctx.events, params=model_params(model))
    return model, ckpt_cfg, resolved


def _run_info(ctx, device, **facts) -> None:
    cfg = ctx.cfg
    ctx.events.emit("run_info", stage_kind=cfg.stage.kind, split=cfg.eval.split, device=str(device),
                    eval_mode=cfg.eval.mode, eval_tile=list(cfg.eval.tile), eval_stride=list(cfg.eval.stride),
                    **facts)


def _log_outcome(ctx, outcome: EvalOutcome) -> None:
    r = outcome.result
    ctx.events.log(f"{outcome.variant}: mIoU {r.miou * 100:.2f}, mAcc {r.macc * 100:.2f}, mBIoU "
                   f"{r.mbiou * 100:.2f} on {outcome.n_images} {outcome.split} tiles; "
                   f"{outcome.images_per_s:.3f} images/s, {outcome.mpix_per_s:.3f} Mpixel/s on {outcome.device}")


def _emit_speed(ctx, outcome: EvalOutcome) -> None:
    ctx.events.scalars({"images_per_s": outcome.images_per_s, "mpix_per_s": outcome.mpix_per_s,
                        "wall_s": outcome.wall_s, "infer_s": outcome.infer_s},
                       split=f"{outcome.split}:{outcome.variant}")


def _common(ctx) -> tuple[Any, Any]:
    _threads(ctx.cfg)
    device = resolve_device(ctx.cfg.runtime.device)
    dataset = _dataset(ctx.cfg)

    stamp(ctx.events, dataset=ctx.cfg.dataset.name, split_size=split_size(dataset), device=device_name(device))
    return device, dataset


def _evaluate(ctx, model, dataset, device, variants, eval_cfg=None) -> dict[str, EvalOutcome]:
    cfg = ctx.cfg
    outcomes = evaluate_variants(model, dataset, cfg, split=cfg.eval.split, variants=variants, device=device,
                                 events=ctx.events, save_dir=_save_dir(ctx), max_tiles=cfg.eval.max_tiles,
                                 eval_cfg=eval_cfg, progress=ctx.progress, should_stop=ctx.should_stop,
                                 min_timings=cfg.eval.speed_repeats)
    for outcome in outcomes.values():
        if outcome.complete:
            _log_outcome(ctx, outcome)
            _emit_speed(ctx, outcome)
    return outcomes


# ----------------------------------------------------------------------------------------------------------------
# evaluate (+ post-processing A/B)


def run_evaluate(ctx) -> None:
    """Final evaluation of ``stage.checkpoint`` with the training-time validation settings (see module doc)."""
    if not ctx.is_main:
        return
    cfg = ctx.cfg
    device, dataset = _common(ctx)
    model, ckpt_cfg, resolved = _load(ctx, cfg.stage.checkpoint, "stage.checkpoint")
    diffs = eval_differences(cfg, ckpt_cfg)
    _run_info(ctx, device, checkpoint=str(resolved.path), parent_run=resolved.run_id, weights=resolved.weights,
              eval_differs_from_training=diffs or None)
    if diffs:
        ctx.events.log("final evaluation settings differ from the training run's validation: "
                       + "; ".join(f"{k}: training {v[0]} vs now {v[1]}" for k, v in diffs.items())
                       + " - the numbers are not comparable with training-time validation", level="warning")
    base = resolved.weights
    variants: dict[str, Any] = {base: None}
    post = None
    if cfg.post.enabled:
        post = PostProcessor.from_config(cfg.post, cfg.dataset.classes)
        if not post.active:
            raise UserError("post.enabled is true but nothing is configured: set post.min_area (class name -> "
                            "pixels) and/or post.road_class with post.road_min_width")
        variants[f"{base}+post"] = post
    outcomes = _evaluate(ctx, model, dataset, device, variants)
    if not outcomes[base].complete:
        ctx.events.log(f"evaluation stopped after {outcomes[base].n_images} tiles; no metrics written",
                       level="warning")
        return
    if post is not None:
        name = f"{base}+post"
        row = ab_row(guard=cfg.eval.ab_guard,
                     ab_kind="post", variant=name, baseline=base, outcome=outcomes[name],
                     baseline_outcome=outcomes[base], threshold=cfg.post.threshold,
                     details={"post": post.describe(cfg.dataset.classes)})
        ctx.events.emit("ab", **row)
        ctx.events.log(f"{name}: gain {row['gain']:+.2f} mIoU points (threshold {cfg.post.threshold:+.2f}) "
                       f"-> {row['decision']}")
        ctx.events.emit("ab", **ab_row(ab_kind="post", variant=base, baseline=base, outcome=outcomes[base],
                                       baseline_outcome=outcomes[base], threshold=cfg.post.threshold,
                                       is_baseline=True))


# ----------------------------------------------------------------------------------------------------------------
# TTA A/B


def tta_eval_cfg(eval_cfg, scales, hflip: bool, vflip: bool):
    out = copy.deepcopy(eval_cfg)
    out.tta = TTACfg(scales=list(scales), hflip=bool(hflip), vflip=bool(vflip))
    return out


def run_tta_ab(ctx) -> None:
    """TTA off against each ``tta_ab.variants`` entry on one checkpoint, with keep/drop decisions."""
    if not ctx.is_main:
        return
    cfg = ctx.cfg
    if not cfg.tta_ab.variants:
        raise UserError("tta_ab.variants is empty; list at least one variant (name, scales, hflip, vflip)")
    names = [v.name for v in cfg.tta_ab.variants]
    if len(set(names)) != len(names) or "off" in names:
        raise UserError(f"tta_ab.variants names must be unique and not 'off', got {names}")
    device, dataset = _common(ctx)
    model, ckpt_cfg, resolved = _load(ctx, cfg.stage.checkpoint, "stage.checkpoint")
    _run_info(ctx, device, checkpoint=str(resolved.path), parent_run=resolved.run_id, weights=resolved.weights,
              tta_variants=[to_dict(v) for v in cfg.tta_ab.variants], threshold=cfg.tta_ab.threshold)
    base_name = "tta=off"
    base_cfg = tta_eval_cfg(cfg.eval, [1.0], False, False)
    baseline = _evaluate(ctx, model, dataset, device, {base_name: None}, base_cfg)[base_name]
    if not baseline.complete:
        ctx.events.log("stopped during the TTA-off evaluation; no rows written", level="warning")
        return
    ctx.events.emit("ab", **ab_row(ab_kind="tta", variant=base_name, baseline=base_name, outcome=baseline,
                                   baseline_outcome=baseline, threshold=cfg.tta_ab.threshold, is_baseline=True,
                                   details={"tta": {"scales": [1.0], "hflip": False, "vflip": False},
                                            "views": 1}))
    for variant in cfg.tta_ab.variants:
        if ctx.should_stop():
            ctx.events.log("stopped before TTA variant " + variant.name, level="warning")
            return
        name = f"tta={variant.name}"
        vcfg = tta_eval_cfg(cfg.eval, variant.scales, variant.hflip, variant.vflip)
        outcome = _evaluate(ctx, model, dataset, device, {name: None}, vcfg)[name]
        if not outcome.complete or not baseline.complete:  # stopped mid-way: no decision on a partial set
            ctx.events.log(f"{name} stopped after {outcome.n_images} tiles; no decision written", level="warning")
            return
        row = ab_row(guard=cfg.eval.ab_guard,
                     ab_kind="tta", variant=name, baseline=base_name, outcome=outcome, baseline_outcome=baseline,
                     threshold=cfg.tta_ab.threshold,
                     details={"tta": to_dict(variant), "views": len(tta_views(vcfg.tta)),
                              "slowdown": baseline.images_per_s / outcome.images_per_s
                              if outcome.images_per_s else None})
        ctx.events.emit("ab", **row)
        ctx.events.log(f"{name}: gain {row['gain']:+.2f} mIoU points (threshold {cfg.tta_ab.threshold:+.2f}) "
                       f"-> {row['decision']}")


# ----------------------------------------------------------------------------------------------------------------
# ensembles


def _member_name(resolved, i: int) -> str:
    if resolved.run_id:
        return f"member={resolved.run_id}" + ("" if resolved.path.name.startswith("best") else
                                              f"/{resolved.path.stem}")
    return f"member={i}:{resolved.path.stem}"


def renormalized(model, member_cfg, cfg):
    """Wrap a member trained with another input normalisation so it sees what it was trained on."""

    if member_cfg is None:
        return model
    mean_e, std_e = get_normalization(cfg)
    mean_m, std_m = get_normalization(member_cfg)
    if tuple(mean_e) == tuple(mean_m) and tuple(std_e) == tuple(std_m):
        return model
    return Renormalize(model, mean_e, std_e, mean_m, std_m)


def run_ensemble(ctx) -> None:
    """Each member alone, then the weighted ensemble; an ``ab`` row against the best member."""

    if not ctx.is_main:
        return
    cfg = ctx.cfg

    members_cfg = expand_members(cfg, log=ctx.events.log)
    if len(members_cfg) < 2:
        raise UserError(f"ensemble.members lists {len(members_cfg)} checkpoint(s); an ensemble needs at least two")
    weights = default_weights([m.weight for m in members_cfg])
    device, dataset = _common(ctx)
    models, names, infos, resolved_all, member_ids = [], [], [], [], []
    for i, member in enumerate(members_cfg):
        model, mcfg, resolved = _load(ctx, member.checkpoint, f"ensemble.members[{i}].checkpoint")
        models.append(renormalized(model, mcfg, cfg))
        names.append(_member_name(resolved, i))
        resolved_all.append(resolved)
        member_ids.append(dict(getattr(ctx.events, "eval_identity", None) or {}))   # stamped by _load
        infos.append({**resolved.to_dict(), "weight": weights[i], "variant": names[i]})
    if len(set(names)) != len(names):
        # two checkpoints of one run (best.pth and best_ema.pth): name each by its file
        names = [f"member={r.run_id}/{r.path.stem}" if r.run_id else n for r, n in zip(resolved_all, names)]
    if len(set(names)) != len(names):
        names = [f"{n}#{i}" for i, n in enumerate(names)]
        for info, n in zip(infos, names):
            info["variant"] = n
    _run_info(ctx, device, members=infos, average=cfg.ensemble.average,
              parent_run=next((m["run_id"] for m in infos if m["run_id"]), None))
    outcomes: dict[str, EvalOutcome] = {}

    for name, model, ident in zip(names, models, member_ids):
        if ctx.should_stop():
            return
        stamp(ctx.events, **ident)
        outcomes[name] = _evaluate(ctx, model, dataset, device, {name: None})[name]
    # the ensemble's identity: every member's file, one hash over the members' hashes and weights
    stamp(ctx.events, checkpoint=" + ".join(str(i.get("checkpoint")) for i in member_ids), weights="mix",
          ckpt_epoch=None, ckpt_run=next((m["run_id"] for m in infos if m["run_id"]), None),
          ckpt_hash=tile_hash(f"{i.get('ckpt_hash')}@{w:.4f}" for i, w in zip(member_ids, weights)),
          params=sum(int(i.get("params") or 0) for i in member_ids) or None)
    ctx.events.eval_identity["ckpt_epoch"] = None
    temps = None
    if cfg.ensemble.calibrate:
        temps = [stored_temperature(r.run_id) if r.run_id else None for r in resolved_all]
        ctx.events.log("ensemble members' temperatures (reliability cards): "
                       + ", ".join(f"{n}: {t if t is not None else 'none'}" for n, t in zip(names, temps)))
    ensemble = Ensemble(models, weights, average=cfg.ensemble.average, num_classes=cfg.dataset.num_classes,
                        temperatures=temps)
    if ctx.should_stop():
        return
    ens = _evaluate(ctx, ensemble, dataset, device, {"ensemble": None})["ensemble"]
    if not ens.complete or not all(o.complete for o in outcomes.values()):
        ctx.events.log("ensemble evaluation stopped early; no decision written", level="warning")
        return
    best = max(names, key=lambda n: (outcomes[n].result.miou, -names.index(n)))
    ctx.events.emit("ab", **ab_row(ab_kind="ensemble", variant=best, baseline=best, outcome=outcomes[best],
                                   baseline_outcome=outcomes[best], threshold=cfg.ensemble.threshold,
                                   is_baseline=True))
    row = ab_row(guard=cfg.eval.ab_guard, ab_kind="ensemble", variant="ensemble", baseline=best, outcome=ens,
                 baseline_outcome=outcomes[best], threshold=cfg.ensemble.threshold,
                 details={"members": infos, "average": cfg.ensemble.average,
                          "member_miou": {n: outcomes[n].result.miou for n in names}})
    ctx.events.emit("ab", **row)
    ctx.events.log(f"ensemble of {len(names)} ({cfg.ensemble.average} average, weights "
                   f"{[round(w, 3) for w in weights]}): gain {row['gain']:+.2f} mIoU points over {best} "
                   f"-> {row['decision']}")


run = run_evaluate  # a stage module's default entry point
