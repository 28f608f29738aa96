"""Losses: CE, OHEM, Dice, Lovász-softmax, Focal and a boundary term, mixed by an epoch schedule
(``loss.schedule``) with the plan's Lovász guard. All terms take hard or MixUp-soft targets and honour the ignore
index. ``SegLoss.add_term`` is the hook for extra losses (distillation)."""
from .compose import SegLoss, describe_mix
from .terms import TERMS, Targets, TermContext, boundary_loss, label_edges

__all__ = ["SegLoss", "describe_mix", "TERMS", "Targets", "TermContext", "boundary_loss", "label_edges"]


def build_loss(cfg, num_classes=None) -> SegLoss:
    return SegLoss(cfg, num_classes)
