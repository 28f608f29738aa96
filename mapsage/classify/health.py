"""Health checks of a classification run, run at its start (``classify.health_checks``) and written as ``health``
events of the run (the same records and table as the segmentation health stage; a failing check fails the run).

* ``ids``: every class has training images; classes with fewer than 5 are named (warn); the category ids are
  distinct (the labels file's ids were checked when it was read).
* ``normalisation``: ``model.mean/std`` against the timm model's pretrained config (warn on a mismatch).
* ``splits``: no group (source tile) in both training and validation, and no near-duplicate image pair (pHash and
  dHash within ``dataset.split.near_dup_bits``) across them (fail), every class in the validation split (warn).
* ``metric``: a known-answer self-test of :func:`mapsage.metrics.classification.classification_metrics`.
* ``sanity``: the model overfits one batch (``health.sanity_batch`` x 4 images, ``health.sanity_steps`` steps at
  ``health.sanity_lr``): the loss must fall below ``health.sanity_loss_ratio`` of its start.
"""
from __future__ import annotations

import time

import numpy as np

from ..config import ConfigError
from ..health.result import CheckResult, HealthChecksFailed, format_table
from .data import ClsDataset, normalization

CHECKS = ("ids", "normalisation", "splits", "metric", "sanity")


def _ids(cfg, train, val) -> CheckResult:
    c = len(cfg.dataset.classes)
    counts = np.bincount([s.label for s in train], minlength=c)
    names = list(cfg.dataset.classes)
    empty = [n for n, k in zip(names, counts) if k == 0]
    few = [f"{n} ({k})" for n, k in zip(names, counts) if 0 < k < 5]
    ev = {"train_counts": dict(zip(names, counts.tolist()))}
    if empty:
        return CheckResult("ids", "warn", f"class(es) without training images: {', '.join(empty)} — they cannot be "
                           f"learnt; check the labels or drop them", ev)
    if few:
        return CheckResult("ids", "warn", f"classes with under 5 training images: {', '.join(few)}", ev)
    return CheckResult("ids", "pass", f"{c} classes, each with training images (min {counts.min()})", ev)


def _norm(cfg) -> CheckResult:
    import timm

    pc = timm.models.get_pretrained_cfg(cfg.classify.model)
    d = pc.to_dict() if pc is not None and hasattr(pc, "to_dict") else {}
    want_m, want_s = d.get("mean"), d.get("std")
    have_m, have_s = cfg.model.mean, cfg.model.std
    ev = {"model_mean": have_m, "model_std": have_s, "pretrained_mean": want_m, "pretrained_std": want_s}
    if not have_m or want_m is None:
        return CheckResult("normalisation", "pass", "normalisation taken from the model's pretrained config", ev)
    off = max(abs(a - b) for a, b in zip(list(have_m) + list(have_s), list(want_m) + list(want_s)))
    if off > 0.02 and cfg.classify.pretrained not in ("", "none"):
        return CheckResult("normalisation", "warn", f"model.mean/std differ from {cfg.classify.model}'s pretrained "
                           f"config by up to {off:.3f}; pretrained weights expect {want_m} / {want_s}", ev)
    return CheckResult("normalisation", "pass", f"model.mean/std {'match' if off <= 0.02 else 'set (random init)'}",
                       ev)


def _splits(cfg, train, val) -> CheckResult:
    from ..data.folds import near_duplicate_links

    both = sorted({s.group for s in train} & {s.group for s in val})
    ev = {"shared_groups": both[:20], "train_groups": len({s.group for s in train}),
          "val_groups": len({s.group for s in val})}
    if both:
        return CheckResult("splits", "fail", f"{len(both)} group(s) in both training and validation, e.g. {both[0]}",
                           ev)
    links = near_duplicate_links(train + val, int(cfg.dataset.split.near_dup_bits))
    tr = {s.id for s in train}
    cross = [(a, b, d) for a, b, d in links if (a in tr) != (b in tr)]
    ev["near_duplicates_across"] = [list(x) for x in cross[:20]]
    if cross:
        return CheckResult("splits", "fail", f"{len(cross)} near-duplicate image pair(s) across training and "
                           f"validation, e.g. {cross[0][0]} ~ {cross[0][1]}", ev)
    missing = [n for i, n in enumerate(cfg.dataset.classes) if not any(s.label == i for s in val)]
    if missing:
        ev["val_missing"] = missing
        return CheckResult("splits", "warn", f"no group overlap, no near-duplicates across; validation lacks "
                           f"{', '.join(missing)}", ev)
    return CheckResult("splits", "pass", f"no group in both splits ({ev['train_groups']} / {ev['val_groups']} "
                       f"groups), no near-duplicate across", ev)


