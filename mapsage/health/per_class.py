"""Check 2 — per-class reporting: every class has its IoU recorded (or is named as excluded because it is absent
from prediction and label), the mean is the mean of exactly those, and the weakest classes are named.

The evaluation looked at is, in order:

1. the run under test (``stage.checkpoint`` = a run id or folder): its latest ``metrics`` record of the whole
   split in its event file — the final evaluation if there is one, else the last training-time validation;
2. a checkpoint file without such a record: a quick evaluation of that checkpoint;
3. no run under test: a quick evaluation of the sanity-fit model (trained on one small batch — its numbers only
   show that per-class reporting works and must not be read as model quality; the verdict says so).

Quick evaluations go through the real path (``mapsage.infer.evaluate`` writing ``metrics`` events) on
``health.quick_eval_tiles`` validation tiles; the record is read back from a scratch event file, so what is
checked is exactly what the store would ingest."""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..events import EventWriter, read_events
from .context import HealthRun
from .result import CheckResult
from .runref import latest_evaluation, resolve_run_ref, training_config_under_test


def quick_eval_picks(ds, n: int) -> list[int]:
    """Up to ``n`` validation tiles for a quick evaluation: greedily the tile adding the most classes not yet
    covered per pixel it costs (so the few tiles show as many classes as the split has, cheaply), then the
    smallest remaining ones. Deterministic."""
    from ..data import image_size

    n = max(1, min(n, len(ds)))
    sizes, classes = [], []
    for i, s in enumerate(ds.samples):
        hh, ww = image_size(s.image_path)
        sizes.append(hh * ww)
        mask = ds.load_mask(i) if hasattr(ds, "load_mask") else None
        classes.append(set(np.unique(mask).tolist()) - {ds.ignore_index} if mask is not None else set())
    picked: list[int] = []
    covered: set = set()
    while len(picked) < n:
        rest = [i for i in range(len(ds)) if i not in picked]
        gain = [(len(classes[i] - covered) / sizes[i], -sizes[i], -i) for i in rest]
        best = rest[max(range(len(rest)), key=lambda k: gain[k])]
        if not classes[best] - covered:
            best = min(rest, key=lambda i: (sizes[i], i))
        picked.append(best)
        covered |= classes[best]
    return sorted(picked)


def _quick_evaluation(h: HealthRun, model, label: str) -> dict:
    """Evaluate ``model`` on ``health.quick_eval_tiles`` validation tiles with the config's eval settings and
    return the ``metrics`` record it writes (overall, domain 'all')."""
    import torch

    from ..infer import evaluate

    cfg = h.cfg
    ds = h.dataset(cfg.dataset.val_split, train=False)
    picks = quick_eval_picks(ds, int(cfg.health.quick_eval_tiles))
    subset = torch.utils.data.Subset(ds, picks)
    with tempfile.TemporaryDirectory(prefix="mapsage-health-eval-") as tmp:
        writer = EventWriter(tmp, fsync=False)
        evaluate(model, subset, cfg, split=cfg.dataset.val_split, variant=label, device=h.device, events=writer,
                 num_workers=0, show_bar=False, should_stop=h.should_stop)
        records, _ = read_events(Path(tmp) / "events.jsonl")
    metrics = [r for r in records if r.get("type") == "metrics" and r.get("domain", "all") == "all"]
    if not metrics:
        raise RuntimeError("mapsage.infer.evaluate wrote no 'metrics' event")
    return metrics[-1]


