"""Stage entry point of training runs (kinds ``train`` and, with a distillation module, ``distill``).

``run(ctx)`` trains ``ctx.cfg`` into ``ctx.run_dir`` (checkpoints under ``checkpoints/``), writing events through
``ctx.events`` on rank 0, heartbeats through ``ctx.progress``, honouring ``ctx.should_stop()`` (saves
``last.pth`` and returns) and resuming from ``ctx.resume_from``. Under ``torchrun`` every rank calls it; the
process group is joined from the environment. The runner writes the final status record; a NaN loss raises
:class:`mapsage.errors.TrainingError` (the run fails, its last good checkpoint stays).

Distillation plugs in through the engine's extra-loss hook (``Trainer(extra_losses={name: module})``, see
:mod:`mapsage.train.engine`): ``run`` hands distillation configs (``stage.kind: distill`` or ``distill.enabled``) to
:func:`mapsage.distill.stage.run`, which builds the teacher, its feature cache and the A/B arm and trains through
that hook.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..models.budget import check_max_params, model_facts
from ..stage import StageContext, entry_point
from ..sweep.trial import epoch_reporter
from .engine import Trainer

# mapsage.distill imports mapsage.train (its Trainer), so training names the distillation stage instead of importing it
DISTILL_ENTRY = "mapsage.distill.stage:run"


def run(ctx: StageContext, extra_losses: Optional[dict] = None) -> dict:
    """Train ``ctx.cfg``. Returns the summary (best metrics, epochs done, history)."""
    cfg = ctx.cfg
    if extra_losses is None and (cfg.stage.kind == "distill" or cfg.distill.enabled):
        # the distillation stage builds the teacher, its feature cache and the A/B, and trains through this
        # engine's extra-loss hook; it sits above training, so it is reached by name (DISTILL_ENTRY)
        return entry_point(DISTILL_ENTRY)(ctx)
    if cfg.runtime.threads:
        torch.set_num_threads(int(cfg.runtime.threads))
    if ctx.is_main:                    # budget columns: parameters and FLOPs at the crop size; model.max_params
        facts = model_facts(cfg)
        ctx.events.emit("run_info", **facts)
        check_max_params(cfg, facts["model_params"])
    losses = dict(extra_losses or {})
    should_stop, out_of_time = _with_time_budget(cfg, ctx.should_stop)
    trainer = Trainer(cfg, run_dir=ctx.run_dir, events=ctx.events if ctx.is_main else None,
                      progress=ctx.progress if ctx.is_main else None, should_stop=should_stop,
                      extra_losses=losses)
    ctx.rank, ctx.world_size = trainer.rank, trainer.world
    if cfg.sweep.id and cfg.sweep.trial_id is not None:     # a sweep's trial: report epochs, obey the pruner
        trainer.epoch_callback = epoch_reporter(cfg, ctx.events if ctx.is_main else None, ctx.is_main)
    try:
        summary = trainer.fit(resume_from=ctx.resume_from)
    finally:
        trainer.close()
    if ctx.is_main:
        _named_copy(ctx, summary)
    if out_of_time() and not ctx.should_stop():
        summary["stopped"] = "max_time"
        if ctx.is_main:
            ctx.events.log(f"train.max_time reached ({cfg.train.max_time} h): stopped after "
                           f"{summary['epochs_done']} complete epoch(s) of {cfg.train.epochs}, global step "
                           f"{summary['global_step']}; checkpoints/last.pth holds the state (resume continues it)",
                           level="warning")
    return summary


def _with_time_budget(cfg, should_stop):
    """``should_stop`` that also says yes once ``train.max_time`` hours have passed (the engine then saves
    ``last.pth`` at the next step and returns, as for a stop request), and ``out_of_time()``."""
    import time

    if not cfg.train.max_time:
        return should_stop, lambda: False
    deadline = time.monotonic() + float(cfg.train.max_time) * 3600.0

    def out_of_time() -> bool:
        return time.monotonic() >= deadline

    return (lambda: should_stop() or out_of_time()), out_of_time


def _named_copy(ctx: StageContext, summary: dict) -> None:
    """The best checkpoint again under a name that says what it is -- fold, seed, epoch and score, e.g.
    ``checkpoints/named/fold2_seed43_ep037_miou0.6312_ema.pth`` -- a hard link (no extra disk) where the file system
    allows, for picking ensemble members or deliverables by pattern."""
    import os
    import shutil

    from . import checkpoint as ck

    cfg = ctx.cfg
    best = summary.get("best") or {}
    cands = [(best.get("raw"), best.get("raw_epoch"), ck.BEST, "raw"),
             (best.get("ema"), best.get("ema_epoch"), ck.BEST_EMA, "ema")]
    cands = [c for c in cands if c[0] is not None and c[1] is not None]
    if not cands:
        return
    score, epoch, name, weights = max(cands, key=lambda c: c[0])
    src = ctx.run_dir / "checkpoints" / name
    if not src.is_file():
        return
    fold = f"fold{cfg.dataset.split.fold}_" if cfg.dataset.split.folds else ""
    dst = (ctx.run_dir / "checkpoints" / "named" /
           f"{fold}seed{cfg.train.seed}_ep{int(epoch) + 1:03d}_{cfg.train.save_best_by}{float(score):.4f}_"
           f"{weights}.pth")
    dst.parent.mkdir(exist_ok=True)
    try:
        if dst.exists():
            dst.unlink()
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    ctx.events.emit("artifact", kind="checkpoint", path=str(dst.relative_to(ctx.run_dir)), variant="named",
                    meta={"epoch": int(epoch), "score": float(score), "metric": cfg.train.save_best_by,
                          "weights": weights, "seed": int(cfg.train.seed),
                          "fold": cfg.dataset.split.fold if cfg.dataset.split.folds else None})
