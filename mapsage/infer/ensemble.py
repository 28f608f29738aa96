"""Ensembles: a weighted average of several models' probabilities or logits, as one ``nn.Module``.

Because the ensemble is a module whose forward returns logits, it goes through the same inference path as a
single model (:func:`mapsage.infer.infer_probs`: whole/slide, TTA), and every window and TTA view combines the
members before any averaging over windows or views.

* ``average="logit"``: forward returns ``Σ wᵢ·logitsᵢ`` (weights normalised to sum to 1).
* ``average="prob"``: forward returns ``log(Σ wᵢ·softmax(logitsᵢ))``, whose softmax is exactly the weighted mean
  probability; sliding-window averaging then combines these log-probabilities.

Members trained with another input normalisation than the evaluation config get their input converted
(``x·std_eval + mean_eval`` back to 0..1, then the member's mean/std), so each member sees what it was trained on.
The plan's default weights for two members are 0.6 / 0.4 (``ensemble.members[].weight`` left empty)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..errors import UserError
from .core import forward_padded, model_output_stride

PLAN_TWO_MEMBER_WEIGHTS = (0.6, 0.4)


def default_weights(weights: Sequence[Optional[float]]) -> list[float]:
    """Fill empty weights: 0.6/0.4 for two members with none given, equal shares otherwise; normalised."""
    n = len(weights)
    if n == 0:
        raise UserError("ensemble.members is empty; list at least two checkpoints")
    if all(w is None for w in weights):
        raw = list(PLAN_TWO_MEMBER_WEIGHTS) if n == 2 else [1.0] * n
    elif any(w is None for w in weights):
        raise UserError("ensemble.members: give a weight for every member or for none (none: 0.6/0.4 for two)")
    else:
        raw = [float(w) for w in weights]  # type: ignore[arg-type]
    if any(w < 0 for w in raw) or sum(raw) <= 0:
        raise UserError(f"ensemble.members[].weight must be >= 0 with a positive sum, got {raw}")
    total = sum(raw)
    return [w / total for w in raw]


class Renormalize(nn.Module):
    """Convert input normalised with (mean_in, std_in) into (mean_out, std_out) before calling ``inner``."""

    def __init__(self, inner: nn.Module, mean_in, std_in, mean_out, std_out):
        super().__init__()
        self.inner = inner
        scale = torch.tensor(std_in, dtype=torch.float32) / torch.tensor(std_out, dtype=torch.float32)
        shift = (torch.tensor(mean_in, dtype=torch.float32) - torch.tensor(mean_out, dtype=torch.float32)) / \
            torch.tensor(std_out, dtype=torch.float32)
        self.register_buffer("scale", scale.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, -1, 1, 1), persistent=False)
        self.output_stride = model_output_stride(inner)

    def forward(self, x):
        return self.inner(x * self.scale + self.shift)


class Ensemble(nn.Module):
    """Weighted probability or logit average of member models (see module doc)."""

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[Optional[float]] | None = None,
                 average: str = "prob", num_classes: Optional[int] = None,
                 temperatures: Sequence[Optional[float]] | None = None):
        super().__init__()
        if average not in ("prob", "logit"):
            raise UserError(f"ensemble.average must be 'prob' or 'logit', got {average!r}")
        self.members = nn.ModuleList(members)
        self.weights = default_weights(list(weights) if weights is not None else [None] * len(members))
        if len(self.weights) != len(self.members):
            raise UserError(f"{len(self.weights)} ensemble weights for {len(self.members)} members")
        self.average = average
        self.num_classes = num_classes
        # per-member temperature scaling (ensemble.calibrate: each member's fitted T; None: uncalibrated)
        self.temperatures = list(temperatures) if temperatures is not None else [None] * len(self.members)
        if len(self.temperatures) != len(self.members):
            raise UserError(f"{len(self.temperatures)} temperatures for {len(self.members)} ensemble members")
        strides = [model_output_stride(m) for m in self.members]
        out = 1
        for s in strides:  # least common multiple: every member's input constraint holds
            a, b = out, s
            while b:
                a, b = b, a % b
            out = out * s // a
        self.output_stride = out

    def forward(self, x):
        acc = None
        for w, member, t in zip(self.weights, self.members, self.temperatures):
            logits = forward_padded(member, x, 1, self.num_classes)  # x is already padded by the caller
            if t:
                logits = logits / float(t)
            part = logits * w if self.average == "logit" else logits.softmax(dim=1) * w
            acc = part if acc is None else acc + part
        if self.average == "prob":
            acc = torch.log(acc.clamp_min(torch.finfo(acc.dtype).tiny))
        return acc
