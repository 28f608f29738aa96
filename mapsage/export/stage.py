"""Stage kind ``export`` (``mapsage.export.stage:run``): export ``stage.checkpoint`` for deployment and measure
every variant against the PyTorch model.

1. The checkpoint's chosen weights (a run id resolves to its best checkpoint, raw or EMA, as the evaluate stage
   does) are exported as each ``export.targets`` entry into ``run_dir/export/`` with a sidecar (one ``artifact``
   event per file, kind ``export``).
2. Parity on the validation tiles (``eval.split``, ``export.max_tiles`` or ``eval.max_tiles``): the PyTorch model
   (variant ``export=pytorch``) and every export (``export=<format>-<precision>``) through the same inference
   path (``eval.mode``/tile/stride, one view: TTA has its own A/B) and metrics engine; ``metrics`` and ``tiles``
   events per variant.
3. Speed: one real crop (``export.speed_size`` × ``export.speed_batch``) through PyTorch eager and each export in
   this process: CPU with ``export.speed_threads`` threads for both engines, and the GPU where present.
4. One ``ab`` row per export (``ab_kind: export``, baseline ``export=pytorch``, criterion mIoU, threshold
   ``export.threshold`` points, default −0.5: a variant losing more is dropped) with max |Δ logit|, argmax
   agreement, ΔmIoU and ΔBoundary IoU, file size and the speed figures in its details, plus the baseline's row."""
from __future__ import annotations

import copy
from typing import Any

import torch

from ..config.schema import TTACfg
from ..data import build_dataset
from ..errors import UserError
from ..evalid import model_params, split_size, stamp, stamp_checkpoint
from ..infer.ab import ab_row
from ..infer.checkpoints import load_checkpoint_model
from ..infer.evaluate import emit_metrics, resolve_device
from ..infer.stage import check_classes
from .build import calibration_crops, export_targets, parse_target
from .core import DeployGraph, example_input, file_sha256
from .parity import parity_pass, speed_compare
from .runtime import load_exported, onnx_providers

BASELINE = "export=pytorch"


def variant_name(fmt: str, precision: str) -> str:
    return f"export={fmt}-{precision}"


def _threads(cfg) -> int:
    if cfg.runtime.threads:
        torch.set_num_threads(int(cfg.runtime.threads))
    return int(cfg.export.speed_threads or cfg.runtime.threads or torch.get_num_threads())


def _variant_device(fmt: str, precision: str, device: torch.device) -> torch.device:
    """Where an export is scored: ONNX on onnxruntime's CPU provider, except FP16 on a GPU with onnxruntime's
    CUDA provider; TorchScript on the stage's device."""
    if device.type == "cuda":
        if fmt == "torchscript":
            return device
        if precision == "fp16" and "CUDAExecutionProvider" in onnx_providers():
            return device
    return torch.device("cpu")


