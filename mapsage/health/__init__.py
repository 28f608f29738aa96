"""Stage 0 health checks: the plan's seven checks and the overfit sanity run, each with a verdict and evidence.

=================  ===========================================================================================
check              what it establishes
=================  ===========================================================================================
``ids``            dataset, loss (probed: zero gradient on ignore pixels) and metric agree on classes and ignore
                   index; masks decode to classes/ignore only (library vs an independent decoder, counts of
                   values outside); colour-coded or palette masks are never read as ids
``label_ids``      the stored ids against the class table: mmseg-converted masks (0 = ignore, 1..K) read without
                   ``dataset.reduce_zero_label`` fail; ignore-like values read as a class warn; classes with
                   (almost) no boundary pixels in the labels (ISPRS ignore strips) warn for Boundary IoU
``per_class``      per-class IoU is recorded for every class, the mean is their mean, the weakest are named
``normalisation``  mean/std recovered from the pipeline's output match the backbone's pretrained statistics;
                   inputs after the training transforms lie in the expected range
``alignment``      a label derived from an image stays aligned with it through the training transforms
                   (overlay picture stored)
``splits``         no exact/near-duplicate image across splits (content hash, pHash + dHash with flips and
                   rotations), no split group on two sides, no leak-list id in training, official splits
``eval_consistency`` training-time validation and the final evaluation templates share preprocessing, window and
                   TTA (fingerprints compared)
``metric``         known-answer self-test of the metrics engine (ignore, absent classes, accumulation)
``sanity``         the model + loss overfit one small batch: the loss falls below a share of its start
=================  ===========================================================================================

``run(ctx)`` is the stage entry (kind ``health``): it runs ``cfg.health.checks`` in order, writes one ``health``
event per check (plus artifacts and the sanity curve's scalars), prints the table to stdout and into a ``log``
event (so ``mapsage run --wait`` shows it), and fails the job (:class:`HealthChecksFailed`) only if a check failed;
a warning passes. ``run_checks`` is the same without a stage context (tests, notebooks).
"""
from __future__ import annotations

import importlib
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable, Optional

from ..config import ConfigError
from ..errors import UserError
from .context import HealthRun
from .result import CheckResult, HealthChecksFailed, format_table, health_records, print_run_health, worst_status

CHECKS: dict[str, str] = {
    "ids": "mapsage.health.ids:check_ids",
    "label_ids": "mapsage.health.label_ids:check_label_ids",
    "per_class": "mapsage.health.per_class:check_per_class",
    "normalisation": "mapsage.health.normalisation:check_normalisation",
    "alignment": "mapsage.health.alignment:check_alignment",
    "splits": "mapsage.health.splits:check_splits",
    "eval_consistency": "mapsage.health.eval_consistency:check_eval_consistency",
    "metric": "mapsage.health.metric_check:check_metric",
    "sanity": "mapsage.health.sanity:check_sanity",
}
ALIASES = {"normalization": "normalisation", "class_ids": "ids", "split": "splits", "leakage": "splits",
           "metrics": "metric", "eval": "eval_consistency", "overfit": "sanity"}

__all__ = ["run", "run_checks", "run_check", "check_function", "CHECKS", "CheckResult", "HealthChecksFailed",
           "HealthRun", "format_table", "health_records", "print_run_health", "worst_status"]


def __getattr__(name):
    if name == "HealthRun":
        return HealthRun
    raise AttributeError(name)


def check_function(name: str) -> Callable:
    key = ALIASES.get(name, name)
    if key not in CHECKS:
        raise ConfigError(f"health.checks: unknown check {name!r}; known checks: {', '.join(CHECKS)}")
    module, _, func = CHECKS[key].partition(":")
    return getattr(importlib.import_module(module), func)


def run_check(h, name: str) -> CheckResult:
    """Run one check; a user-fixable error becomes a failed check naming it, a crash a failed check with its
    traceback in the evidence (the other checks still run)."""

    t0 = time.perf_counter()
    try:
        result = check_function(name)(h)
    except (UserError, ConfigError) as exc:
        result = CheckResult(name, "fail", f"{type(exc).__name__}: {exc}", {"error": str(exc)})
    except Exception as exc:  # noqa: BLE001 - a check that crashes is a failed check, reported
        result = CheckResult(name, "fail", f"the check crashed: {type(exc).__name__}: {exc}",
                             {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
    result.seconds = time.perf_counter() - t0
    return result


def run_checks(h, checks: Optional[Iterable[str]] = None,
               on_result: Optional[Callable[[CheckResult, int, int], None]] = None) -> list[CheckResult]:
    """Run ``checks`` (default ``cfg.health.checks``) on a :class:`HealthRun`; each result is written as a
    ``health`` event to ``h.events``."""
    names = list(checks if checks is not None else h.cfg.health.checks)
    for n in names:          # unknown names fail before any work
        check_function(n)
    results = []
    for i, name in enumerate(names):
        if h.should_stop():
            break
        h.progress(f"{name} ({i + 1}/{len(names)})")
        result = run_check(h, name)
        h.events.emit("health", **result.to_event())
        results.append(result)
        if on_result is not None:
            on_result(result, i, len(names))
    return results


def run(ctx) -> None:
    """Stage entry point (kind ``health``)."""
    import torch

    from ..infer import resolve_device

    cfg = ctx.cfg
    if cfg.runtime.threads:
        torch.set_num_threads(int(cfg.runtime.threads))
    device = resolve_device(cfg.runtime.device)
    names = list(cfg.health.checks)
    state = {"i": 0}

    def progress(message: str) -> None:
        ctx.progress(step=state["i"], steps=len(names), frac=state["i"] / max(1, len(names)), phase="health",
                     message=message)

    def on_result(result: CheckResult, i: int, n: int) -> None:
        state["i"] = i + 1
        line = f"[{i + 1}/{n}] {result.check}: {result.status.upper()} ({result.seconds:.1f}s) {result.verdict}"
        print(line, flush=True)
        ctx.progress(force=True, step=i + 1, steps=n, frac=(i + 1) / n, phase="health",
                     message=f"{result.check}: {result.status}")

    h = HealthRun(cfg=cfg, out_dir=Path(ctx.run_dir) / "health", run_dir=Path(ctx.run_dir), events=ctx.events,
                  device=str(device), progress=progress, should_stop=ctx.should_stop)
    ctx.events.emit("run_info", health_checks=names, device=str(device))
    results = run_checks(h, names, on_result=on_result)
    table = format_table(results, title=f"health checks of {ctx.run_id} ({cfg.meta.get('source', 'config')}):")
    print(table, flush=True)
    failed = [r.check for r in results if r.status == "fail"]
    ctx.events.log(table, level="error" if failed else "info")
    if failed and not ctx.should_stop():
        raise HealthChecksFailed(f"{len(failed)} of {len(results)} health check(s) failed: {', '.join(failed)} "
                                 f"(verdicts in the table above / `mapsage runs show {ctx.run_id}`)")
