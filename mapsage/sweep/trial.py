"""The trial side of a sweep, inside a training run: after each validation the run reports its
``sweep.metric`` to its Optuna trial and asks the pruner; a trial to prune raises :class:`TrialPruned`, which the
worker records as the final status ``pruned`` (not ``failed``)."""
from __future__ import annotations

import math
import time
from typing import Callable

from ..errors import UserError
from .space import parse_space
from .study import load_study


class TrialPruned(UserError):
    """Stop the run: its sweep's pruner judged the trial unpromising. The worker writes ``run_status``."""
    run_status = "pruned"


def epoch_value(results: dict, metric: str, direction: str) -> float | None:
    """The epoch's figure: the better of the raw and EMA weights' ``metric`` (as the best checkpoint is)."""
    vals = []
    for r in results.values():
        v = getattr(r, metric, None)
        if v is not None and math.isfinite(float(v)):
            vals.append(float(v))
    if not vals:
        return None
    return max(vals) if direction == "maximize" else min(vals)


def epoch_reporter(cfg, events=None, is_main: bool = True) -> Callable[[int, dict], None]:
    """``callback(epoch, results)`` for :class:`mapsage.train.engine.Trainer` (``epoch_callback``)."""
    sw = cfg.sweep
    state: dict = {}

    def _trial():
        if "trial" not in state:
            import optuna


            study = load_study(sw.id, sw, parse_space(sw.parameters))
            state["trial"] = optuna.trial.Trial(study, int(sw.trial_id))
        return state["trial"]

    def callback(epoch: int, results: dict) -> None:
        prune = False
        value = None
        if is_main:
            t0 = time.perf_counter()
            value = epoch_value(results, sw.metric, sw.direction)
            if value is not None:
                trial = _trial()
                trial.report(value, step=int(epoch))
                prune = bool(trial.should_prune())
            if events is not None:       # what the sweep costs the trial (bench/sweep.py reads it)
                events.scalars({"report_s": time.perf_counter() - t0}, epoch=epoch, split="sweep")
        prune = _agree(prune)
        if prune:
            msg = (f"pruned by the sweep's {sw.pruner} pruner after epoch {epoch + 1}: val {sw.metric} "
                   f"{value:.4f}" if value is not None else f"pruned after epoch {epoch + 1}")
            if events is not None:
                events.log(msg)
            raise TrialPruned(msg)

    return callback


def _agree(flag: bool) -> bool:
    """Rank 0's decision, shared with every DDP rank (all stop at the same epoch)."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return flag
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0],
                     device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, src=0)
    return bool(t.item() > 0.5)