def run(ctx) -> None:
    """Export, then parity and speed with keep/drop decisions (see module doc)."""
    if not ctx.is_main:
        return
    cfg = ctx.cfg
    ecfg = cfg.export
    targets = [parse_target(t) for t in ecfg.targets]
    if len(set(targets)) != len(targets):
        raise UserError(f"export.targets lists a target twice: {ecfg.targets}")
    threads = _threads(cfg)
    device = resolve_device(cfg.runtime.device)
    model, ckpt_cfg, resolved = load_checkpoint_model(cfg.stage.checkpoint, key="stage.checkpoint",
                                                      metric=cfg.train.save_best_by)
    check_classes(cfg, ckpt_cfg, "stage.checkpoint")
    model_cfg = ckpt_cfg or cfg
    dataset = build_dataset(cfg, cfg.eval.split, train=False)
    if len(dataset) == 0:
        raise UserError(f"eval.split '{cfg.eval.split}' has no tiles to measure parity on; check dataset.root")
    source = {"run_id": resolved.run_id, "checkpoint": str(resolved.path), "reference": resolved.reference,
              "weights": resolved.weights, "epoch": getattr(model, "checkpoint_epoch", None),
              "checkpoint_sha256": file_sha256(resolved.path)}
    max_tiles = ecfg.max_tiles if ecfg.max_tiles is not None else cfg.eval.max_tiles
    # the parity evaluations measured this checkpoint on this split (a subset when the dataset is capped)
    stamp_checkpoint(ctx.events, resolved)
    stamp(ctx.events, dataset=cfg.dataset.name, split_size=split_size(dataset), device=str(device),
          params=model_params(model))
    ctx.events.emit("run_info", stage_kind="export", split=cfg.eval.split, device=str(device),
                    checkpoint=str(resolved.path), parent_run=resolved.run_id, weights=resolved.weights,
                    export_targets=list(ecfg.targets), threshold=ecfg.threshold, threads=threads,
                    eval_mode=cfg.eval.mode, eval_tile=list(cfg.eval.tile), eval_stride=list(cfg.eval.stride))
    ctx.progress(force=True, phase="export", message=f"exporting {len(targets)} variant(s)")

    # 1. export ------------------------------------------------------------------------------------------------
    mult = int(getattr(model, "output_stride", 32) or 32)
    first = dataset[0]["image"]
    example = example_input(first, ecfg.speed_size, mult, batch=1)
    calib = None
    if any(t == ("onnx", "int8") for t in targets) and ecfg.int8_mode != "dynamic":
        calib = calibration_crops(cfg, ecfg.calib_tiles, ecfg.calib_size, mult)
    out_dir = ctx.run_dir / "export"
    files = export_targets(model, model_cfg, out_dir, ecfg.targets, ecfg, source=source, example=example,
                           calib=calib, device=device, log=ctx.events.log)
    for f in files:
        ctx.events.emit("artifact", kind="export", path=str(f.path.relative_to(ctx.run_dir)), tile=None,
                        variant=variant_name(f.fmt, f.precision),
                        meta={"bytes": f.bytes, "sidecar": str(f.sidecar.relative_to(ctx.run_dir)),
                              "format": f.fmt, "precision": f.precision, "seconds": f.seconds, **f.info})
    if ctx.should_stop():
        ctx.events.log("stopped after the export; no parity measured", level="warning")
        return

    # 2. parity on the validation tiles -------------------------------------------------------------------------

    models: dict[str, Any] = {BASELINE: model.to(device).eval()}
    exported = {}
    for f in files:
        name = variant_name(f.fmt, f.precision)
        dev = _variant_device(f.fmt, f.precision, device)
        exported[name] = load_exported(f.path, device=dev, threads=threads)
        models[name] = exported[name]
    eval_cfg = copy.deepcopy(cfg.eval)
    eval_cfg.tta = TTACfg(scales=[1.0], hflip=False, vflip=False)
    par = parity_pass(models, dataset, cfg, eval_cfg=eval_cfg, reference=BASELINE, max_tiles=max_tiles,
                      split=cfg.eval.split, progress=ctx.progress, should_stop=ctx.should_stop)
    if not par.complete:
        ctx.events.log(f"parity stopped after {par.outcomes[BASELINE].n_images} tiles; no rows written",
                       level="warning")
        return
    for outcome in par.outcomes.values():
        emit_metrics(ctx.events, outcome, None)

    # 3. speed ---------------------------------------------------------------------------------------------------
    ctx.progress(force=True, phase="export speed", message="timing PyTorch eager and the exports")
    speed_x = example_input(first, ecfg.speed_size, mult, batch=ecfg.speed_batch)
    speed = speed_compare(DeployGraph(model).eval(), exported, speed_x, threads=threads,
                          repeats=ecfg.speed_repeats, gpu=device.type == "cuda")
    model.to(device)

    # 4. decisions -----------------------------------------------------------------------------------------------
    base = par.outcomes[BASELINE]
    ctx.events.emit("ab", **ab_row(ab_kind="export", variant=BASELINE, baseline=BASELINE, outcome=base,
                                   baseline_outcome=base, threshold=ecfg.threshold, is_baseline=True,
                                   details={"speed": speed, "weights": resolved.weights, "source": source}))
    for f in files:
        name = variant_name(f.fmt, f.precision)
        outcome = par.outcomes[name]
        p = par.parity[name].to_dict()
        cpu = (speed.get("cpu") or {}).get("engines", {}).get(name)
        gpu = (speed.get("gpu") or {}).get("engines", {}).get(name)
        details = {"format": f.fmt, "precision": f.precision, "file": str(f.path.relative_to(ctx.run_dir)),
                   "file_bytes": f.bytes, "file_mb": f.bytes / 1e6, "export_seconds": f.seconds,
                   **p, "argmax_agreement_pct": 100.0 * p["argmax_agreement"],
                   "cpu_threads": threads, "cpu": cpu, "gpu": gpu,
                   "cpu_pytorch_images_per_s": (speed.get("cpu") or {}).get("engines", {}).get("pytorch", {})
                   .get("images_per_s"),
                   "speed_input": speed.get("input"), "scored_on": outcome.device, "export": f.info,
                   "weights": resolved.weights}
        row = ab_row(ab_kind="export", variant=name, baseline=BASELINE, outcome=outcome, baseline_outcome=base,
                     threshold=ecfg.threshold, details=details)
        ctx.events.emit("ab", **row)
        sp = f", CPU {cpu['images_per_s']:.2f} img/s = {cpu['speedup_vs_pytorch']:.2f}x PyTorch eager " \
             f"({threads} threads)" if cpu else ""
        ctx.events.log(f"{name}: ΔmIoU {row['gain']:+.3f} points, ΔBoundary IoU {row['details']['gain_mbiou']:+.3f}, "
                       f"argmax agreement {100 * p['argmax_agreement']:.3f} %, max |Δ logit| "
                       f"{p['max_abs_logit']:.3g}, {f.bytes / 1e6:.2f} MB{sp} -> {row['decision']}")
