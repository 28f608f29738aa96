"""Distillation terms, plugged into the training engine's extra-loss hook (``Trainer(extra_losses=...)``).

* :class:`FeatureDistillLoss` (term ``kd/feat``): each chosen student encoder stage (``distill.student_stages``,
  indices into the encoder's feature maps, ``-1`` the deepest) goes through its own 1x1 convolution to the teacher's
  channel count, is resized (bilinear) to the teacher's target grid and matched with

  - ``l2``: the mean squared error to the teacher's features layer-normalised per cell (channel mean 0, variance 1
    -- ViT token norms vary by orders of magnitude, the normalised target keeps the term's scale stable);
  - ``at`` (attention transfer, Zagoruyko & Komodakis 2017): the squared distance between the L2-normalised
    spatial attention maps ``mean_c(f^2)`` of the projected student features and of the raw teacher features.

  Cells the teacher has no target for (padding / rotation borders in tile-cache mode) are left out. The stages'
  losses are averaged. The projections are trained with the head's learning rate and saved in the checkpoints.
* :class:`LogitDistillLoss` (term ``kd/logit``): ``T^2 * KL(softmax(t / T) || softmax(s / T))`` per pixel,
  averaged over labelled pixels, for a teacher with a segmentation head (``distill.teacher.kind: workbench``).

Each term applies its own weight (``distill.feature_weight`` / ``logit_weight`` or the ``distill.schedule`` phase
of the epoch) and the engine logs the weighted value under the term name; the weights are logged per epoch as
``loss_w/kd/feat`` and ``loss_w/kd/logit``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .targets import TeacherTargets

FEAT, LOGIT = "kd/feat", "kd/logit"


# ---------------------------------------------------------------------------------------------------- functional


def masked_mean(x: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of ``x [B, ..., h, w]`` over the cells where ``valid [B, h, w]`` (all when None); 0 with no cell."""
    if valid is None:
        return x.mean()
    v = valid.to(x.dtype)
    while v.dim() < x.dim():
        v = v.unsqueeze(1)
    per_cell = x.shape[1] if x.dim() == 4 else 1
    denom = v.sum() * per_cell
    return (x * v).sum() / denom.clamp_min(1.0)


def feature_l2(student: torch.Tensor, teacher: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MSE between projected student features and the layer-normalised teacher features, ``[B, D, h, w]``."""
    t = F.layer_norm(teacher.permute(0, 2, 3, 1), teacher.shape[1:2]).permute(0, 3, 1, 2)
    return masked_mean((student - t) ** 2, valid)


def attention_map(f: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Spatial attention ``mean_c(f^2)`` flattened and L2-normalised, ``[B, h*w]`` (invalid cells zeroed)."""
    a = f.pow(2).mean(1)
    if valid is not None:
        a = a * valid.to(a.dtype)
    return F.normalize(a.flatten(1), dim=1, eps=1e-12)


def attention_transfer(student: torch.Tensor, teacher: torch.Tensor,
                       valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over the batch of ``|| a(student) - a(teacher) ||^2`` (0 .. 4)."""
    return (attention_map(student, valid) - attention_map(teacher, valid)).pow(2).sum(1).mean()


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
          valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Temperature-scaled KL divergence ``T^2 * KL(p_t || p_s)`` per pixel, averaged over ``valid`` pixels."""
    T = float(temperature)
    s = student_logits.float()
    t = teacher_logits.float()
    if t.shape[-2:] != s.shape[-2:]:
        t = F.interpolate(t, size=s.shape[-2:], mode="bilinear", align_corners=False)
    log_ps = F.log_softmax(s / T, dim=1)
    log_pt = F.log_softmax(t / T, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(1)                     # [B, H, W]
    if valid is None:
        return kl.mean() * T * T
    v = valid.to(kl.dtype)
    return (kl * v).sum() / v.sum().clamp_min(1.0) * T * T


# ---------------------------------------------------------------------------------------------------- modules


def _allreduce_mean(grad: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        grad /= dist.get_world_size()
    return grad


class FeatureDistillLoss(nn.Module):
    """Term ``kd/feat`` (see the module doc). ``channels``: the student's channel count of each chosen stage."""

    needs_features = True
    trainable = True

    def __init__(self, targets: TeacherTargets, stages: list[int], channels: list[int], kind: str = "l2",
                 seed: int = 0):
        super().__init__()
        if kind not in ("l2", "at"):
            raise ValueError(f"distill.feature_loss must be l2 or at, got {kind!r}")
        self.targets = targets
        self.stages = [int(s) for s in stages]
        self.kind = kind
        dim = targets.teacher.dim
        with torch.random.fork_rng(devices=[]):          # the same initial projections on every DDP rank
            torch.manual_seed(int(seed))
            self.proj = nn.ModuleList(nn.Conv2d(int(c), dim, kernel_size=1) for c in channels)
        self._hooked = False

    def on_epoch_start(self, epoch: int) -> None:
        self.targets.on_epoch_start(epoch)

    def project(self, features: list[torch.Tensor], size: tuple[int, int]) -> list[torch.Tensor]:
        """The chosen student stages projected to the teacher's channels and resized to ``size``."""
        out = []
        for s, proj in zip(self.stages, self.proj):
            f = features[s].float()
            p = proj(f)
            if p.shape[-2:] != tuple(size):
                p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
            out.append(p)
        return out

    def _hook_ddp(self) -> None:
        """Projections live outside the DDP-wrapped model: average their gradients across ranks ourselves."""
        if self._hooked:
            return
        self._hooked = True
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for p in self.parameters():
                p.register_hook(_allreduce_mean)

    def forward(self, batch: dict, outputs) -> torch.Tensor:
        w = self.targets.weights["feature"]
        device = outputs["seg"].device
        if w <= 0:
            return torch.zeros((), device=device)
        self._hook_ddp()
        tg = self.targets.get(batch)
        size = tuple(tg.feat.shape[-2:])
        preds = self.project(outputs["features"], size)
        fn = feature_l2 if self.kind == "l2" else attention_transfer
        value = torch.stack([fn(p, tg.feat, tg.valid) for p in preds]).mean()
        return w * value


class LogitDistillLoss(nn.Module):
    """Term ``kd/logit`` (see the module doc)."""

    needs_features = False
    trainable = False

    def __init__(self, targets: TeacherTargets, temperature: float):
        super().__init__()
        self.targets = targets
        self.temperature = float(temperature)

    def on_epoch_start(self, epoch: int) -> None:
        self.targets.on_epoch_start(epoch)

    def forward(self, batch: dict, outputs) -> torch.Tensor:
        w = self.targets.weights["logit"]
        logits = outputs["seg"] if isinstance(outputs, dict) else outputs
        if w <= 0:
            return torch.zeros((), device=logits.device)
        tg = self.targets.get(batch)
        valid = batch["targets"].valid() if batch.get("targets") is not None else None
        return w * kd_kl(logits, tg.logits, self.temperature, valid)


__all__ = ["FeatureDistillLoss", "LogitDistillLoss", "feature_l2", "attention_transfer", "attention_map", "kd_kl",
           "masked_mean", "FEAT", "LOGIT"]
