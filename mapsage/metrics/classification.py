"""Image-classification metrics: the one implementation used by training-time validation, final evaluation,
fold fusion and reports.

From class probabilities ``[N, C]`` (or logits, softmaxed) and labels ``[N]``:

* ``top1`` accuracy, ``top5`` (top-min(5, C)) accuracy;
* per class: ``precision`` (TP / predicted), ``recall`` (TP / labelled), ``f1`` (2pr / (p + r); 0 where a class
  has no true positive but was labelled or predicted), ``support``;
* ``macro_f1``: mean F1 over the classes that occur in the labels or the predictions (scikit-learn's
  ``f1_score(average="macro", labels=<those classes>)``, ``zero_division=0``); classes absent from both are listed
  in ``excluded_classes``;
* ``confusion``: ``C x C`` counts, rows = label, columns = prediction;
* ``ece`` (confidence ECE, 15 equal-width bins; :func:`mapsage.metrics.calibration.ece`) and ``nll``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@dataclass
class ClsResult:
    top1: float
    top5: float
    macro_f1: float
    ece: float
    nll: float
    n_images: int
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion: np.ndarray
    excluded: list[int] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    k: int = 5
    bins: Optional[dict] = None

    def summary(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "macro_f1": self.macro_f1, "ece": self.ece, "nll": self.nll,
                "topk": self.k}

    def to_event(self, split: str, variant: str, epoch: Optional[int], **extra) -> dict:
        names = self.class_names or [str(i) for i in range(len(self.f1))]
        classes = [{"id": i, "name": names[i], "precision": self.precision[i], "acc": self.recall[i],
                    "recall": self.recall[i], "f1": self.f1[i], "support": self.support[i]}
                   for i in range(len(names))]
        return {"split": split, "domain": "all", "variant": variant, "epoch": epoch, "summary": self.summary(),
                "classes": classes, "excluded_classes": [names[i] for i in self.excluded],
                "confusion": self.confusion.tolist(), "n_images": self.n_images, "task": "classification",
                **({"calibration_bins": self.bins} if self.bins else {}), **extra}


def classification_metrics(probs: np.ndarray, labels: Sequence[int], class_names: Sequence[str] | None = None,
                           n_bins: int = 15, logits: np.ndarray | None = None) -> ClsResult:
    from .calibration import ece_from_bins, reliability_bins

    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels, np.int64)
    n, c = probs.shape
    pred = probs.argmax(1)
    k = min(5, c)
    topk = np.argsort(-probs, axis=1)[:, :k]
    top1 = float((pred == labels).mean()) if n else float("nan")
    top5 = float((topk == labels[:, None]).any(1).mean()) if n else float("nan")
    conf = np.zeros((c, c), np.int64)
    np.add.at(conf, (labels, pred), 1)
    tp = np.diag(conf).astype(np.float64)
    lab = conf.sum(1).astype(np.float64)
    prd = conf.sum(0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(prd > 0, tp / np.maximum(prd, 1), 0.0)
        recall = np.where(lab > 0, tp / np.maximum(lab, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    present = (lab > 0) | (prd > 0)
    macro = float(f1[present].mean()) if present.any() else float("nan")
    bins = reliability_bins(probs.max(1), pred == labels, n_bins, "fixed") if n else None
    ece = ece_from_bins(bins) if bins else float("nan")
    if logits is None:
        p = np.clip(probs[np.arange(n), labels], 1e-12, 1.0)
        nll = float(-np.log(p).mean()) if n else float("nan")
    else:
        from .calibration import nll as _nll
        nll = _nll(logits, labels)
    return ClsResult(top1, top5, macro, ece, nll, int(n), precision.tolist(), recall.tolist(), f1.tolist(),
                     lab.astype(int).tolist(), conf, [int(i) for i in np.where(~present)[0]],
                     list(class_names or []), k, bins)


def temperature_scaled(logits: np.ndarray, labels: Sequence[int], class_names=None, n_bins: int = 15
                       ) -> tuple[float, ClsResult, ClsResult]:
    """(T, metrics before, metrics after) with ``T`` fitted on these logits by NLL
    (:func:`mapsage.metrics.calibration.fit_temperature`)."""
    from .calibration import fit_temperature

    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    t = float(fit_temperature(logits, labels))
    before = classification_metrics(softmax(logits), labels, class_names, n_bins, logits=logits)
    after = classification_metrics(softmax(logits / t), labels, class_names, n_bins, logits=logits / t)
    return t, before, after