def verify_record(rec: dict, classes: list[str]) -> tuple[list[str], list[str], dict]:
    """(problems, warnings, facts) of one ``metrics`` record against the expected class list."""
    problems: list[str] = []
    warnings: list[str] = []
    rows = rec.get("classes") or []
    names = [r.get("name") for r in rows]
    excluded = list(rec.get("excluded_classes") or [])
    facts: dict[str, Any] = {"per_class": {r.get("name"): r.get("iou") for r in rows}, "excluded": excluded}
    if not rows:
        problems.append("the evaluation recorded no per-class rows (metrics event without 'classes')")
        return problems, warnings, facts
    if names != list(classes):
        problems.append(f"per-class rows name {names}, the dataset's classes are {list(classes)}")
    ious = {}
    for r in rows:
        v = r.get("iou")
        if v is None:
            if r.get("name") not in excluded:
                problems.append(f"class {r.get('name')} has no IoU and is not listed as excluded")
            continue
        if not (0.0 <= float(v) <= 1.0) or not math.isfinite(float(v)):
            problems.append(f"class {r.get('name')} has IoU {v} outside [0, 1]")
        ious[r.get("name")] = float(v)
    miou = (rec.get("summary") or {}).get("miou")
    if ious and miou is not None:
        expect = sum(ious.values()) / len(ious)
        facts["miou"] = miou
        facts["mean_of_recorded"] = expect
        if abs(float(miou) - expect) > 1e-6:
            problems.append(f"recorded mIoU {float(miou):.4f} is not the mean of the {len(ious)} recorded class IoUs "
                            f"({expect:.4f}): absent classes or the ignore index are averaged in")
    if excluded:
        warnings.append(f"class(es) {excluded} absent from this evaluation's labels and predictions: their IoU is "
                        f"unknown")
    facts["ious"] = ious
    return problems, warnings, facts


def check_per_class(h: HealthRun) -> CheckResult:
    cfg = h.cfg
    k = max(1, int(cfg.health.weak_classes))
    evidence: dict[str, Any] = {}
    rec: Optional[dict] = None
    classes = list(cfg.dataset.classes)
    if cfg.stage.checkpoint:
        ref = resolve_run_ref(cfg.stage.checkpoint)
        if ref.run_dir is not None and (ref.run_dir / "config.yaml").exists() or ref.checkpoint is not None:
            train_cfg, _ = training_config_under_test(cfg)
            classes = list(train_cfg.dataset.classes)
        if ref.run_dir is not None:
            rec = latest_evaluation(ref.run_dir)
            if rec is not None:
                kind = "final evaluation" if rec.get("epoch") is None else f"validation at epoch {rec.get('epoch')}"
                source = f"{kind} of run {ref.run_dir.name} ({rec.get('split')}, variant {rec.get('variant')})"
        if rec is None:
            if ref.checkpoint is None:
                return CheckResult("per_class", "fail",
                                   f"run {cfg.stage.checkpoint} has no evaluation in its event file and no checkpoint "
                                   f"to evaluate; train or evaluate it first", evidence)
            from ..models.checkpoint import load_for_inference
            model, _ = load_for_inference(ref.checkpoint, weights="auto", device=h.device)
            h.progress("per_class: quick evaluation of the checkpoint")
            rec = _quick_evaluation(h, model, "health-quick")
            source = f"quick evaluation of {ref.checkpoint.name} on {rec.get('n_images')} {rec.get('split')} tiles"
    else:
        from .sanity import train_sanity
        h.progress("per_class: quick evaluation of the sanity-fit model")
        sanity = train_sanity(h)
        if sanity.get("model") is None:
            return CheckResult("per_class", "fail", f"no model to evaluate: {sanity.get('error')}", evidence)
        rec = _quick_evaluation(h, sanity["model"], "health-quick")
        source = (f"quick evaluation of the sanity-fit model on {rec.get('n_images')} {rec.get('split')} tiles "
                  f"(one-batch fit: shows reporting works, not model quality; set stage.checkpoint to check a run)")
    evidence["source"] = source
    evidence["record"] = {key: rec.get(key) for key in ("split", "domain", "variant", "epoch", "summary",
                                                         "classes", "excluded_classes", "n_images")}
    problems, warnings, facts = verify_record(rec, classes)
    ious = facts.pop("ious", {})
    evidence.update(facts)
    weakest = sorted(ious.items(), key=lambda kv: kv[1])[:k]
    evidence["weakest"] = [{"class": n, "iou": v} for n, v in weakest]
    weak_txt = ", ".join(f"{n} {v:.3f}" for n, v in weakest)
    if problems:
        return CheckResult("per_class", "fail", "; ".join(problems) + f" ({source})", evidence)
    miou = facts.get("miou")
    verdict = (f"per-class IoU recorded for {len(ious)}/{len(classes)} classes, mIoU {miou:.3f} = their mean; "
               f"weakest: {weak_txt} — {source}")
    if warnings:
        return CheckResult("per_class", "warn", verdict + "; " + "; ".join(warnings), evidence)
    return CheckResult("per_class", "pass", verdict, evidence)
