"""The LR range test (Smith 2017; fastai's ``lr_find``), stage kind ``lr_find``.

The run's training recipe (model, data, augmentation, loss, optimiser with its per-group multipliers) trains for
``lr_find.steps`` steps from fresh weights while the learning rate rises exponentially from ``lr_find.min_lr`` to
``lr_find.max_lr`` (the peak LR of the head's group; the other groups keep their ratio to it). Each step's loss and
a debiased exponential moving average of it are written as ``scalars`` (``split="lr_find"``: ``lr``, ``loss``,
``loss_smooth``). The test stops early when the smoothed loss exceeds ``lr_find.diverge`` times its minimum.

The suggestion is the LR at the steepest descent of the smoothed loss (in log LR, over the part before its
minimum), converted back to ``train.lr`` units (the config's LR before ``train.scale_lr`` scaling). It is written as
``run_info`` ``lr_suggested`` / ``lr_min_loss`` and as a log line; the app's Run detail launches training with it in
one click, the CLI prints it (``mapsage run CONFIG --set stage.kind=lr_find --wait``)."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..losses import Targets
from ..stage import StageContext
from .engine import Trainer
from .optim import effective_lr


def suggest(lrs, losses_smooth) -> dict:
    """``{"steep": lr, "min_loss": lr, "min_loss_div10": lr}`` from the smoothed curve (NaN-free)."""
    lrs = np.asarray(lrs, dtype=float)
    ys = np.asarray(losses_smooth, dtype=float)
    ok = np.isfinite(ys)
    lrs, ys = lrs[ok], ys[ok]
    if len(ys) < 5:
        return {"steep": None, "min_loss": None, "min_loss_div10": None}
    i_min = int(np.argmin(ys))
    end = max(i_min, 3)
    grad = np.gradient(ys[:end + 1], np.log10(lrs[:end + 1]))
    skip = max(1, len(ys) // 20)           # the first few points are noise
    i_steep = skip + int(np.argmin(grad[skip:])) if len(grad) > skip else int(np.argmin(grad))
    return {"steep": float(lrs[i_steep]), "min_loss": float(lrs[i_min]), "min_loss_div10": float(lrs[i_min] / 10)}


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    lf = cfg.lr_find
    if cfg.runtime.threads:
        torch.set_num_threads(int(cfg.runtime.threads))
    tr = Trainer(cfg, run_dir=ctx.run_dir, events=ctx.events if ctx.is_main else None,
                 progress=None, should_stop=ctx.should_stop, validate=False, show_bar=False)
    try:
        tr._setup_runtime()
        tr._setup_data()
        tr._setup_model()
        tr.loss_fn.start_epoch(0, {})
        opt = tr.optimizer
        base = max(g["lr"] for g in opt.param_groups) or 1.0
        ratios = [g["lr"] / base for g in opt.param_groups]
        n = int(lf.steps)
        lrs = [lf.min_lr * (lf.max_lr / lf.min_lr) ** (i / max(1, n - 1)) for i in range(n)]
        model = tr.ddp_model
        model.train()
        tr.freeze.set_norm_eval()
        beta, avg, best = float(lf.smooth), 0.0, math.inf
        out_lr, out_loss, out_smooth = [], [], []
        it = iter(tr.loader)
        stopped = None
        for i, lr in enumerate(lrs):
            if ctx.should_stop():
                stopped = "cancelled"
                break
            for g, r in zip(opt.param_groups, ratios):
                g["lr"] = lr * r
            try:
                batch = next(it)
            except StopIteration:
                it = iter(tr.loader)
                batch = next(it)
            images = batch["image"].to(tr.device)
            masks = batch["mask"].to(tr.device)
            if tr.batch_aug is not None:
                images, masks = tr.batch_aug(images, masks)
            opt.zero_grad(set_to_none=True)
            with tr._autocast():
                out = model(images)
                loss, _ = tr.loss_fn(out, Targets(mask=masks, ignore_index=tr.loss_fn.ignore_index))
            value = float(loss.detach())
            if not math.isfinite(value):
                stopped = f"loss not finite at lr {lr:.2e}"
                break
            tr.scaler.scale(loss).backward()
            if cfg.train.grad_clip:
                tr.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_([p for p in tr.model.parameters() if p.requires_grad],
                                               float(cfg.train.grad_clip))
            tr.scaler.step(opt)
            tr.scaler.update()
            avg = beta * avg + (1 - beta) * value
            smooth = avg / (1 - beta ** (i + 1))
            best = min(best, smooth)
            out_lr.append(lr)
            out_loss.append(value)
            out_smooth.append(smooth)
            ctx.events.scalars({"lr": lr, "loss": value, "loss_smooth": smooth}, step=i, split="lr_find")
            ctx.progress(step=i + 1, steps=n, message=f"LR range test: step {i + 1}/{n}, lr {lr:.2e}, "
                                                      f"loss {value:.4f}")
            if i > 5 and smooth > float(lf.diverge) * best:
                stopped = f"diverged at lr {lr:.2e} (smoothed loss {smooth:.3f} > {lf.diverge} x {best:.3f})"
                break
    finally:
        tr.close()
    s = suggest(out_lr, out_smooth)
    scale = effective_lr(cfg, tr.world) / float(cfg.train.lr) if cfg.train.lr else 1.0
    as_cfg = {k: (v / scale if v else None) for k, v in s.items()}
    ctx.events.emit("run_info", lr_suggested=as_cfg["steep"], lr_min_loss=as_cfg["min_loss"],
                    lr_find_steps=len(out_lr), lr_find_scale=scale, lr_find_stopped=stopped)
    if as_cfg["steep"]:
        msg = (f"LR range test: suggested train.lr = {as_cfg['steep']:.2e} (steepest descent of the smoothed loss); "
               f"loss minimum at {as_cfg['min_loss']:.2e} (a tenth of it: {as_cfg['min_loss_div10']:.2e}); "
               f"{len(out_lr)} steps" + (f"; {stopped}" if stopped else ""))
    else:
        msg = f"LR range test: too few steps ({len(out_lr)}) for a suggestion" + (f"; {stopped}" if stopped else "")
    ctx.events.log(msg)
    print(msg, flush=True)
    return {"suggested": as_cfg, "steps": len(out_lr), "stopped": stopped}
