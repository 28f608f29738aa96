"""Assembling the distillation terms of a run: student stage channels, the cache rule, the loss modules."""
from __future__ import annotations

from typing import Optional

import torch

from ..config import ConfigError
from ..models import build_model
from .losses import FEAT, LOGIT, FeatureDistillLoss, LogitDistillLoss
from .targets import TeacherTargets, cache_rule, uses_features, uses_logits
from .teacher import Teacher


def student_channels(cfg) -> list[int]:
    """Channels of every encoder feature map the student returns (``forward(x, return_features=True)``)."""
    with torch.random.fork_rng(devices=[]):
        model = build_model(cfg, load_pretrained=False)
    model.eval()
    size = max(64, 2 * int(getattr(model, "output_stride", 32)))
    with torch.no_grad():
        feats = model(torch.zeros(1, 3, size, size), return_features=True)["features"]
    return [int(f.shape[1]) for f in feats]


def check_stages(stages: list[int], channels: list[int]) -> list[int]:
    """The channel count of each chosen stage; ConfigError naming ``distill.student_stages`` when out of range."""
    n = len(channels)
    bad = [s for s in stages if not -n <= int(s) < n]
    if bad:
        raise ConfigError(f"distill.student_stages {bad} out of range: the student's encoder returns {n} feature "
                          f"maps (indices 0..{n - 1} or -{n}..-1; channels {channels})")
    return [channels[int(s)] for s in stages]


def check_distill_config(cfg, teacher: Optional[Teacher] = None) -> list[str]:
    """ConfigErrors for combinations that cannot work; returns warnings for the run log."""
    d = cfg.distill
    warn = []
    if not uses_features(cfg) and not uses_logits(cfg):
        raise ConfigError("distillation is on but distill.feature_weight, distill.logit_weight and every "
                          "distill.schedule phase are 0; give a term a positive weight or set distill.enabled=false")
    if uses_logits(cfg) and d.teacher.kind != "workbench":
        raise ConfigError(f"distill.logit_weight: the {d.teacher.kind} teacher '{d.teacher.model}' has no "
                          f"segmentation head, so there are no teacher logits to distil; set distill.logit_weight=0 "
                          f"(and in distill.schedule), or use distill.teacher.kind: workbench with a trained "
                          f"segmentation checkpoint")
    if uses_logits(cfg) and teacher is not None and not teacher.has_logits:
        raise ConfigError(f"distill.logit_weight: the teacher checkpoint {teacher.source} predicts classes "
                          f"{teacher.class_names}, the student {list(cfg.dataset.classes)}; logit distillation needs "
                          f"the same classes in the same order (set distill.logit_weight=0 to distil features only)")
    if not 2.0 <= d.temperature <= 4.0:
        warn.append(f"distill.temperature {d.temperature:g} is outside the plan's 2..4")
    return warn


def build_distill_losses(cfg, teacher: Teacher, *, device: torch.device | str, dataset=None,
                         tile_views: bool = False, events=None,
                         cache: Optional[tuple[str, str]] = None) -> tuple[dict, TeacherTargets]:
    """The extra-loss modules (``{"kd/feat": ..., "kd/logit": ...}``, only the terms with a weight) on ``device``
    and their shared :class:`TeacherTargets`. ``cache``: a ``(mode, reason)`` already decided by
    :func:`cache_rule` (else decided here)."""
    check_distill_config(cfg, teacher)
    mode, reason = cache or cache_rule(cfg, tile_views, dataset, window=teacher.window or teacher.stride)
    targets = TeacherTargets(teacher, cfg, mode=mode, reason=reason, dataset=dataset, events=events)
    losses: dict = {}
    if uses_features(cfg):
        channels = check_stages(list(cfg.distill.student_stages), student_channels(cfg))
        losses[FEAT] = FeatureDistillLoss(targets, list(cfg.distill.student_stages), channels,
                                          kind=cfg.distill.feature_loss, seed=cfg.train.seed).to(device)
    if uses_logits(cfg):
        losses[LOGIT] = LogitDistillLoss(targets, cfg.distill.temperature).to(device)
    return losses, targets


__all__ = ["build_distill_losses", "student_channels", "check_stages", "check_distill_config"]
