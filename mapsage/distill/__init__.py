"""Knowledge distillation (plan stage 2): a large frozen teacher trains a SegFormer student.

* :mod:`.teacher` -- ``build_teacher(cfg, device)``: a timm ViT (DINOv2 / DINOv3 / DINOv3-SAT, or a tiny custom
  config) from a local weights file, or a workbench segmentation checkpoint; frozen, eval mode, optional bf16/fp16.
  ``make_random_teacher(path, ...)`` writes a random-init stand-in for demos and tests.
* :mod:`.losses` -- the extra-loss terms ``kd/feat`` (1x1-projected student stages vs teacher features, L2 or
  attention transfer) and ``kd/logit`` (temperature-scaled KL, T^2), plus their functional forms.
* :mod:`.targets` -- teacher targets computed once per batch, the feature cache and its rule (``cache_rule``).
* :mod:`.data` -- ``TeacherViewDataset``: training crops that carry their source-tile coordinates (tile cache).
* :mod:`.stage` -- ``run(ctx)``: the distillation stage with its A/B against the same student without teacher.
* ``python -m mapsage.distill make-teacher OUT.pth`` -- write a random-init tiny ViT teacher.

Importing this package imports torch (it is only used by training processes).
"""
from .build import build_distill_losses, check_distill_config, check_stages, student_channels
from .data import TeacherViewDataset
from .losses import (
    FEAT,
    LOGIT,
    FeatureDistillLoss,
    LogitDistillLoss,
    attention_map,
    attention_transfer,
    feature_l2,
    kd_kl,
)
from .targets import TeacherTargets, cache_rule
from .teacher import Teacher, build_teacher, make_random_teacher

__all__ = ["build_teacher", "make_random_teacher", "Teacher", "build_distill_losses", "check_distill_config",
           "check_stages", "student_channels", "TeacherViewDataset", "FeatureDistillLoss", "LogitDistillLoss",
           "feature_l2", "attention_transfer", "attention_map", "kd_kl", "TeacherTargets", "cache_rule", "FEAT",
           "LOGIT", "run"]


def run(ctx):
    """The distillation stage entry point (``mapsage.distill.stage.run``)."""
    from .stage import run as _run
    return _run(ctx)
