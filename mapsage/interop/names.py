"""Scalar names and units between the workbench and mmsegmentation.

The workbench stores fractions (mIoU 0.52) and its own names (``ce``, ``acc_seg``); mmsegmentation logs percents
(``mIoU`` 52.0, ``decode.acc_seg`` 91.3) and head-prefixed loss names (``decode.loss_ce``, ``aux.loss_ce``). Exports
write mmseg's names and units so a team's existing TensorBoard / MLflow views read them like their mmseg runs;
imports map back.

Validation summaries: ``mIoU``, ``mAcc``, ``aAcc`` (mmseg), plus ``mF1`` and ``mBIoU`` (the workbench's extra
figures); per class ``IoU.<class>``, ``Acc.<class>`` (mmseg 0.x log names), ``BIoU.<class>``. All in percent.
"""
from __future__ import annotations

import re

from ..registries import LOSS_TERMS as _LOSS_TERMS

# workbench loss-term names that mmseg would log as ``decode.loss_<term>``: the registry's (mapsage/registries.py)
# and distillation's kd, feat and logit_kl
LOSS_TERMS = {*_LOSS_TERMS, "kd", "feat", "logit_kl"}
PERCENT_SCALARS = {"acc_seg", "acc_seg_aux"}
SUMMARY_TO_MMSEG = {"miou": "mIoU", "macc": "mAcc", "aacc": "aAcc", "mf1": "mF1", "mbiou": "mBIoU"}
MMSEG_TO_SUMMARY = {v: k for k, v in SUMMARY_TO_MMSEG.items()}
CLASS_TO_MMSEG = {"iou": "IoU", "acc": "Acc", "biou": "BIoU", "f1": "Fscore", "precision": "Precision"}
MMSEG_TO_CLASS = {v: k for k, v in CLASS_TO_MMSEG.items()}
# keys of an mmseg log record that describe its position, not a measured value
STRUCTURE_KEYS = {"step", "iter", "epoch", "mode", "eta"}

_BAD = re.compile(r"[^\w.\- /:]")


def safe_key(text: str) -> str:
    """A metric key MLflow accepts (letters, digits, ``_ - . / : space``); other characters become ``-``."""
    return _BAD.sub("-", str(text))


def scalar_to_mmseg(name: str) -> tuple[str, float]:
    """(mmseg name, factor) of a workbench training scalar: ``ce`` -> ``decode.loss_ce``, ``aux/ce`` ->
    ``aux.loss_ce``, ``acc_seg`` -> ``decode.acc_seg`` (x100); anything else keeps its name."""
    if name in LOSS_TERMS:
        return f"decode.loss_{name}", 1.0
    if name.startswith("aux/") and name[4:] in LOSS_TERMS | {"loss"}:
        return f"aux.loss_{name[4:]}" if name[4:] != "loss" else "aux.loss", 1.0
    if name == "acc_seg":
        return "decode.acc_seg", 100.0
    if name == "acc_seg_aux":
        return "aux.acc_seg", 100.0
    return safe_key(name), 1.0


def scalar_from_mmseg(name: str) -> tuple[str, float]:
    """(workbench name, factor) of an mmseg training scalar (inverse of :func:`scalar_to_mmseg`)."""
    if name.startswith("decode.loss_"):
        return name[len("decode.loss_"):], 1.0
    if name.startswith("aux.loss_"):
        return f"aux/{name[len('aux.loss_'):]}", 1.0
    if name == "decode.acc_seg":
        return "acc_seg", 0.01
    if name == "aux.acc_seg":
        return "acc_seg_aux", 0.01
    return name, 1.0


def is_metric_key(key: str) -> bool:
    """Whether an mmseg key is a validation figure (summary or per class) rather than a training scalar."""
    if key in MMSEG_TO_SUMMARY or key in ("mDice", "mFscore", "mPrecision", "mRecall"):
        return True
    head = key.split(".", 1)[0]
    return "." in key and head in ("IoU", "Acc", "BIoU", "Fscore", "Precision", "Recall", "Dice")
