"""A run's numbers for export, and the series every exporter writes.

:class:`RunBundle` is filled by the command line from the store (no store import here). :func:`export_points` turns
it into :class:`Point` s -- (tag, step, value, wall time) -- under mmsegmentation's names and units
(:mod:`mapsage.interop.names`):

* sampled training steps (split ``train``): ``loss``, ``decode.loss_<term>``, ``lr``, ``decode.acc_seg``, ``time``,
  ``data_time``, ``memory``, ``grad_norm``, ``gpu_util`` ... at the global step;
* epoch means (split ``train_epoch``): ``epoch/<name>`` at the global step reached at the end of the epoch;
* other scalar splits (e.g. a health check's ``sanity``): ``<split>/<name>`` at their step (or epoch);
* evaluations of an epoch: ``mIoU``, ``mAcc``, ``aAcc``, ``mF1``, ``mBIoU``, ``IoU.<class>``, ``Acc.<class>``,
  ``BIoU.<class>`` (percent), prefixed by ``<split>/`` when the split is not the run's own, by ``<variant>/`` when
  the weights are not ``raw`` and by ``domain-<domain>/`` for a domain subset, at the epoch's last global step;
* final evaluations (no epoch): the same names under ``final/`` at the run's last step.

Both TensorBoard and MLflow get exactly these points, so the two exports agree with each other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from .names import CLASS_TO_MMSEG, PERCENT_SCALARS, SUMMARY_TO_MMSEG, safe_key, scalar_to_mmseg


@dataclass
class Point:
    tag: str
    step: int
    value: float
    wall_time: float


@dataclass
class RunBundle:
    """One run as the store holds it.

    ``scalars``: dicts with split, name, epoch, step, value, ts. ``evaluations``: dicts with split, domain,
    variant, epoch, ts, summary {miou, macc, aacc, mf1, mbiou}, classes [{name, iou, acc, biou}], confusion
    (C×C list or None), class_names. ``config``: the resolved config mapping; ``info``: the run row's facts."""
    run_id: str
    name: str
    split: str = "val"
    dataset: Optional[str] = None
    status: Optional[str] = None
    config: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    scalars: list[dict] = field(default_factory=list)
    evaluations: list[dict] = field(default_factory=list)
    started_at: Optional[float] = None
    ended_at: Optional[float] = None


def _finite(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int(v: Any) -> Optional[int]:
    f = _finite(v)
    return int(f) if f is not None else None


def epoch_end_steps(bundle: RunBundle) -> dict[int, int]:
    """Epoch -> the global step reached at its end (from the per-epoch records; else the last sampled step)."""
    ends: dict[int, int] = {}
    for s in bundle.scalars:
        e, st = _int(s.get("epoch")), _int(s.get("step"))
        if e is None or st is None:
            continue
        if s.get("split") == "train_epoch":
            ends[e] = st
        elif s.get("split") == "train" and (e not in ends or st > ends[e]):
            ends.setdefault(e, st)
            ends[e] = max(ends[e], st)
    return ends


def eval_prefix(ev: dict, run_split: str) -> str:
    parts = []
    if ev.get("epoch") is None:
        parts.append("final")
    if ev.get("split") and ev.get("split") != run_split:
        parts.append(safe_key(ev["split"]))
    if ev.get("variant") and ev.get("variant") != "raw":
        parts.append(safe_key(ev["variant"]))
    if ev.get("domain") and ev.get("domain") != "all":
        parts.append("domain-" + safe_key(ev["domain"]))
    return "/".join(parts) + "/" if parts else ""


def export_points(bundle: RunBundle) -> list[Point]:
    """Every point an export writes (see the module doc), in a stable order."""
    points: list[Point] = []
    ends = epoch_end_steps(bundle)
    last_step = max([*ends.values(), 0])
    t0 = bundle.started_at or 0.0
    for s in bundle.scalars:
        value = _finite(s.get("value"))
        if value is None:
            continue
        split, name = s.get("split") or "train", str(s.get("name"))
        epoch, step = _int(s.get("epoch")), _int(s.get("step"))
        wall = _finite(s.get("ts")) or t0
        if split == "train":
            tag, factor = scalar_to_mmseg(name)
            at = step if step is not None else ends.get(epoch, 0)
        elif split == "train_epoch":
            tag, factor = scalar_to_mmseg(name)
            tag = f"epoch/{tag}"
            at = step if step is not None else ends.get(epoch, epoch or 0)
        else:
            tag, factor = f"{safe_key(split)}/{safe_key(name)}", (100.0 if name in PERCENT_SCALARS else 1.0)
            at = step if step is not None else (epoch or 0)
        points.append(Point(tag, int(at), value * factor, wall))
    for ev in bundle.evaluations:
        epoch = _int(ev.get("epoch"))
        at = (ends.get(epoch, epoch) if epoch is not None else last_step) or 0
        prefix = eval_prefix(ev, bundle.split)
        wall = _finite(ev.get("ts")) or t0
        for key, label in SUMMARY_TO_MMSEG.items():
            v = _finite((ev.get("summary") or {}).get(key))
            if v is not None:
                points.append(Point(prefix + label, int(at), v * 100.0, wall))
        for c in ev.get("classes") or []:
            cname = safe_key(c.get("name"))
            for key, label in CLASS_TO_MMSEG.items():
                v = _finite(c.get(key))
                if v is not None:
                    points.append(Point(f"{prefix}{label}.{cname}", int(at), v * 100.0, wall))
    return points


def flatten_config(cfg: Any, prefix: str = "") -> dict[str, str]:
    """Dotted keys -> text values of a nested config mapping (lists as their YAML-flow text)."""
    out: dict[str, str] = {}
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten_config(v, key))
            else:
                out[key] = _text(v)
    elif prefix:
        out[prefix] = _text(cfg)
    return out


def _text(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple, dict)):
        import json
        return json.dumps(v, separators=(", ", ": "), default=str)
    return str(v)
