"""Training (plan stages 1 and 2): the engine, optimiser/schedules, EMA, samplers, CutMix/MixUp, checkpoints, DDP.

* ``mapsage.train.stage.run(ctx)`` -- the stage entry point (kinds ``train`` / ``distill``).
* ``Trainer(cfg, ...).fit(resume_from=None)`` -- the engine, usable without a run (library use, benchmarks).
* ``load_for_inference(path, weights="ema"|"raw"|"auto") -> (model, cfg)``.
* ``python -m mapsage.train CONFIG_OR_RUN_DIR`` -- a standalone run (also under ``torchrun``).
"""
from .checkpoint import load_checkpoint, load_for_inference, save_checkpoint
from .ema import ModelEma
from .engine import Trainer, collate
from .mixing import BatchMixer
from .optim import build_optimizer, build_scheduler, effective_lr, param_groups
from .sampler import EpochSampler, class_aware_weights

__all__ = ["Trainer", "collate", "load_for_inference", "load_checkpoint", "save_checkpoint", "ModelEma",
           "BatchMixer", "build_optimizer", "build_scheduler", "effective_lr", "param_groups",
           "EpochSampler", "class_aware_weights"]
