"""The metric registry: the names of the workbench's metrics, one table that the config schema
(``train.save_best_by``), the command line, reports and the app read, so a figure is called the same everywhere (F1
is Dice, and says so; mmseg's mFscore is a different figure). No imports: the config reads it without loading the
metrics engine (re-exported by :mod:`mapsage.metrics.names`)."""

from __future__ import annotations

# summary key -> (short label, long description)
METRICS: dict[str, tuple[str, str]] = {
    "miou": ("mIoU", "mean IoU over classes present in prediction or label (mmseg mIoU)"),
    "macc": ("mAcc", "mean per-class recall (mmseg mAcc)"),
    "aacc": ("aAcc", "pixel accuracy over valid pixels (mmseg aAcc)"),
    "mf1": ("Dice (mmseg mDice)", "mean Dice 2I/(L+P); a class predicted or labelled but never matched scores 0"),
    "mfscore": ("F-score (mmseg mFscore)",
                "mean F-score 2pr/(p+r); classes without a true positive are left out, as in mmseg"),
    "mfscore_fg": ("mean F-score (foreground)",
                   "face-parsing mean F-score: per-class F-score (Dice) averaged over the foreground classes"),
    "mbiou": ("mBIoU", "mean Boundary IoU (Cheng et al. 2021, band of eval.boundary_px)"),
    "per_image_miou": ("per-image mIoU", "mean over images of each image's own mIoU (not the dataset mIoU)"),
    # image classification (mapsage.metrics.classification)
    "top1": ("Top-1", "share of images whose most probable class is the label"),
    "top5": ("Top-5", "share of images whose label is among the 5 most probable classes (all, below 5 classes)"),
    "macro_f1": ("Macro F1", "mean per-class F1 over classes labelled or predicted (scikit-learn macro average)"),
    "ece": ("ECE", "expected calibration error of the image confidences (15 equal-width bins)"),
}

# per-class key -> short label
CLASS_METRICS: dict[str, str] = {
    "iou": "IoU", "acc": "Acc", "precision": "Precision", "f1": "Dice", "fscore": "F-score (mmseg)",
    "biou": "BIoU", "boundary_pixels": "boundary px (label)",
}

# metrics a run can be ranked and checkpoints selected by (train.save_best_by, early stopping)
SELECTABLE = ("miou", "mbiou", "mf1", "mfscore", "mfscore_fg", "macc", "aacc")

# the five figures every segmentation evaluation reports: the reliability card's rows, the external (benchmark)
# scores a run may record (store.scores, ``mapsage runs score --metric``)
HEADLINE = ("miou", "mbiou", "macc", "aacc", "mf1")

# a report's evaluation table, in its column order (mapsage.report.tables)
REPORT_SUMMARY = ("miou", "mbiou", "macc", "mf1", "aacc", "per_image_miou")
# the validation curves a report draws per epoch (mapsage.report.tables)
CURVE_METRICS = ("miou", "mbiou", "macc")

# image classification (mapsage.metrics.classification): the summary keys of a classification evaluation
CLASSIFICATION = ("top1", "top5", "macro_f1", "ece")

# the per-epoch validation figures a sweep trial reports (``sweep.metric``), by ``task``: the config schema, its
# cross-check of task and metric, ``app/views/sweeps.py`` and the knob form's sweep part read them
SWEEP_METRICS_SEG = ("miou", "mbiou", "mf1", "macc", "aacc")
SWEEP_METRICS_CLS = ("top1", "macro_f1")
SWEEP_METRICS: dict[str, tuple[str, ...]] = {"segmentation": SWEEP_METRICS_SEG, "classification": SWEEP_METRICS_CLS}


def metric_label(key: str) -> str:
    """The short label of a summary or per-class metric key (the key itself when unknown)."""
    if key in METRICS:
        return METRICS[key][0]
    return CLASS_METRICS.get(key, key)
