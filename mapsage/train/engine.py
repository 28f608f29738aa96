"""The training engine (plan stages 1 and 2): one loop for a single process and for DDP.

Per epoch: loss mix from ``loss.schedule`` (Lovász guard applied), encoder groups unfrozen on schedule, a fixed
number of optimiser steps drawn by :class:`~mapsage.train.sampler.EpochSampler` (class-aware when asked), CutMix /
MixUp on the batch, AdamW with layer-wise LR and a per-iteration warmup+cosine schedule, gradient accumulation,
clipping (norm logged), AMP on GPU, EMA; then validation of the raw and the EMA weights through
:func:`mapsage.infer.evaluate` (the final evaluation's code path, whole tiles, ``cfg.eval`` windows/TTA), best
checkpoints by ``train.save_best_by`` (``best.pth`` raw, ``best_ema.pth`` EMA), ``last.pth`` every epoch, early
stopping.

Events (rank 0 only): ``run_info`` (model and data facts), ``log`` (loss mix, freezing, guard decisions,
pretrained report), sampled step ``scalars`` (``split="train"``, every ``train.log_every`` steps: ``loss``, one
value per loss term, ``lr``, ``grad_norm``, ``acc_seg`` (training pixel accuracy, a fraction), ``time`` and
``data_time`` (s per iteration, means since the previous sample), on a GPU ``memory`` (MB, peak allocated) and, with
NVML, ``gpu_util`` / ``gpu_util_max`` (%) and ``gpu_mem_mb``; see :mod:`mapsage.train.telemetry`), per-epoch
``scalars`` (``split="train_epoch"``: mean loss and terms, ``lr``, ``grad_norm`` mean/max, ``epoch_time``,
``data_time``, ``images_per_s``, ``peak_mem_mb``, ``frozen_share``, ``loss_w/<term>``, ``acc_seg`` and the GPU
samples over the epoch; after a validation also ``val_loss`` -- the training loss mix on the whole validation tiles
through the evaluation's inference path, mean over tiles -- ``val_loss_ema`` and ``train_val_gap`` = ``val_loss`` −
``loss``; with ``train.select_by: combo`` also ``val_corrupted`` / ``val_corrupted_ema`` and ``val_combo`` /
``val_combo_ema``), ``metrics`` and ``tiles`` (from ``evaluate``), ``artifact`` (checkpoints), heartbeats through
``ctx.progress``.

Checkpoint selection: ``train.save_best_by`` on clean validation (``train.select_by: clean``), or on
``S = α·clean + (1 − α)·corrupted`` (``select_by: combo``, ``α = train.combo_alpha``): "corrupted" is the mean of
the same metric over ``reliability.combo_corruptions`` at ``reliability.combo_severity`` (deterministic per tile,
:mod:`mapsage.reliability.corruptions`), scored on the validation tiles by the same inference path and metrics
engine. Best checkpoints and early stopping follow ``S``.

Distillation hook: ``Trainer(cfg, extra_losses={"kd": module})``. Each module is called after the segmentation
loss as ``module(batch, outputs) -> scalar tensor`` (its own weight applied inside) where ``batch`` is a dict with
``images`` (after CutMix/MixUp, on the device), ``targets`` (:class:`mapsage.losses.Targets`), ``ids``,
``domains``, ``epoch``, ``step``, ``extra`` (any other per-sample tensors the training set's items carry, stacked
by :func:`collate`); and ``outputs`` is the model's dict ``{"seg", "features", "decoder"[, "boundary"]}``
(features are requested when any module has ``needs_features = True``). Its value is logged under its name.
Modules with parameters (e.g. a feature adapter) are trained with the head's LR group when ``trainable = True``,
and their state is saved in the checkpoints (``extra_losses``) and restored on resume. An extra module may also
define ``on_epoch_start(epoch)``.

Resume: ``Trainer.fit(resume_from=...)`` restores weights, optimiser, scheduler, scaler, EMA, RNG, loss-schedule,
early-stopping and best-metric state and continues from the next epoch (or mid-epoch, skipping the steps already
done). Epoch randomness (sampling, augmentation workers, mixing, dropout) is seeded from ``(train.seed, epoch,
rank)``, so an interrupted and resumed run trains exactly like an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn as nn

from ..config import ConfigError, config_hash, to_dict
from ..data import build_dataset
from ..data.gpu_augment import build_batch_augment
from ..errors import CheckpointError, TrainingError
from ..evalid import model_params, split_size, stamp
from ..events import EventWriter, NullEvents
from ..infer.evaluate import (
    EvalOutcome,
    device_name,
    domain_results,
    emit_metrics,
    evaluate_outcome,
    make_metrics,
    pick_indices,
)
from ..losses import SegLoss, Targets, describe_mix
from ..losses.terms import TERMS
from ..models import FreezeSchedule, build_model, summarize_report
from ..models.addons import describe as describe_addons
from ..models.warm_start import describe as describe_warm
from ..models.warm_start import warm_start
from ..reliability.corruptions import CorruptedView
from ..reliability.scoring import score
from ..runtime import tune_allocator
from . import checkpoint as ck
from .distributed import DistInfo, all_reduce_max, barrier, init_from_env, is_dist
from .ema import ModelEma
from .mixing import BatchMixer
from .optim import build_optimizer, build_scheduler, effective_lr, global_batch
from .sampler import EpochSampler, cached_sample_class_counts, class_aware_weights
from .telemetry import GpuSampler, IterWindow, max_memory_mb, pixel_hits


def collate(items: list[dict]) -> dict:
    out = {"image": torch.stack([it["image"] for it in items]),
           "id": [it.get("id") for it in items],
           "domain": [it.get("domain") or "" for it in items]}
    if all("mask" in it for it in items):
        out["mask"] = torch.stack([it["mask"] for it in items])
    # other per-sample tensors (e.g. mapsage.distill's teacher_view) reach extra losses as batch["extra"]
    for k, v in items[0].items():
        if k not in out and k not in ("image", "mask") and torch.is_tensor(v):
            out[k] = torch.stack([it[k] for it in items])
    return out


def resolve_train_device(cfg, dist_info: DistInfo) -> torch.device:
    want = cfg.runtime.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device is 'cuda' but no CUDA device is available; set runtime.device: auto or cpu")
    if want == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", dist_info.local_rank if dist_info.enabled else torch.cuda.current_device())


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 10_007 + int(rank) * 101) % (2 ** 31 - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def peak_memory_mb(device: torch.device) -> tuple[float, float]:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0    # KiB on Linux
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20, rss
    return rss, rss


class Trainer:
    """Train ``cfg``'s model. Construct, then :meth:`fit`. See the module doc for events, hooks and resume."""

    def __init__(self, cfg, *, run_dir: str | Path | None = None, events: EventWriter | None = None,
                 progress: Optional[Callable[..., None]] = None, should_stop: Optional[Callable[[], bool]] = None,
                 extra_losses: Optional[dict[str, nn.Module]] = None, device: str | torch.device | None = None,
                 train_set=None, val_set=None, show_bar: bool = True, validate: bool = True):
        self.cfg = cfg
        if device is not None:
            dev_type = torch.device(device).type
        else:
            dev_type = "cuda" if (cfg.runtime.device != "cpu" and torch.cuda.is_available()) else "cpu"
        self.dist = init_from_env(dev_type)
        self.rank, self.world = self.dist.rank, self.dist.world_size
        self.is_main = self.rank == 0
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.events = events if (events is not None and self.is_main) else NullEvents()
        self._progress = progress if self.is_main else None
        self._should_stop = should_stop or (lambda: False)
        self.extra_losses = dict(extra_losses or {})
        self.device = torch.device(device) if device is not None else resolve_train_device(cfg, self.dist)
        self.train_set, self.val_set = train_set, val_set
        self.show_bar = show_bar and self.is_main
        self.validate_enabled = validate
        self.ckpt_dir = (self.run_dir / "checkpoints") if self.run_dir is not None else None
        self.history: list[dict] = []
        self.val_history: dict[int, float] = {}
        self.best: dict[str, Any] = {"raw": None, "ema": None, "raw_epoch": None, "ema_epoch": None,
                                     "monitor": None, "monitor_epoch": None}
        self.bad_epochs = 0
        self.val_losses: dict[str, float] = {}          # variant -> validation loss of the last validation
        self.corrupted: dict[str, float] = {}           # variant -> mean corrupted metric (select_by: combo)
        self.last_saved_epoch: Optional[int] = None
        self.stopped_reason: Optional[str] = None
        self._resume_rng: Optional[dict] = None      # RNG state of a mid-epoch checkpoint, restored at its step
        self._resume_aug: Optional[dict] = None
        self._last_ckpt_t = time.monotonic()
        # called after each validated epoch's last.pth with (epoch, {variant: MetricResult}); may raise to end
        # the run (a sweep trial's pruner: mapsage.sweep.trial)
        self.epoch_callback: Optional[Callable[[int, dict], None]] = None

    # ------------------------------------------------------------------------------------------------ set-up
    def _setup_runtime(self) -> None:
        cfg = self.cfg
        tune_allocator(cfg.runtime.keep_freed_memory)
        threads = cfg.runtime.threads
        if threads is None and self.device.type == "cpu" and self.world > 1:
            threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", self.world)))
        if threads:
            torch.set_num_threads(int(threads))
        if cfg.train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        seed_everything(epoch_seed(cfg.train.seed, -1, self.rank))
        self.amp_dtype = None
        if cfg.train.amp and self.device.type == "cuda":
            want = cfg.train.amp_dtype
            if want == "bf16" or (want == "auto" and torch.cuda.is_bf16_supported()):
                self.amp_dtype = torch.bfloat16
            else:
                self.amp_dtype = torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def _setup_data(self) -> None:
        cfg = self.cfg
        if self.train_set is None:
            self.train_set = build_dataset(cfg, cfg.dataset.train_split, train=True)
        if self.val_set is None and self.validate_enabled:
            self.val_set = build_dataset(cfg, cfg.dataset.val_split, train=False)
        bs, accum = int(cfg.train.batch_size), max(1, int(cfg.train.accumulate))
        if cfg.train.steps_per_epoch:
            self.steps_per_epoch = int(cfg.train.steps_per_epoch)
        else:
            self.steps_per_epoch = max(1, len(self.train_set) // (bs * self.world * accum))
        self.micro_per_epoch = self.steps_per_epoch * accum
        weights = None
        if cfg.augment.class_aware_sampling:
            counts = cached_sample_class_counts(self.train_set, cfg)
            weights = class_aware_weights(counts, cfg.augment.class_aware_temp)
        from . import imbalance  # samplers, class_weights: auto, Balanced Softmax prior
        self.imbalance = imbalance.prepare(cfg, cached_sample_class_counts(self.train_set, cfg)
                                           if imbalance.needs_counts(cfg) else None)
        if self.imbalance.sample_weights is not None:
            weights = self.imbalance.sample_weights
        self.sampler = EpochSampler(len(self.train_set), self.micro_per_epoch * bs * self.world, weights=weights,
                                    seed=cfg.train.seed, rank=self.rank, world_size=self.world)
        self.loader_generator = torch.Generator()
        nw = int(cfg.train.num_workers)
        self.loader = torch.utils.data.DataLoader(
            self.train_set, batch_size=bs, sampler=self.sampler, num_workers=nw, collate_fn=collate,
            drop_last=True, pin_memory=self.device.type == "cuda", generator=self.loader_generator,
            persistent_workers=False, prefetch_factor=(2 if nw > 0 else None))
        self.sample_weights = weights

    def _setup_model(self) -> None:
        cfg = self.cfg
        seed_everything(epoch_seed(cfg.train.seed, -1, 0))      # the same initial weights on every rank
        model = build_model(cfg)
        self.warm_report = None
        if cfg.model.init_from:                                  # whole-model warm start (encoder and decoder)
            self.warm_report = warm_start(model, cfg.model.init_from, cfg.model.init_weights)
        self.model_params = sum(p.numel() for p in model.parameters())
        self.pretrained_text = summarize_report(model.pretrained_report)
        if self.world > 1 and self.device.type == "cuda" and any(
                isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)   # mmseg's SyncBN for multi-GPU runs
        model.to(self.device)
        self.model = model                                       # the bare SegModel
        self.freeze = FreezeSchedule(model.encoder, cfg.model.freeze.ratio, cfg.model.freeze.unfreeze_every,
                                     cfg.model.freeze.groups)
        self.loss_fn = SegLoss(cfg).to(self.device)
        self.loss_fn.set_class_stats(self.imbalance.class_weights, self.imbalance.class_prior)
        self.needs_features = False
        for name, module in self.extra_losses.items():
            self.loss_fn.add_term(name, module)
            self.needs_features |= bool(getattr(module, "needs_features", False))
        self.extra_losses_trainable = [m for m in self.extra_losses.values() if getattr(m, "trainable", False)]
        self.optimizer, self.peak_lr = build_optimizer(model, cfg, self.world)
        for m in self.extra_losses_trainable:
            ps = [p for p in m.parameters() if p.requires_grad]
            if ps:
                self.optimizer.add_param_group({"params": ps, "name": "extra", "lr_mult": cfg.train.head_lr_mult,
                                                "weight_decay": float(cfg.train.weight_decay),
                                                "lr": self.peak_lr * cfg.train.head_lr_mult})
        self.scheduler = build_scheduler(self.optimizer, cfg, self.peak_lr, self.steps_per_epoch)
        self.ema = ModelEma(model, cfg.train.ema.decay, cfg.train.ema.warmup) if cfg.train.ema.enabled else None
        from .swa import Swa
        self.swa = Swa(model, cfg) if cfg.train.swa.enabled else None
        self.mixer = BatchMixer(cfg.augment, ignore_index=cfg.loss_ignore_index)
        from .aug_schedule import BatchResizer
        self.resizer = BatchResizer(cfg.augment)                 # progressive resolution / multi-size crops
        self.batch_aug = build_batch_augment(cfg, self.device, self.train_set.mean, self.train_set.std,
                                             log=self.events.log)
        self._mix_params: Optional[dict] = None
        self.ddp_model: nn.Module = model
        self.start_epoch, self.start_step, self.global_step = 0, 0, 0

    def _wrap_ddp(self) -> None:
        """(Re)wrap the model in DDP; called again when unfreezing changes the trainable parameter set."""
        if not is_dist():
            self.ddp_model = self.model
            return
        from torch.nn.parallel import DistributedDataParallel as DDP
        kwargs = {"device_ids": [self.device.index]} if self.device.type == "cuda" else {}
        self.ddp_model = DDP(self.model, broadcast_buffers=True, **kwargs)

    # ------------------------------------------------------------------------------------------------ resume
    def _load_resume(self, path: str | Path) -> None:
        ckpt = ck.load_checkpoint(path)
        saved = ckpt.get("config") or {}
        sm, cm = saved.get("model", {}), self.cfg.model
        if (sm.get("arch"), sm.get("encoder")) != (cm.arch, cm.encoder) or \
                len(saved.get("dataset", {}).get("classes", [])) != self.cfg.dataset.num_classes:
            raise CheckpointError(f"{path}: resume checkpoint is for {sm.get('arch')}/{sm.get('encoder')} with "
                                  f"{len(saved.get('dataset', {}).get('classes', []))} classes, but the config "
                                  f"asks for {cm.arch}/{cm.encoder} with {self.cfg.dataset.num_classes}; resume "
                                  f"with the run's own config")
        self.model.load_state_dict(ckpt["model"])
        for name, state in (ckpt.get("extra_losses") or {}).items():
            if name in self.extra_losses:
                self.extra_losses[name].load_state_dict(state)
        epochs_done = int(ckpt.get("epochs_done", int(ckpt.get("epoch", -1)) + 1))
        # the frozen set of the epoch being resumed must hold before the optimiser state is matched to params
        self.freeze.apply(epochs_done)
        if ckpt.get("optimizer"):
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scheduler"):
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if ckpt.get("ema") is not None:
                self.ema.load_state_dict(ckpt["ema"], ckpt.get("ema_updates"))
            else:
                self.ema = ModelEma(self.model, self.cfg.train.ema.decay, self.cfg.train.ema.warmup)
        self.loss_fn.load_state(ckpt.get("loss_schedule"))
        self.best.update(ckpt.get("best") or {})
        es = ckpt.get("early_stop") or {}
        self.bad_epochs = int(es.get("bad_epochs", 0))
        self.val_history = {int(k): float(v) for k, v in (ckpt.get("val_history") or {}).items()}
        self.history = list(ckpt.get("history") or [])
        self.global_step = int(ckpt.get("global_step", 0))
        self.start_epoch = epochs_done
        self.start_step = int(ckpt.get("step_in_epoch", 0) or 0)
        ck.set_rng_state(ckpt.get("rng"))
        self._resume_rng = ckpt.get("rng") if self.start_step else None
        self._resume_aug = ckpt.get("augment") if self.start_step else None
        self.last_saved_epoch = int(ckpt.get("epoch", -1))
        self.events.log(f"resumed from {path}: {epochs_done} epoch(s) done, global step {self.global_step}"
                        + (f", {self.start_step} step(s) into epoch {epochs_done}" if self.start_step else ""))

    # ------------------------------------------------------------------------------------------------ checkpoints
    def _state(self, epoch: int, step_in_epoch: int, kind: str, metrics: Optional[dict] = None,
               full: bool = True) -> dict:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict() if full else None,
            "scheduler": self.scheduler.state_dict() if full else None,
            "scaler": self.scaler.state_dict() if (full and self.scaler.is_enabled()) else None,
            "epoch": epoch, "epochs_done": epoch + 1, "step_in_epoch": step_in_epoch,
            "global_step": self.global_step, "best": dict(self.best), "config": to_dict(self.cfg),
            "config_hash": config_hash(self.cfg), "rng": ck.rng_state() if full else None,
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "loss_schedule": self.loss_fn.state(), "early_stop": {"bad_epochs": self.bad_epochs},
            "val_history": {str(k): v for k, v in self.val_history.items()}, "history": list(self.history),
            "kind": kind, "metrics": metrics,
            # augmentation generators of an in-process loader: a mid-epoch resume draws the same crops
            "augment": (self.train_set.augment_state() if full and int(self.cfg.train.num_workers) == 0
                        and hasattr(self.train_set, "augment_state") else None),
            # trainable extra-loss modules (distillation projections): saved so a resume continues them
            "extra_losses": {n: m.state_dict() for n, m in self.extra_losses.items()
                             if getattr(m, "trainable", False)} or None,
        }

    def _save(self, name: str, state: dict, **meta) -> Optional[Path]:
        if not self.is_main or self.ckpt_dir is None:
            return None
        path = ck.save_checkpoint(self.ckpt_dir / name, state)
        self.events.artifact("checkpoint", path, variant=name.rsplit(".", 1)[0], **meta)
        if name == ck.LAST:
            self._last_ckpt_t = time.monotonic()
        return path

    def _mid_epoch_due(self, step: int) -> bool:
        """A mid-epoch ``last.pth`` is due: ``train.checkpoint_every_steps`` optimiser steps, or
        ``train.checkpoint_every_min`` minutes since the last one (never at an epoch's last step, which the
        epoch-end checkpoint covers)."""
        if step >= self.steps_per_epoch or not self.is_main or self.ckpt_dir is None:
            return False
        every_steps = int(self.cfg.train.checkpoint_every_steps or 0)
        if every_steps > 0 and self.global_step % every_steps == 0:
            return True
        every_min = float(self.cfg.train.checkpoint_every_min or 0)
        return every_min > 0 and time.monotonic() - self._last_ckpt_t >= every_min * 60.0

    # ------------------------------------------------------------------------------------------------ helpers
    def _emit_progress(self, **kw) -> None:
        if self._progress is not None:
            self._progress(**kw)

    def _apply_freeze(self, epoch: int) -> None:
        changed = self.freeze.apply(epoch)
        if self.freeze.active and changed:
            d = self.freeze.describe(epoch)
            self.events.log(f"epoch {epoch}: encoder groups frozen {d['frozen_groups']}/{d['groups']} "
                            f"({d['frozen_share']:.0%} of encoder parameters)")
        if changed or self.ddp_model is self.model:
            self._wrap_ddp()

    def _finish_swa(self) -> None:
        """BatchNorm statistics of the weight average, its validation (variant ``swa``) and ``swa.pth``."""
        swa, cfg = self.swa, self.cfg
        used = 0
        if swa.has_bn():
            self.sampler.set_epoch(int(cfg.train.epochs))
            want = swa.bn_batches or self.micro_per_epoch
            feed = (b["image"] for b in self.loader)
            if self.batch_aug is not None:                   # the batches training saw: crop size, augmented
                feed = (self.batch_aug(b["image"].to(self.device), b["mask"].to(self.device))[0]
                        for b in self.loader)
            used = swa.update_bn(feed, self.device, max_batches=int(want))
        last = swa.epochs[-1]
        self.events.log(f"SWA: averaged the weights of epochs {swa.epochs[0]}..{last} ({len(swa.epochs)} epoch(s))"
                        + (f"; BatchNorm statistics recomputed over {used} training batch(es)" if swa.has_bn()
                           else "; the model has no BatchNorm"))
        summary = None
        if self.validate_enabled and self.val_set is not None:
            res = self._evaluate(swa.module, "swa", last)
            summary = {"swa": res.summary}
        state = self._state(last, 0, "swa", summary, full=False)
        state["model"], state["ema"] = swa.state_dict(), None
        self._save("swa.pth", state, epoch=last)

    def _epoch_augment(self, epoch: int, seed: int) -> None:
        """Crop-size draws and the epoch's mixing settings (augment.crop_schedule / phases / mix_off_last_epochs)."""
        from .aug_schedule import mix_params, scheduled_size, schedules_mixing
        aug = self.cfg.augment
        self.resizer.start_epoch(epoch, seed)
        if aug.crop_schedule:
            size = scheduled_size(aug, epoch)
            prev = scheduled_size(aug, epoch - 1) if epoch > self.start_epoch else None
            if size != prev:
                self.events.log(f"epoch {epoch}: training crops {size[0]}x{size[1]} (augment.crop_schedule)")
        if schedules_mixing(aug):
            params = mix_params(aug, epoch, int(self.cfg.train.epochs))
            if params != self._mix_params:
                self.events.log(f"epoch {epoch}: mixing cutmix_p={params['cutmix_p']:g} (alpha "
                                f"{params['cutmix_alpha']:g}), mixup_p={params['mixup_p']:g} (alpha "
                                f"{params['mixup_alpha']:g})")
            self.mixer.set_params(params)
            self._mix_params = params

    def _stop_requested(self) -> bool:
        """``ctx.should_stop()``, agreed across DDP ranks (any rank asked -> all stop at the same step)."""
        flag = 1.0 if self._should_stop() else 0.0
        if is_dist():
            t = torch.tensor([flag], device=self.device)
            all_reduce_max(t)
            flag = float(t.item())
        return flag > 0

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _check_finite(self, loss: float, epoch: int, step: int, terms: dict, what: str = "loss") -> None:
        bad = 0.0 if math.isfinite(loss) else 1.0
        if is_dist():                                   # every rank stops at the same step
            t = torch.tensor([bad], device=self.device)
            all_reduce_max(t)
            bad = float(t.item())
        if bad == 0:
            return
        parts = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
        if self.last_saved_epoch is not None and self.last_saved_epoch >= 0 and self.ckpt_dir is not None:
            kept = f"the last good checkpoint is kept: {self.ckpt_dir / ck.LAST} (epoch {self.last_saved_epoch})"
        else:
            kept = "no checkpoint had been written yet"
        msg = (f"non-finite {what} ({loss:.4g}) at epoch {epoch}, step {step} (global step "
               f"{self.global_step}){'; terms: ' + parts if parts else ''}. Training stopped; {kept}. Try a lower "
               f"train.lr (now {self.cfg.train.lr:g}), enable train.grad_clip (now {self.cfg.train.grad_clip}), or "
               f"check the inputs (run the stage-0 health checks on the dataset)")
        self.events.log(msg, level="error")
        raise TrainingError(msg)

    # ------------------------------------------------------------------------------------------------ epoch
    def _train_epoch(self, epoch: int) -> Optional[dict]:
        cfg = self.cfg
        accum = max(1, int(cfg.train.accumulate))
        start = self.start_step if epoch == self.start_epoch else 0
        seed = epoch_seed(cfg.train.seed, epoch, self.rank)
        seed_everything(seed)
        if start and self._resume_rng:            # mid-epoch resume: the RNGs as they were after step `start`
            ck.set_rng_state(self._resume_rng)
            self._resume_rng = None
            if self._resume_aug and hasattr(self.train_set, "set_augment_state"):
                self.train_set.set_augment_state(self._resume_aug)
            self._resume_aug = None
        self.loader_generator.manual_seed(seed)
        self.mixer.seed(seed + 1)
        self._epoch_augment(epoch, seed + 2)
        if self.batch_aug is not None:
            self.batch_aug.seed(seed + 3, start_batch=start * accum)
        self.sampler.set_epoch(epoch, start_index=start * accum * int(cfg.train.batch_size))
        for m in self.extra_losses.values():
            if hasattr(m, "on_epoch_start"):
                m.on_epoch_start(epoch)
        self.ddp_model.train()
        self.freeze.set_norm_eval()
        model_fwd = self.ddp_model
        trainable = [p for p in self.model.parameters() if p.requires_grad] + \
                    [p for m in self.extra_losses_trainable for p in m.parameters() if p.requires_grad]
        grad_clip = cfg.train.grad_clip
        sums: dict[str, float] = {}
        n_loss = 0
        gnorms: list[float] = []
        data_time = 0.0
        images_seen = 0
        window = IterWindow()
        gpu = getattr(self, "gpu", None)
        if gpu is not None:
            gpu.epoch_values()                     # drop samples taken before this epoch (validation, set-up)
        t_epoch = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        bar = None
        if self.show_bar:
            from tqdm import tqdm
            bar = tqdm(total=self.steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                       unit="step", file=sys.stderr, leave=False, dynamic_ncols=True)
        it = iter(self.loader)
        step = start
        try:
            while step < self.steps_per_epoch:
                if self._stop_requested():
                    self.stopped_reason = "cancelled"
                    state = self._state(epoch - 1, step, "last")
                    self._save(ck.LAST, state, epoch=epoch - 1, step_in_epoch=step)
                    self.events.log(f"stop requested: saved last.pth at epoch {epoch}, step {step}")
                    return None
                self.optimizer.zero_grad(set_to_none=True)
                step_terms: dict[str, float] = {}
                step_loss = 0.0
                t_step, step_data, step_hits = time.perf_counter(), 0.0, [0.0, 0.0]
                for micro in range(accum):
                    t0 = time.perf_counter()
                    batch = next(it)
                    step_data += time.perf_counter() - t0
                    images = batch["image"].to(self.device, non_blocking=True)
                    masks = batch["mask"].to(self.device, non_blocking=True)
                    if self.batch_aug is not None:
                        images, masks = self.batch_aug(images, masks)
                    if self.resizer.active:
                        images, masks = self.resizer(images, masks)
                    if self.mixer.active:
                        images, targets, _ = self.mixer(images, masks, batch["domain"])
                    else:
                        targets = Targets(mask=masks, ignore_index=self.loss_fn.ignore_index)
                    sync = (model_fwd.no_sync() if (micro < accum - 1 and hasattr(model_fwd, "no_sync"))
                            else contextlib.nullcontext())
                    with sync:
                        with self._autocast():
                            out = model_fwd(images, return_features=True) if self.needs_features \
                                else model_fwd(images)
                        bdict = {"images": images, "targets": targets, "ids": batch["id"],
                                 "domains": batch["domain"], "epoch": epoch, "step": step,
                                 "extra": {k: v for k, v in batch.items()
                                           if k not in ("image", "mask", "id", "domain")}} \
                            if self.extra_losses else None
                        loss, terms = self.loss_fn(out, targets, batch=bdict)
                        hits = pixel_hits(out["seg"] if isinstance(out, dict) else out, targets.mask,
                                          self.loss_fn.ignore_index)
                        # one device-to-host copy per micro-step for the NaN check and the logged values
                        host = torch.stack([loss.detach().float(), *(v.float() for v in terms.values()),
                                            *hits]).tolist()
                        step_hits[0] += host[-2]
                        step_hits[1] += host[-1]
                        host = host[:-2]
                        self._check_finite(host[0], epoch, step, dict(zip(terms, host[1:])))
                        self.scaler.scale(loss / accum).backward()
                    step_loss += host[0] / accum
                    for k, v in zip(terms, host[1:]):
                        step_terms[k] = step_terms.get(k, 0.0) + v / accum
                    images_seen += images.shape[0]
                self.scaler.unscale_(self.optimizer)
                max_norm = float(grad_clip) if grad_clip else float("inf")
                gn = torch.nn.utils.clip_grad_norm_(trainable, max_norm) if trainable else torch.tensor(0.0)
                gn = float(gn)
                if not math.isfinite(gn) and not self.scaler.is_enabled():
                    self._check_finite(gn, epoch, step, {}, what="gradient norm")
                self.scaler.step(self.optimizer)
                self.scaler.update()
                lr_used = self.scheduler.current_lr
                self.scheduler.step()
                if self.ema is not None:
                    self.ema.update(self.model)
                data_time += step_data
                window.add(time.perf_counter() - t_step, step_data, *step_hits)
                self.global_step += 1
                step += 1
                if math.isfinite(gn):
                    gnorms.append(gn)
                n_loss += 1
                sums["loss"] = sums.get("loss", 0.0) + step_loss
                for k, v in step_terms.items():
                    sums[k] = sums.get(k, 0.0) + v
                if cfg.train.log_every and (self.global_step % int(cfg.train.log_every) == 0 or step == 1):
                    sampled = {"loss": step_loss, **step_terms, "lr": lr_used, "grad_norm": gn, **window.take()}
                    if gpu is not None:
                        sampled.update(gpu.take())
                    mem = max_memory_mb(self.device)
                    if mem is not None:
                        sampled["memory"] = mem
                    self.events.scalars(sampled, epoch=epoch, step=self.global_step, split="train")
                if self._mid_epoch_due(step):
                    self._save(ck.LAST, self._state(epoch - 1, step, "last"), epoch=epoch - 1, step_in_epoch=step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr_used:.2e}", refresh=False)
                total_steps = cfg.train.epochs * self.steps_per_epoch
                self._emit_progress(epoch=epoch, epochs=cfg.train.epochs, step=step, steps=self.steps_per_epoch,
                                    frac=(epoch * self.steps_per_epoch + step) / max(1, total_steps),
                                    phase="train", message=f"epoch {epoch + 1}/{cfg.train.epochs} step {step}/"
                                                           f"{self.steps_per_epoch} loss {step_loss:.4f}")
        finally:
            if bar is not None:
                bar.close()
            del it
        wall = time.perf_counter() - t_epoch
        peak, rss = peak_memory_mb(self.device)
        steps_done = max(1, n_loss)
        values = {k: v / steps_done for k, v in sums.items()}
        values.update({
            "lr": self.scheduler.current_lr,
            "grad_norm": float(np.mean(gnorms)) if gnorms else float("nan"),
            "grad_norm_max": float(np.max(gnorms)) if gnorms else float("nan"),
            "epoch_time": wall, "data_time": data_time,
            "images_per_s": images_seen * self.world / wall if wall > 0 else float("nan"),
            "peak_mem_mb": peak, "peak_rss_mb": rss,
            "frozen_share": self.freeze.describe(epoch)["frozen_share"] if self.freeze.active else 0.0,
        })
        for k, w in self.loss_fn.active_terms.items():
            values[f"loss_w/{k}"] = float(w)
        acc = window.epoch_values().get("acc_seg")
        if acc is not None:
            values["acc_seg"] = acc
        if gpu is not None:
            values.update(gpu.epoch_values())
        return values

    # ------------------------------------------------------------------------------------------------ validation
    def _evaluate(self, net: nn.Module, variant: str, epoch: int):
        """Validate ``net`` through mapsage.infer (sharded over ranks under DDP, areas summed)."""
        cfg = self.cfg
        split = self.val_set.split if hasattr(self.val_set, "split") else cfg.dataset.val_split
        stamp(self.events, dataset=cfg.dataset.name, split_size=split_size(self.val_set), device=device_name(self.device),
              params=model_params(net))
        kw = dict(split=split, variant=variant, device=self.device, epoch=epoch, show_bar=self.show_bar,
                  should_stop=self._should_stop,
                  progress=(lambda **p: self._emit_progress(epoch=epoch, epochs=cfg.train.epochs, **{
                      **p, "frac": (epoch + 1) / cfg.train.epochs})) if self._progress else None)
        loss_acc = self._val_loss_hook()
        kw["on_probs"] = loss_acc
        if not is_dist():
            outcome = evaluate_outcome(net, self.val_set, cfg, events=self.events, max_tiles=cfg.eval.max_tiles,
                                       **kw)
            self.val_losses[variant] = loss_acc.mean()
            return outcome.result
        indices = pick_indices(len(self.val_set), cfg.eval.max_tiles)
        mine = indices[self.rank::self.world]
        t0 = time.perf_counter()
        if mine:
            outcome = evaluate_outcome(net, torch.utils.data.Subset(self.val_set, mine), cfg, events=None, **kw)
            metrics, infer_s, timed, mpix, dev = (outcome.metrics, outcome.infer_s, outcome.timed_images,
                                                  outcome.timed_mpixels, outcome.device)
        else:                                  # more ranks than tiles: this rank only joins the reduction
            metrics, infer_s, timed, mpix, dev = make_metrics(cfg), 0.0, 0, 0.0, str(self.device)
        metrics.all_reduce()
        self.val_losses[variant] = loss_acc.mean(reduce=True, device=self.device)
        merged = EvalOutcome(result=metrics.result(), metrics=metrics, split=split, variant=variant,
                             n_images=len(indices), wall_s=time.perf_counter() - t0, infer_s=infer_s,
                             timed_images=timed, timed_mpixels=mpix, device=dev, domains=domain_results(metrics))
        if self.is_main:
            emit_metrics(self.events, merged, epoch)
        return merged.result

    def _val_loss_hook(self) -> "_ValLoss":
        return _ValLoss(self.loss_fn)

    def _corrupted_score(self, net: nn.Module) -> float:
        """Mean of ``train.save_best_by`` over the combo corruptions of the validation tiles (select_by: combo)."""
        rc = self.cfg.reliability
        vals = []
        for name in rc.combo_corruptions:
            out = score(net, CorruptedView(self.val_set, name, rc.combo_severity), self.cfg, self.device,
                        max_tiles=rc.combo_max_tiles, should_stop=self._should_stop)
            v = getattr(out.all.result(), self.cfg.train.save_best_by)
            vals.append(float(v) if v is not None and math.isfinite(float(v)) else float("nan"))
        return float(np.nanmean(vals)) if vals and not all(math.isnan(v) for v in vals) else float("nan")

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics drift apart: each rank updates them from its own
        batches), so all ranks validate -- and rank 0 checkpoints -- the same model."""
        if not is_dist():
            return
        import torch.distributed as dist
        mods = [self.model] + ([self.ema.module] if self.ema is not None else [])
        for m in mods:
            for b in m.buffers():
                dist.broadcast(b.data, src=0)

    def _validate(self, epoch: int) -> dict:
        self._sync_buffers()
        results = {"raw": self._evaluate(self.model, "raw", epoch)}
        if self.ema is not None and not self._should_stop():
            results["ema"] = self._evaluate(self.ema.module, "ema", epoch)
        self.corrupted = {}
        if self.cfg.train.select_by == "combo":
            nets = {"raw": self.model, "ema": self.ema.module if self.ema is not None else None}
            for variant in results:
                if not self._should_stop():
                    self.corrupted[variant] = self._corrupted_score(nets[variant])
        return results

    def _validation_scalars(self, values: dict) -> None:
        """Validation loss, train-validation gap and the combo figures into the epoch's scalars."""
        for variant, v in self.val_losses.items():
            values["val_loss" if variant == "raw" else f"val_loss_{variant}"] = v
        if "raw" in self.val_losses and "loss" in values:
            values["train_val_gap"] = self.val_losses["raw"] - values["loss"]
        for variant, v in self.corrupted.items():
            values["val_corrupted" if variant == "raw" else f"val_corrupted_{variant}"] = v

    # ------------------------------------------------------------------------------------------------ fit
    def fit(self, resume_from: str | Path | None = None) -> dict:
        cfg = self.cfg
        self._setup_runtime()
        self._setup_data()
        self._setup_model()
        if resume_from:
            self._load_resume(resume_from)
        self.events.emit("run_info", **self._run_facts())
        self.events.log(f"model {cfg.model.arch}/{cfg.model.encoder}: {self.model_params / 1e6:.2f} M parameters; "
                        f"weights: {self.pretrained_text}")
        if self.model.pretrained_report:
            r = self.model.pretrained_report
            self.events.log(f"pretrained report: missing {r['missing'][:20]}, unexpected {r['unexpected'][:20]}, "
                            f"shape-mismatched {r['mismatched'][:20]}")
        if cfg.train.layer_decay is not None or cfg.train.layer_tiers:
            from .llrd import describe_groups
            self.events.log(describe_groups(self.optimizer.param_groups))
        if getattr(self.model, "addon_report", None):
            self.events.log(describe_addons(self.model.addon_report))
        if self.warm_report is not None:
            self.events.log(describe_warm(self.warm_report))
        for note in self.imbalance.notes:
            self.events.log(f"imbalance: {note}")
        for warn in self.imbalance.warnings:
            self.events.log(warn, level="warning")
            print(f"warning: {warn}", file=sys.stderr)
        if self.sample_weights is not None and cfg.augment.class_aware_sampling:
            w = self.sample_weights
            self.events.log(f"class-aware sampling: per-image weights from {w.min() * len(w):.2f}x to "
                            f"{w.max() * len(w):.2f}x uniform (augment.class_aware_temp="
                            f"{cfg.augment.class_aware_temp})")
        self.gpu = GpuSampler(self.device)
        if self.gpu.note and self.device.type == "cuda":
            self.events.log(self.gpu.note, level="warning")
        self.gpu.start()                             # stopped by close()
        t_fit = time.perf_counter()
        for epoch in range(self.start_epoch, int(cfg.train.epochs)):
            if self._stop_requested():
                self.stopped_reason = "cancelled"
                break
            mix = self.loss_fn.start_epoch(epoch, self.val_history)
            if mix["guard"]:
                self.events.log(mix["guard"])
            if mix["changed"] or epoch == self.start_epoch:
                self.events.log(f"epoch {epoch}: loss = {describe_mix(mix['terms'])} (phase {mix['phase']})")
            self._apply_freeze(epoch)
            values = self._train_epoch(epoch)
            if values is None:                       # stop requested mid-epoch; last.pth written
                break
            if self.swa is not None:
                self.swa.after_epoch(self.model, epoch)
            metrics_summary = None
            results = {}
            do_val = self.validate_enabled and ((epoch + 1) % max(1, int(cfg.train.val_every)) == 0
                                                or epoch + 1 == int(cfg.train.epochs))
            if do_val:
                t_val = time.perf_counter()
                self.val_losses = {}
                results = self._validate(epoch)
                values["val_time"] = time.perf_counter() - t_val
                self._validation_scalars(values)
                metrics_summary = {k: r.summary for k, r in results.items()}
            self.events.scalars(values, epoch=epoch, step=self.global_step, split="train_epoch")
            if self._stop_requested():
                # a cancel during validation: its numbers may cover part of the split only; keep the
                # trained epoch in last.pth but do not let it compete for best.pth
                self.stopped_reason = "cancelled"
                results = {}
            stop = self._after_validation(epoch, results) or self.stopped_reason == "cancelled"
            self.history.append({"epoch": epoch, **{k: v for k, v in values.items()
                                                    if isinstance(v, (int, float))},
                                 **{f"val_{k}_{m}": getattr(r, m) for k, r in results.items()
                                    for m in ("miou", "mbiou")}})
            self._save(ck.LAST, self._state(epoch, 0, "last", metrics_summary), epoch=epoch)
            self.last_saved_epoch = epoch
            barrier()
            if results and self.epoch_callback is not None:
                self.epoch_callback(epoch, results)
            if stop:
                break
        if self.swa is not None and self.swa.epochs and self.stopped_reason != "cancelled":
            self._finish_swa()
        wall = time.perf_counter() - t_fit
        summary = {"epochs_done": (self.last_saved_epoch + 1) if self.last_saved_epoch is not None else 0,
                   "global_step": self.global_step, "best": dict(self.best), "wall_s": wall,
                   "stopped": self.stopped_reason, "history": self.history}
        self.events.log(f"training finished after {summary['epochs_done']} epoch(s) in {wall:.1f} s; best "
                        f"{cfg.train.save_best_by} raw {self.best['raw']} (epoch {self.best['raw_epoch']}), ema "
                        f"{self.best['ema']} (epoch {self.best['ema_epoch']})"
                        + (f"; stopped: {self.stopped_reason}" if self.stopped_reason else ""))
        return summary

    def close(self) -> None:
        """Leave the process group if this trainer joined it."""
        from .distributed import cleanup
        if getattr(self, "gpu", None) is not None:
            self.gpu.stop()
        cleanup(self.dist)

    def _after_validation(self, epoch: int, results: dict) -> bool:
        """Best checkpoints, early stopping, guard history. Returns True to stop training."""
        if not results:
            return False
        cfg = self.cfg
        key = cfg.train.save_best_by
        scores = selection_scores(results, key, cfg.train.select_by, cfg.train.combo_alpha, self.corrupted)
        self.val_history[epoch] = float(results["raw"].miou)
        summary = {k: r.summary for k, r in results.items()}
        if self.best["raw"] is None or scores["raw"] > self.best["raw"]:
            self.best["raw"], self.best["raw_epoch"] = scores["raw"], epoch
            self._save(ck.BEST, self._state(epoch, 0, "best", summary, full=False), epoch=epoch,
                       **{key: scores["raw"]})
        if "ema" in scores and (self.best["ema"] is None or scores["ema"] > self.best["ema"]):
            self.best["ema"], self.best["ema_epoch"] = scores["ema"], epoch
            self._save(ck.BEST_EMA, self._state(epoch, 0, "best_ema", summary, full=False), epoch=epoch,
                       **{key: scores["ema"]})
        monitor = max(scores.values())
        es = cfg.train.early_stop
        if self.best["monitor"] is None or monitor > self.best["monitor"] + float(es.min_delta):
            self.best["monitor"], self.best["monitor_epoch"] = monitor, epoch
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        if es.patience and self.bad_epochs >= int(es.patience):
            self.stopped_reason = "early_stop"
            what = key if cfg.train.select_by == "clean" else f"combo score ({cfg.train.combo_alpha:g}·clean + " \
                f"{1 - cfg.train.combo_alpha:g}·corrupted {key})"
            self.events.log(f"early stopping at epoch {epoch}: validation {what} has not improved by more than "
                            f"{es.min_delta} for {self.bad_epochs} validation(s) (best {self.best['monitor']:.4f} at "
                            f"epoch {self.best['monitor_epoch']}; train.early_stop.patience={es.patience})")
            return True
        return False

    def _run_facts(self) -> dict:
        cfg = self.cfg
        return {
            "model_params": self.model_params, "arch": cfg.model.arch, "backbone": cfg.model.encoder,
            "pretrained": self.pretrained_text, "train_samples": len(self.train_set),
            "val_samples": len(self.val_set) if self.val_set is not None else 0,
            "steps_per_epoch": self.steps_per_epoch, "global_batch": global_batch(cfg, self.world),
            "world_size": self.world, "peak_lr": effective_lr(cfg, self.world), "device": str(self.device),
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "fp32",
            "epochs": int(cfg.train.epochs),
        }


