"""Closed vocabularies of the model and the loss, as lists with no dependencies, so the config schema validates
against the same names the code implements (the style of timm's ``_registry.py``: the registry is the list).

* :data:`ARCHITECTURES`: ``model.arch`` -> the segmentation_models_pytorch class that builds it
  (:func:`mapsage.models.build_model`).
* :data:`LOSS_TERMS`: the terms ``loss.schedule`` may weight; :data:`mapsage.losses.TERMS` implements each one but
  ``boundary``, which :class:`mapsage.losses.SegLoss` computes from the boundary head and the label edges.
* :data:`EXPERIMENT_COLUMNS`: the experiment-table columns (store, runner templates, reports).
* :data:`STAGE_KINDS`: ``stage.kind``; ``runners.stages.STAGES`` maps each one to the function that runs it (and
  registers no other), and the named roles below (:data:`TRAINING_KINDS`, :data:`CHECKPOINT_KINDS`, ...) are subsets
  of it that the runner, the store and the app read instead of spelling kinds out.
* :data:`VERDICTS`: a reviewer's verdict on a variant's tile (``store.review``, the review pages, the review queue).
* :data:`SWEEP_SAMPLERS`, :data:`SWEEP_PRUNERS`, :data:`SWEEP_PARAM_TYPES`: ``sweep.sampler``, ``sweep.pruner`` and
  a search-space entry's ``type`` (:mod:`mapsage.sweep` builds each one; the sweep forms offer them).

The metric names are :mod:`mapsage.metric_names`; the corruptions are :mod:`mapsage.corruption_levels`.
tests/mapsage/test_registries.py pins every consumer to these lists and fails on a literal list of three or more names of
a vocabulary anywhere else."""

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

# in the order the launch form's loss-schedule editor shows them (app/widgets/knobs.py)
LOSS_TERMS: tuple[str, ...] = ("ce", "dice", "lovasz", "ohem", "focal", "boundary", "bsce")

# the descriptive columns of the experiment table (store/derive.py computes them from a run's config), in the
# order the runs table, the plan's template cards and reports show them
EXPERIMENT_COLUMNS: tuple[str, ...] = ("backbone", "pretrain", "loss", "aug", "lr_schedule", "size", "tta", "post")
# an image classifier's (mapsage.report.classification): no TTA or post-processing stage
CLASSIFICATION_COLUMNS: tuple[str, ...] = tuple(c for c in EXPERIMENT_COLUMNS if c not in ("tta", "post"))

# Optuna samplers and pruners by name (mapsage.sweep.study builds them), the default first
SWEEP_SAMPLERS: tuple[str, ...] = ("tpe", "random", "grid")
SWEEP_PRUNERS: tuple[str, ...] = ("median", "asha", "none")
# a search-space entry's type (mapsage.sweep.space.Param)
SWEEP_PARAM_TYPES: tuple[str, ...] = ("float", "int", "choice")

STAGE_KINDS: tuple[str, ...] = ("train", "evaluate", "tta_ab", "health", "refine", "distill", "ensemble", "demo_job",
                                "export", "predict", "lr_find", "reliability", "classify")
# roles of the stage kinds (each a subset of STAGE_KINDS)
SEG_TRAINING_KINDS: tuple[str, ...] = ("train", "distill")          # train a segmentation model (the knob form)
TRAINING_KINDS: tuple[str, ...] = (*SEG_TRAINING_KINDS, "classify")  # what a sweep or a --seeds/--folds group repeats
CHECKPOINT_REQUIRED_KINDS: tuple[str, ...] = ("evaluate", "tta_ab", "refine")   # need stage.checkpoint to launch
CHECKPOINT_KINDS: tuple[str, ...] = (*CHECKPOINT_REQUIRED_KINDS, "health")      # read stage.checkpoint (health: optional)
DECIDING_KINDS: tuple[str, ...] = ("tta_ab", "refine", "ensemble")   # decide between variants (A/B decision rows)
MODEL_KINDS: tuple[str, ...] = ("train", "distill", "ensemble")      # a succeeded run is a model to predict with
VAL_SPLIT_KINDS: tuple[str, ...] = ("train", "distill", "health", "demo_job")   # score dataset.val_split (others eval.split)

VERDICTS: tuple[str, ...] = ("better", "worse", "same")
