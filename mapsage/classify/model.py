"""Classifiers: a timm backbone (local pretrained weights only) with a linear, cosine or ArcFace head.

``ClsNet.forward(x, target=None) -> logits [B, C]``. The cosine head scores ``s · cos(f, w_c)``; ArcFace adds the
angular margin ``m`` to the true class during training (hard targets only: a mixed batch is scored without the
margin). ``features(x)`` returns the backbone's last feature map (what Grad-CAM weighs) and ``head_from(f)`` the
logits from it."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError
from ..models.pretrained import check_pretrained_value, extract_state_dict, read_weights


def check_weights(cfg) -> Optional[Path]:
    """The local weights file of ``classify.pretrained`` (None for random init); a hub name or missing file is a
    one-line error naming the key."""

    try:
        return check_pretrained_value(cfg.classify.pretrained)
    except CheckpointError as exc:
        raise CheckpointError(str(exc).replace("model.pretrained", "classify.pretrained")) from None


class CosineHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, scale: float = 30.0, margin: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * 0.01)
        self.scale = float(scale)
        self.margin = float(margin)

    def forward(self, f: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        cos = F.linear(F.normalize(f, dim=1), F.normalize(self.weight, dim=1)).clamp(-1 + 1e-6, 1 - 1e-6)
        if self.margin > 0 and self.training and target is not None and target.dim() == 1:
            theta = torch.acos(cos)
            onehot = F.one_hot(target, cos.shape[1]).bool()
            cos = torch.where(onehot, torch.cos(theta + self.margin), cos)
        return self.scale * cos


class ClsNet(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, head: str = "linear", scale: float = 30.0,
                 margin: float = 0.2):
        super().__init__()
        self.backbone = backbone
        dim = int(backbone.num_features)
        self.head_kind = head
        if head == "linear":
            self.head = nn.Linear(dim, num_classes)
        else:
            self.head = CosineHead(dim, num_classes, scale, margin if head == "arcface" else 0.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def head_from(self, feats: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        pooled = self.backbone.forward_head(feats, pre_logits=True)
        if self.head_kind == "linear":
            return self.head(pooled)
        return self.head(pooled, target)

    def forward(self, x: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.head_from(self.features(x), target)


def build_classifier(cfg, num_classes: int, load_weights: bool = True) -> ClsNet:
    import timm

    c = cfg.classify
    try:
        backbone = timm.create_model(c.model, pretrained=False, num_classes=0, drop_rate=float(c.drop_rate),
                                     drop_path_rate=float(c.drop_path) or None)
    except RuntimeError as exc:
        raise CheckpointError(f"classify.model: timm has no model {c.model!r} ({exc}); pick a name from "
                              f"timm.list_models()") from None
    except TypeError:
        backbone = timm.create_model(c.model, pretrained=False, num_classes=0)
    model = ClsNet(backbone, num_classes, c.head, c.head_scale, c.arcface_margin)
    path = check_weights(cfg) if load_weights else None
    if path is not None:
        sd = extract_state_dict(read_weights(path))
        own = backbone.state_dict()
        ok = {k: v for k, v in sd.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
        share = len(ok) / max(1, len(own))
        if share < float(cfg.model.pretrained_min_loaded):
            raise CheckpointError(f"classify.pretrained: {path} fills only {share:.0%} of {c.model}'s tensors "
                                  f"({len(ok)}/{len(own)}); is it a {c.model} checkpoint?")
        backbone.load_state_dict(ok, strict=False)
    return model


def param_groups(model: ClsNet, cfg, lr: float) -> list[dict]:
    """AdamW groups: no weight decay on norms and biases; with ``train.layer_decay`` timm's layer-wise LR decay
    over the backbone's blocks (``lr_mult`` per group, the head at ``train.head_lr_mult``)."""
    wd = float(cfg.train.weight_decay)
    decay = cfg.train.layer_decay
    groups: list[dict] = []
    if decay:
        from timm.optim import param_groups_layer_decay

        bb = param_groups_layer_decay(model.backbone, weight_decay=wd, layer_decay=float(decay))
        for g in bb:
            g["lr_mult"] = float(g.pop("lr_scale", 1.0))
            groups.append(g)
    else:
        d, nd = [], []
        for n, p in model.backbone.named_parameters():
            if p.requires_grad:
                (nd if p.ndim <= 1 or n.endswith(".bias") else d).append(p)
        m = float(cfg.train.backbone_lr_mult)
        groups += [{"params": d, "weight_decay": wd, "lr_mult": m}, {"params": nd, "weight_decay": 0.0, "lr_mult": m}]
    groups.append({"params": list(model.head.parameters()), "weight_decay": wd,
                   "lr_mult": float(cfg.train.head_lr_mult)})
    for g in groups:
        g["lr"] = lr * g["lr_mult"]
    return [g for g in groups if g["params"]]


def effective_lr(cfg) -> tuple[float, str]:
    """``lr = lr_ref · B_global / base_batch`` (``train.scale_lr``), clamped to ``classify.lr_clamp``."""
    lr = float(cfg.train.lr)
    gb = int(cfg.train.batch_size) * max(1, int(cfg.runtime.gpus or 1)) * max(1, int(cfg.train.accumulate))
    note = f"lr {lr:g}"
    if cfg.train.scale_lr:
        lr = lr * gb / float(max(1, cfg.train.base_batch))
        note += f" x {gb}/{cfg.train.base_batch}"
    lo, hi = cfg.classify.lr_clamp
    clamped = min(max(lr, float(lo)), float(hi))
    note += f" = {lr:.3g}" + (f", clamped to {clamped:.3g}" if not math.isclose(clamped, lr) else "")
    return clamped, note
