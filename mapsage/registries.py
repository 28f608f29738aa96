"""Closed vocabularies of the model and the loss, as lists with no dependencies, so the config schema validates
against the same names the code implements (the style of timm's ``_registry.py``: the registry is the list).

* :data:`ARCHITECTURES`: ``model.arch`` -> the segmentation_models_pytorch class that builds it
  (:func:`mapsage.models.build_model`).
* :data:`LOSS_TERMS`: the terms ``loss.schedule`` may weight; :data:`mapsage.losses.TERMS` implements each one but
  ``boundary``, which :class:`mapsage.losses.SegLoss` computes from the boundary head and the label edges.
* :data:`EXPERIMENT_COLUMNS`: the experiment-table columns (store, runner templates, reports).

The metric names are :mod:`mapsage.metric_names`; the corruptions are :mod:`mapsage.corruption_levels`; the review
verdicts are ``store.review.VERDICTS``; the stage kinds are ``runners.stages.STAGES``."""

from __future__ import annotations

ARCHITECTURES: dict[str, str] = {
    "segformer": "Segformer",
    "unet": "Unet",
    "unetplusplus": "UnetPlusPlus",
    "deeplabv3plus": "DeepLabV3Plus",
    "upernet": "UPerNet",
    "fpn": "FPN",
    "dpt": "DPT",
}
ARCH_NAMES: tuple[str, ...] = tuple(ARCHITECTURES)

LOSS_TERMS: tuple[str, ...] = ("ce", "ohem", "dice", "lovasz", "focal", "boundary", "bsce")

# the descriptive columns of the experiment table (store/derive.py computes them from a run's config), in the
# order the runs table, the plan's template cards and reports show them
EXPERIMENT_COLUMNS: tuple[str, ...] = ("backbone", "pretrain", "loss", "aug", "lr_schedule", "size", "tta", "post")
