"""The experiment table's descriptive columns, derived from a resolved config mapping (``config.yaml``).

Works on the plain mapping (no ``mapsage.config`` import, so old configs with keys a newer schema lacks still
describe themselves). Columns: arch, backbone, pretrain, loss, aug, lr_schedule, size, tta, post, plus the facts
a run row needs (kind, plan_stage, title, dataset, split, epochs, class names).
"""
from __future__ import annotations

import os
from typing import Any

from mapsage.registries import EXPERIMENT_COLUMNS, VAL_SPLIT_KINDS

NO_MODEL_KINDS = {"demo_job"}


def _g(d: Any, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return default if d is None else d


def _num(x) -> str:
    try:
        return f"{float(x):g}"
    except (TypeError, ValueError):
        return str(x)


def _terms(terms: dict) -> str:
    return "+".join(f"{k}{_num(v)}" for k, v in (terms or {}).items()) or "-"


def loss_summary(cfg: dict) -> str:
    loss = _g(cfg, "loss", default={})
    phases = sorted(_g(loss, "schedule", default=[]) or [], key=lambda p: int(_g(p, "from_epoch", default=0)))
    parts = []
    for i, phase in enumerate(phases):
        text = _terms(_g(phase, "terms", default={}))
        start = int(_g(phase, "from_epoch", default=0))
        parts.append(text if i == 0 and start == 0 else f"e{start}:{text}")
    out = " → ".join(parts) or "-"
    if any("ohem" in (_g(p, "terms", default={}) or {}) for p in phases):
        out += f" (ohem keep {_num(_g(loss, 'ohem_keep', default=0.3))})"
    if _g(loss, "class_weights"):
        out += " cw"
    distill = _g(cfg, "distill", default={})
    if _g(distill, "enabled", default=False) or _g(cfg, "stage", "kind") == "distill":
        kd = [f"{_g(distill, 'feature_loss', default='l2')}×{_num(_g(distill, 'feature_weight', default=1.0))}"]
        if float(_g(distill, "logit_weight", default=0.0) or 0.0) > 0:
            kd.append(f"KL×{_num(distill['logit_weight'])} T{_num(_g(distill, 'temperature', default=3.0))}")
        out += " + KD(" + ", ".join(kd) + ")"
    return out


def aug_summary(cfg: dict) -> str:
    a = _g(cfg, "augment", default={})
    if not _g(a, "enabled", default=True):
        return "none"
    parts = []
    sr = _g(a, "scale_range")
    if sr and list(sr) != [1.0, 1.0]:
        parts.append(f"scale{_num(sr[0])}-{_num(sr[1])}")
    if float(_g(a, "hflip", default=0) or 0) > 0:
        parts.append("hflip")
    if float(_g(a, "vflip", default=0) or 0) > 0:
        parts.append("vflip")
    if float(_g(a, "rotate_deg", default=0) or 0) > 0 and float(_g(a, "rotate_p", default=0) or 0) > 0:
        parts.append(f"rot±{_num(a['rotate_deg'])}")
    if _g(a, "color_jitter") and float(_g(a, "color_jitter_p", default=0) or 0) > 0:
        parts.append("cj")
    if float(_g(a, "cutmix_p", default=0) or 0) > 0:
        parts.append(f"cutmix{_num(a['cutmix_p'])}" + ("(dom)" if _g(a, "cutmix_same_domain", default=True) else ""))
    if float(_g(a, "mixup_p", default=0) or 0) > 0:
        parts.append(f"mixup{_num(a['mixup_p'])}")
    if _g(a, "class_aware_sampling", default=False):
        parts.append("cas")
    return " ".join(parts) or "crop only"


def lr_summary(cfg: dict) -> str:
    t = _g(cfg, "train", default={})
    if not t:
        return "-"
    text = (f"AdamW {_num(_g(t, 'lr', default=0))} wd{_num(_g(t, 'weight_decay', default=0))}, "
            f"warmup {_num(_g(t, 'warmup_epochs', default=0))}e + {_g(t, 'lr_schedule', default='cosine')}, "
            f"{_g(t, 'epochs', default='?')}e")
    bb = _g(t, "backbone_lr_mult")
    if bb is not None and float(bb) != 1.0:
        text += f", bb×{_num(bb)}"
    return text


def tta_summary(cfg: dict) -> str:
    kind = _g(cfg, "stage", "kind")
    if kind == "tta_ab":
        variants = _g(cfg, "tta_ab", "variants", default=[]) or []
        return "A/B: " + ", ".join(
            f"{_g(v, 'name', default='tta')}(s{','.join(_num(s) for s in _g(v, 'scales', default=[]))}"
            f"{'+h' if _g(v, 'hflip') else ''}{'+v' if _g(v, 'vflip') else ''})" for v in variants)
    tta = _g(cfg, "eval", "tta", default={})
    scales = [float(s) for s in (_g(tta, "scales", default=[1.0]) or [1.0])]
    flips = [n for n in ("hflip", "vflip") if _g(tta, n, default=False)]
    if scales == [1.0] and not flips:
        return "off"
    return "s" + ",".join(_num(s) for s in scales) + "".join("+" + f for f in flips)


def post_summary(cfg: dict) -> str:
    kind = _g(cfg, "stage", "kind")
    if kind == "refine":
        chains = _g(cfg, "refine", "chains", default=[]) or []
        return "refine: " + ", ".join(chains)
    if kind == "ensemble":
        members = _g(cfg, "ensemble", "members", default=[]) or []
        return f"ensemble×{len(members)} ({_g(cfg, 'ensemble', 'average', default='prob')})"
    p = _g(cfg, "post", default={})
    if not _g(p, "enabled", default=False):
        return "off"
    parts = [f"min_area({', '.join(f'{k}:{v}' for k, v in (_g(p, 'min_area', default={}) or {}).items())})"] \
        if _g(p, "min_area") else []
    if int(_g(p, "road_min_width", default=0) or 0) > 0:
        parts.append(f"road_w{p['road_min_width']}")
    return " ".join(parts) or "on"


def pretrain_summary(cfg: dict) -> str:
    m = _g(cfg, "model", default={})
    pre = str(_g(m, "pretrained", default="none"))
    text = "none" if pre in ("", "none") else (os.path.basename(pre) if ("/" in pre or "." in pre) else pre)
    ratio = float(_g(m, "freeze", "ratio", default=0) or 0)
    if ratio > 0:
        text += f" (freeze {_num(ratio)}, +1/{_g(m, 'freeze', 'unfreeze_every', default='?')}e)"
    return text


def experiment_columns(cfg: dict | None) -> dict:
    """Descriptive columns for the runs table, from a resolved config mapping (None: all None)."""
    if not cfg:
        return {}
    kind = _g(cfg, "stage", "kind", default="train")
    model = _g(cfg, "model", default={})
    crop = _g(cfg, "augment", "crop_size")
    if kind in VAL_SPLIT_KINDS:
        split = _g(cfg, "dataset", "val_split", default="val")
    else:
        split = _g(cfg, "eval", "split", default="val")
    classes = list(_g(cfg, "dataset", "classes", default=[]) or [])
    facts = {
        "kind": kind,
        "plan_stage": _g(cfg, "stage", "plan_stage"),
        "title": _g(cfg, "stage", "title") or None,
        "dataset": _g(cfg, "dataset", "name"),
        "split": split,
        "num_classes": len(classes) or None,
        "class_names": classes or None,
        "epochs": _g(cfg, "train", "epochs"),
        "arch": _g(model, "arch"),
        "backbone": _g(model, "encoder"),
        "pretrain": pretrain_summary(cfg),
        "loss": loss_summary(cfg),
        "aug": aug_summary(cfg),
        "lr_schedule": lr_summary(cfg),
        "size": "x".join(str(c) for c in crop) if crop else None,
        "tta": tta_summary(cfg),
        "post": post_summary(cfg),
    }
    if kind in NO_MODEL_KINDS:  # the columns would describe a model the stage never builds
        for k in ("epochs", "arch", *EXPERIMENT_COLUMNS):
            facts[k] = None
    if cfg.get("task") == "classification":   # image classification: the classify section describes the model
        facts.update(classification_columns(cfg))
    return facts


def classification_columns(cfg: dict) -> dict:
    c = cfg.get("classify") or {}
    pre = str(c.get("pretrained") or "none")
    loss = str(c.get("loss") or "")
    if loss == "lsce":
        loss += f" eps{c.get('label_smoothing')}"
    mix = [f"mixup{c.get('mixup_alpha')}" if c.get("mixup_alpha") else "",
           f"cutmix{c.get('cutmix_alpha')}" if c.get("cutmix_alpha") else ""]
    sampler = _g(cfg, "augment", "sampler", "kind", default="uniform")
    sizes = [str(c.get("img_size"))] + [str(p.get("size")) for p in (c.get("size_schedule") or [])
                                        if p.get("from_epoch")]
    return {"arch": "classifier", "backbone": c.get("model"),
            "pretrain": "none" if pre.lower() in ("", "none") else pre.rsplit("/", 1)[-1],
            "loss": loss + (f" +{c.get('head')} head" if c.get("head") not in (None, "linear") else ""),
            "aug": " ".join(x for x in ["rrc", *mix, "" if sampler == "uniform" else sampler] if x),
            "size": "→".join(sizes), "tta": "off", "post": "off"}
