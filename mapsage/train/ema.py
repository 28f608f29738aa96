"""Exponential moving average of model weights (``train.ema``), evaluated beside the raw weights.

After every optimiser step: ``ema = d * ema + (1 - d) * weights`` for floating-point tensors (buffers such as
BatchNorm statistics included), integer buffers copied. With ``train.ema.warmup`` the decay is
``d_t = min(decay, (1 + t) / (10 + t))`` (TensorFlow's ``num_updates`` rule), so a short run's EMA is not dominated
by the random initialisation; without it ``d_t = decay``.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..models import unwrap


class ModelEma:
    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.module = copy.deepcopy(unwrap(model))
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0

    def decay_at(self, updates: int) -> float:
        if self.warmup:
            return min(self.decay, (1.0 + updates) / (10.0 + updates))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        d = self.decay_at(self.updates)
        self.updates += 1
        src = unwrap(model).state_dict()
        floats_e, floats_s = [], []
        for k, v in self.module.state_dict().items():
            s = src[k].detach()
            if v.dtype.is_floating_point:
                floats_e.append(v)
                floats_s.append(s.to(v.dtype))
            else:
                v.copy_(s)
        if floats_e:
            torch._foreach_lerp_(floats_e, floats_s, 1.0 - d)
        return d

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict, updates: int | None = None) -> None:
        self.module.load_state_dict(state)
        if updates is not None:
            self.updates = int(updates)

    def to(self, device) -> "ModelEma":
        self.module.to(device)
        return self
