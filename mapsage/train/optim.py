"""Optimiser and learning-rate schedule: AdamW with layer-wise LR, warmup then cosine per iteration.

* Parameter groups: encoder ("backbone", LR × ``train.backbone_lr_mult``) and everything else ("head", decoder and
  heads, LR × ``train.head_lr_mult``), each split into decayed weights and no-decay parameters (biases, norm
  weights, position embeddings, tokens), as mmsegmentation's SegFormer recipe does.
* ``effective_lr``: ``train.lr`` scaled linearly with the global batch (``batch_size × world_size × accumulate``)
  over ``train.base_batch`` when ``train.scale_lr``.
* :func:`build_scheduler`: the per-iteration schedule ``train.lr_schedule`` names (:class:`mapsage.schedules.LRSchedule`:
  linear warmup, then cosine to ``min_lr_ratio × peak`` by default), stepped once per optimiser step.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..models import unwrap
from ..schedules import build_schedule

NO_DECAY_NAMES = ("pos_embed", "cls_token", "dist_token", "relative_position_bias_table", "absolute_pos_embed",
                  "pos_block", "mask_token", "reg_token")


def global_batch(cfg, world_size: int = 1) -> int:
    return int(cfg.train.batch_size) * int(world_size) * max(1, int(cfg.train.accumulate))


def effective_lr(cfg, world_size: int = 1) -> float:
    lr = float(cfg.train.lr)
    if cfg.train.scale_lr:
        lr *= global_batch(cfg, world_size) / float(max(1, cfg.train.base_batch))
    return lr


def _no_decay(name: str, p: nn.Parameter) -> bool:
    return p.ndim <= 1 or name.endswith(".bias") or any(k in name for k in NO_DECAY_NAMES)


def param_groups(model: nn.Module, cfg) -> list[dict]:
    """Four groups (backbone/head × decay/no_decay) with ``lr_mult`` and ``weight_decay``; empty ones dropped.

    Frozen parameters are included: they get no gradient (AdamW skips them) until they are unfrozen."""
    if cfg.train.layer_decay is not None or cfg.train.layer_tiers:
        from .llrd import llrd_param_groups  # per-block groups (train.layer_decay / layer_tiers)
        return llrd_param_groups(model, cfg, _no_decay)[0]
    m = unwrap(model)
    enc_ids = {id(p) for p in m.encoder.parameters()} if hasattr(m, "encoder") else set()
    wd = float(cfg.train.weight_decay)
    buckets: dict[tuple[str, bool], list] = {}
    for name, p in m.named_parameters():
        part = "backbone" if id(p) in enc_ids else "head"
        buckets.setdefault((part, _no_decay(name, p)), []).append(p)
    mult = {"backbone": float(cfg.train.backbone_lr_mult), "head": float(cfg.train.head_lr_mult)}
    groups = []
    for part in ("backbone", "head"):
        for nd in (False, True):
            ps = buckets.get((part, nd))
            if ps:
                groups.append({"params": ps, "name": f"{part}{'_no_decay' if nd else ''}", "lr_mult": mult[part],
                               "weight_decay": 0.0 if nd else wd})
    return groups


def build_optimizer(model: nn.Module, cfg, world_size: int = 1) -> tuple[torch.optim.Optimizer, float]:
    """AdamW over :func:`param_groups`. Returns (optimizer, peak LR)."""
    peak = effective_lr(cfg, world_size)
    groups = param_groups(model, cfg)
    for g in groups:
        g["lr"] = peak * g["lr_mult"]
    betas = tuple(float(b) for b in cfg.train.betas)
    kwargs = {}
    if any(p.is_cuda for g in groups for p in g["params"]):
        kwargs["fused"] = True
    opt = torch.optim.AdamW(groups, lr=peak, betas=betas, weight_decay=float(cfg.train.weight_decay), **kwargs)
    return opt, peak


def build_scheduler(optimizer, cfg, peak_lr: float, steps_per_epoch: int):
    """The per-iteration schedule ``train.lr_schedule`` names (:mod:`mapsage.schedules`)."""
    return build_schedule(optimizer, cfg, peak_lr, steps_per_epoch)