def selection_scores(results: dict, key: str, select_by: str = "clean", alpha: float = 0.7,
                     corrupted: Optional[dict] = None) -> dict[str, float]:
    """The checkpoint-selection score per variant: the clean ``key`` metric, or with ``select_by="combo"``
    ``alpha · clean + (1 − alpha) · corrupted[variant]`` (-inf where a figure is missing)."""
    if select_by not in ("clean", "combo"):
        raise ConfigError(f"train.select_by must be 'clean' or 'combo', got {select_by!r}")
    if select_by == "combo" and not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"train.combo_alpha must be in [0, 1], got {alpha}")
    scores = {}
    for variant, res in results.items():
        v = getattr(res, key)
        clean = float(v) if v is not None and math.isfinite(float(v)) else float("-inf")
        if select_by == "combo":
            c = (corrupted or {}).get(variant)
            if c is None or not math.isfinite(float(c)):
                clean = float("-inf")
            else:
                clean = float(alpha) * clean + (1.0 - float(alpha)) * float(c)
        scores[variant] = clean
    return scores


class _ValLoss:
    """Accumulates the training loss mix on validation tiles (``on_probs`` hook of the evaluation). Log
    probabilities stand in for logits: every loss term is a function of the softmax, and ``softmax(log p) = p``."""

    def __init__(self, loss_fn):
        self.loss_fn = loss_fn
        self.total = 0.0
        self.n = 0

    def __call__(self, probs: torch.Tensor, sample: dict) -> None:
        mask = sample.get("mask")
        if mask is None:
            return
        logits = probs.float().clamp_min(1e-8).log()
        targets = Targets(mask=mask.to(probs.device).long().unsqueeze(0), ignore_index=self.loss_fn.ignore_index)
        if not bool(targets.valid().any()):
            return
        total = 0.0
        with torch.no_grad():
            for name, w in self.loss_fn.active_terms.items():
                if w and name in TERMS:
                    total += float(w) * float(TERMS[name](logits, targets, self.loss_fn.ctx))
        self.total += total
        self.n += 1

    def mean(self, reduce: bool = False, device=None) -> float:
        total, n = self.total, self.n
        if reduce and is_dist():
            import torch.distributed as dist
            t = torch.tensor([total, float(n)], dtype=torch.float64, device=device)
            dist.all_reduce(t)
            total, n = float(t[0]), int(t[1])
        return total / n if n else float("nan")
