"""Classification losses on hard (``[B]`` class indices) or soft (``[B, C]``, Mixup/CutMix) targets.

* ``ce`` / ``lsce``: cross-entropy, label-smoothed by ``classify.label_smoothing`` (ε; ``lsce`` only; with Mixup
  the smoothing is folded into the mixed targets by timm's ``Mixup``).
* ``focal``: ``-Σ_c t_c (1 - p_c)^γ log p_c`` (Lin et al. 2017, γ = ``classify.focal_gamma``).
* ``balanced_softmax``: cross-entropy of ``logits + log π`` with π the training class prior (Ren et al. 2020);
  evaluation uses the plain logits. Never together with a rebalancing sampler (the config refuses it).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def _soft(target: torch.Tensor, num_classes: int, eps: float) -> torch.Tensor:
    if target.dim() == 2:
        return target
    t = F.one_hot(target, num_classes).float()
    if eps > 0:
        t = t * (1.0 - eps) + eps / num_classes
    return t


class ClsLoss(nn.Module):
    def __init__(self, kind: str, num_classes: int, label_smoothing: float = 0.0, focal_gamma: float = 2.0,
                 class_counts: np.ndarray | None = None):
        super().__init__()
        self.kind = kind
        self.c = int(num_classes)
        self.eps = float(label_smoothing) if kind == "lsce" else 0.0
        self.gamma = float(focal_gamma)
        prior = None
        if kind == "balanced_softmax":
            counts = np.asarray(class_counts if class_counts is not None else np.ones(self.c), np.float64)
            prior = torch.tensor(np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0)), dtype=torch.float32)
        self.register_buffer("log_prior", prior if prior is not None else torch.zeros(self.c), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = _soft(target, self.c, self.eps)
        z = logits.float()
        if self.kind == "balanced_softmax":
            z = z + self.log_prior.to(z.device)
        logp = F.log_softmax(z, dim=1)
        if self.kind == "focal":
            return -(t * (1.0 - logp.exp()).pow(self.gamma) * logp).sum(1).mean()
        return -(t * logp).sum(1).mean()


def build_loss(cfg, class_counts: np.ndarray) -> ClsLoss:
    c = cfg.classify
    return ClsLoss(c.loss, len(cfg.dataset.classes), c.label_smoothing, c.focal_gamma, class_counts)