def _metric() -> CheckResult:
    from ..metrics.classification import classification_metrics

    probs = np.eye(3)[[0, 0, 1, 2, 2, 1]] * 0.9 + 0.1 / 3
    labels = [0, 1, 1, 2, 0, 1]
    r = classification_metrics(probs, labels)
    # by hand: predictions 0,0,1,2,2,1 -> correct at 0, 2, 3, 5 -> top-1 4/6; per class precision 1/2, 1, 1/2,
    # recall 1/2, 2/3, 1 -> F1 1/2, 4/5, 2/3
    want = {"top1": 4 / 6, "macro_f1": (0.5 + 0.8 + 2 / 3) / 3}
    got = {"top1": r.top1, "macro_f1": r.macro_f1}
    ok = all(abs(got[k] - want[k]) < 1e-9 for k in want)
    return CheckResult("metric", "pass" if ok else "fail",
                       "known-answer test of top-1 and macro F1 " + ("passes" if ok else f"FAILS: {got} vs {want}"),
                       {"got": got, "want": want})


def _sanity(cfg, train) -> CheckResult:
    import torch

    from .losses import ClsLoss
    from .model import build_classifier

    if cfg.runtime.threads:
        torch.set_num_threads(int(cfg.runtime.threads))
    torch.manual_seed(0)
    n = max(2, int(cfg.health.sanity_batch) * 4)
    ds = ClsDataset(train[:n], cfg, False, int(cfg.classify.img_size), *normalization(cfg))
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    y = torch.tensor([ds.samples[i].label for i in range(len(ds))])
    model = build_classifier(cfg, len(cfg.dataset.classes))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg.health.sanity_lr))
    loss_fn = ClsLoss("ce", len(cfg.dataset.classes))
    losses = []
    for _ in range(int(cfg.health.sanity_steps)):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    ratio = losses[-1] / max(losses[0], 1e-12)
    ok = ratio < float(cfg.health.sanity_loss_ratio)
    return CheckResult("sanity", "pass" if ok else "fail",
                       f"one batch of {len(ds)} images, {len(losses)} steps: loss {losses[0]:.3f} -> {losses[-1]:.3f} "
                       f"({ratio:.2f} of its start; needs < {cfg.health.sanity_loss_ratio:g})",
                       {"losses": losses[:: max(1, len(losses) // 20)]})


def run_checks(cfg, train, val, events=None, names=None) -> list[CheckResult]:
    names = list(cfg.classify.health_checks if names is None else names)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ConfigError(f"classify.health_checks: unknown check(s) {unknown}; known: {', '.join(CHECKS)}")
    out = []
    for name in names:
        t0 = time.time()
        res = {"ids": lambda: _ids(cfg, train, val), "normalisation": lambda: _norm(cfg),
               "splits": lambda: _splits(cfg, train, val), "metric": _metric,
               "sanity": lambda: _sanity(cfg, train)}[name]()
        res.seconds = time.time() - t0
        if events is not None:
            events.emit("health", **res.to_event())
        out.append(res)
    return out


def gate(cfg, train, val, events) -> None:
    """Run the configured checks; log their table; a failing check fails the run (one line)."""
    if not cfg.classify.health_checks:
        return
    results = run_checks(cfg, train, val, events)
    table = format_table(results, title="classification health checks:")
    failed = [r.check for r in results if r.status == "fail"]
    events.log(table, level="error" if failed else "info")
    if failed:
        raise HealthChecksFailed(f"{len(failed)} classification health check(s) failed: {', '.join(failed)} — "
                                 + "; ".join(r.verdict for r in results if r.status == "fail"))
