"""Teacher targets of a training batch: computed once per batch for all distillation terms, cached where the
augmentation allows.

The caching rule (:func:`cache_rule`), in order:

1. ``distill.teacher.cache_features: false`` -> **off**: the teacher runs on every batch.
2. Logit distillation in any epoch (``logit_weight`` / a schedule phase > 0) -> **off**: the KL term needs the
   teacher's logits of exactly the pixels the student sees.
3. CutMix or MixUp on (``augment.cutmix_p`` / ``mixup_p`` > 0) -> **off**: mixed images exist for one step only.
4. The batch carries *tile views* (the distillation stage wraps the training set in
   :class:`mapsage.distill.data.TeacherViewDataset`) -> **tile**: the teacher sees each whole, un-augmented training
   tile once (in windows of ``teacher.img_size`` for a ViT); the features are kept per sample id, and every crop's
   target is that map resampled through the crop's own geometry -- the random scale, padding, crop, flips and
   rotation that were applied to its mask, carried as a per-pixel map of source coordinates. Colour jitter is not
   applied to the teacher's input (its target is the clean tile), and cells that came from padding or rotation
   borders are left out of the loss. Over a run the teacher's cost is one pass over the training tiles instead of
   one forward per step. With ``teacher.cache_mode: auto`` (default) this is chosen only where it is cheaper: when
   the run's crop pixels (epochs x steps x accumulation x batch x ranks x crop area) exceed the training tiles'
   pixels (padded to whole windows) -- e.g. 50 LoveDA epochs at 512 px crops see ~12x the tiles' pixels, while a
   short demo sees fewer, and runs the teacher on the fly. ``cache_mode: tile`` forces it.
5. Deterministic training views (``augment.enabled: false`` and every training tile no larger than
   ``augment.crop_size``, so each sample always yields the same input) -> **sample**: the teacher's output on that
   input is kept per sample id, and a fingerprint of the input is checked on every hit (a changed view is
   recomputed and counted as ``stale``).
6. Otherwise (random crops without tile views) -> **off**.

The cache lives in host memory, float16, capped at ``distill.teacher.cache_mb`` (least recently used entries are
dropped and recomputed when needed). Hits, misses and teacher time are logged per epoch.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..data.io import image_size
from .teacher import Teacher

VIEW_KEY = "teacher_view"          # the per-sample tile-coordinate map added by TeacherViewDataset
VIEW_STEP = 4                      # crop pixels between two samples of that map


def uses_logits(cfg) -> bool:
    d = cfg.distill
    return d.logit_weight > 0 or any(p.logit_weight > 0 for p in d.schedule)


def uses_features(cfg) -> bool:
    d = cfg.distill
    return d.feature_weight > 0 or any(p.feature_weight > 0 for p in d.schedule)


def deterministic_views(cfg, dataset) -> bool:
    """True when every training sample always yields the same input (augmentation off, tiles within the crop)."""
    if cfg.augment.enabled or dataset is None:
        return False
    size = list(cfg.augment.crop_size)
    ch, cw = (size * 2)[:2] if len(size) == 1 else size[:2]
    for s in dataset.samples:
        w, h = image_size(s.image_path)
        if h > ch or w > cw:
            return False
    return True


def run_crop_pixels(cfg, dataset=None) -> int:
    """Pixels of all training crops of the run (what an on-the-fly teacher sees)."""
    import os

    size = list(cfg.augment.crop_size)
    ch, cw = (size * 2)[:2] if len(size) == 1 else size[:2]
    world = max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    bs, accum = int(cfg.train.batch_size), max(1, int(cfg.train.accumulate))
    steps = cfg.train.steps_per_epoch or max(1, (len(dataset) if dataset is not None else 1) // (bs * world * accum))
    return int(cfg.train.epochs) * int(steps) * accum * bs * world * int(ch) * int(cw)


def tile_pixels(dataset, window: int) -> int:
    """Pixels of all training tiles padded to whole ``window`` squares (what the tile cache computes once)."""
    win = max(1, int(window))
    total = 0
    for s in dataset.samples:
        w, h = image_size(s.image_path)
        total += (-(-h // win) * win) * (-(-w // win) * win)
    return total


def cache_rule(cfg, tile_views: bool, dataset=None, window: Optional[int] = None) -> tuple[str, str]:
    """``(mode, reason)`` with mode ``tile`` | ``sample`` | ``off`` (see the module doc). ``window``: the teacher's
    tile window (padding of the cost estimate; 1 = none)."""
    t = cfg.distill.teacher
    if not t.cache_features:
        return "off", "distill.teacher.cache_features is false: the teacher runs on every batch"
    if uses_logits(cfg):
        return "off", ("logit distillation needs the teacher's logits of exactly the image the student sees: the "
                       "teacher runs on every batch")
    if getattr(cfg.augment, "backend", "albumentations") == "kornia":
        return "off", ("augment.backend: kornia augments each batch on the device after loading, so no cached "
                       "teacher view follows it: the teacher runs on every batch")
    if cfg.augment.cutmix_p > 0 or cfg.augment.mixup_p > 0:
        return "off", ("CutMix/MixUp make every batch a new image (augment.cutmix_p / mixup_p > 0): the teacher "
                       "runs on every batch")
    if tile_views and t.cache_mode in ("auto", "tile"):
        why = ("teacher features of each whole un-augmented training tile computed once and resampled through every "
               "crop's geometric augmentation (scale, pad, crop, flips, rotation); colour jitter does not reach the "
               "teacher")
        if t.cache_mode == "tile" or dataset is None:
            return "tile", why
        crops, tiles = run_crop_pixels(cfg, dataset), tile_pixels(dataset, window or 1)
        if tiles < crops:
            return "tile", f"{why} ({tiles / 1e6:.0f} Mpx of tiles once instead of {crops / 1e6:.0f} Mpx of crops)"
        if not deterministic_views(cfg, dataset):
            return "off", (f"the teacher runs on every batch: on this budget that is cheaper than caching whole "
                           f"tiles ({crops / 1e6:.1f} Mpx of crops against {tiles / 1e6:.1f} Mpx of tiles; "
                           f"distill.teacher.cache_mode: tile forces the tile cache)")
    if deterministic_views(cfg, dataset):
        return "sample", "augmentation off and every tile within the crop size: each sample's input never changes"
    return "off", "random crops without tile views: the teacher runs on every batch"


@dataclass
class BatchTargets:
    feat: Optional[torch.Tensor]          # [B, D, gh, gw] float32 on the device
    valid: Optional[torch.Tensor]         # [B, gh, gw] bool (None: all valid)
    logits: Optional[torch.Tensor]        # [B, C, H, W] float32 (workbench teacher only)


class _LRU:
    def __init__(self, max_bytes: float):
        self.max_bytes = int(max_bytes)
        self.data: "OrderedDict[str, tuple]" = OrderedDict()
        self.bytes = 0
        self.evicted = 0

    def get(self, key: str):
        item = self.data.get(key)
        if item is not None:
            self.data.move_to_end(key)
        return item

    def put(self, key: str, value: tuple, nbytes: int) -> None:
        old = self.data.pop(key, None)
        if old is not None:
            self.bytes -= old[-1]
        if nbytes > self.max_bytes:
            return
        self.data[key] = (*value, nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes and self.data:
            _, dropped = self.data.popitem(last=False)
            self.bytes -= dropped[-1]
            self.evicted += 1


def _fingerprint(x: torch.Tensor) -> str:
    sub = x[:, ::7, ::7].float().cpu().numpy()
    return hashlib.blake2b(np.round(sub * 512).astype(np.int32).tobytes(), digest_size=12).hexdigest()


class TeacherTargets:
    """Shared by the distillation terms of one run: the teacher, its weights schedule, the cache and the stats."""

    def __init__(self, teacher: Teacher, cfg, *, mode: str = "off", reason: str = "", dataset=None, events=None):
        self.teacher = teacher
        self.cfg = cfg
        self.mode = mode
        self.reason = reason
        self.dataset = dataset
        self.events = events
        self.cache = _LRU(float(cfg.distill.teacher.cache_mb) * 2 ** 20)
        self.epoch: Optional[int] = None
        self.weights = {"feature": 0.0, "logit": 0.0}
        self._memo_images: Optional[torch.Tensor] = None
        self._memo: Optional[BatchTargets] = None
        self.reset_stats()
        if mode == "tile" and dataset is None:
            raise ValueError("tile caching needs the training dataset (to read whole tiles)")

    # ------------------------------------------------------------------------------------------- schedule
    def weights_at(self, epoch: int) -> dict[str, float]:
        d = self.cfg.distill
        w = {"feature": float(d.feature_weight), "logit": float(d.logit_weight)}
        for phase in sorted(d.schedule, key=lambda p: p.from_epoch):
            if phase.from_epoch <= epoch:
                w = {"feature": float(phase.feature_weight), "logit": float(phase.logit_weight)}
        return w

    def reset_stats(self) -> None:
        self.stats = {"hits": 0, "misses": 0, "stale": 0, "batches": 0, "teacher_s0": self.teacher.forward_s,
                      "teacher_images0": self.teacher.forward_images}

    def epoch_stats(self) -> dict[str, float]:
        s = self.stats
        out = {"kd_teacher_time": self.teacher.forward_s - s["teacher_s0"],
               "kd_teacher_inputs": float(self.teacher.forward_images - s["teacher_images0"])}
        if self.mode != "off":
            looked = s["hits"] + s["misses"] + s["stale"]
            out.update({"kd_cache_hits": float(s["hits"]), "kd_cache_misses": float(s["misses"] + s["stale"]),
                        "kd_cache_hit_rate": (s["hits"] / looked) if looked else float("nan"),
                        "kd_cache_mb": self.cache.bytes / 2 ** 20})
        return out

    def flush_stats(self) -> None:
        """Write the finished epoch's teacher / cache figures (``scalars``, split ``train_epoch``)."""
        if self.epoch is None or self.events is None or not self.stats["batches"]:
            return
        self.events.scalars(self.epoch_stats(), epoch=self.epoch, split="train_epoch")

    def on_epoch_start(self, epoch: int) -> None:
        """Idempotent per epoch (every term calls it): stats of the last epoch, this epoch's weights, guards."""
        if self.epoch == epoch:
            return
        self.flush_stats()
        self.teacher.check_frozen()
        self.epoch = epoch
        self.reset_stats()
        old = dict(self.weights)
        self.weights = self.weights_at(epoch)
        if self.events is not None:
            self.events.scalars({"loss_w/kd/feat": self.weights["feature"], "loss_w/kd/logit": self.weights["logit"]},
                                epoch=epoch, split="train_epoch")
            if old != self.weights:
                self.events.log(f"epoch {epoch}: distillation weights feature {self.weights['feature']:g}, logit "
                                f"{self.weights['logit']:g} (T={self.cfg.distill.temperature:g})")

    # ------------------------------------------------------------------------------------------- targets
    def get(self, batch: dict) -> BatchTargets:
        """The teacher targets of ``batch`` (the engine's extra-loss batch dict), computed once per batch."""
        images = batch["images"]
        if self._memo_images is images and self._memo is not None:
            return self._memo
        self.stats["batches"] += 1
        need_feat = self.weights["feature"] > 0
        need_logits = self.weights["logit"] > 0 and self.teacher.has_logits
        if self.mode == "tile" and need_feat and not need_logits:
            out = self._tile_targets(batch)
        elif self.mode == "sample" and need_feat and not need_logits:
            out = self._sample_targets(batch)
        else:
            feat, logits = self.teacher.targets(images, want_logits=need_logits)
            out = BatchTargets(feat=feat.to(images.device), valid=None,
                               logits=logits.to(images.device) if logits is not None else None)
        self._memo_images, self._memo = images, out
        return out

    def _sample_targets(self, batch: dict) -> BatchTargets:
        images = batch["images"]
        ids = list(batch["ids"])
        feats: list[Optional[torch.Tensor]] = [None] * len(ids)
        todo = []
        for i, sid in enumerate(ids):
            fp = _fingerprint(images[i])
            item = self.cache.get(str(sid))
            if item is not None and item[1] == fp:
                feats[i] = item[0]
                self.stats["hits"] += 1
            else:
                self.stats["stale" if item is not None else "misses"] += 1
                todo.append((i, fp))
        if todo:
            idx = [i for i, _ in todo]
            feat, _ = self.teacher.targets(images[idx], want_logits=False)
            for k, (i, fp) in enumerate(todo):
                f = feat[k].to("cpu", torch.float16)
                self.cache.put(str(ids[i]), (f, fp), f.numel() * 2)
                feats[i] = f
        return BatchTargets(feat=torch.stack([f.float() for f in feats]).to(images.device), valid=None, logits=None)

    def tile(self, sample_id: str) -> tuple[torch.Tensor, tuple[float, float]]:
        """Cached teacher features of a whole training tile (computed on a miss)."""
        item = self.cache.get(str(sample_id))
        if item is not None:
            self.stats["hits"] += 1
            return item[0], item[1]
        self.stats["misses"] += 1
        image = self.dataset.load_image(self.dataset.index_of(str(sample_id)))
        feat, stride = self.teacher.tile_features(image)
        self.cache.put(str(sample_id), (feat, stride), feat.numel() * feat.element_size())
        return feat, stride

    def _tile_targets(self, batch: dict) -> BatchTargets:
        images = batch["images"]
        views = (batch.get("extra") or {}).get(VIEW_KEY)
        if views is None:
            raise RuntimeError(f"tile caching is on but the batch has no '{VIEW_KEY}' (the training set must be a "
                               f"mapsage.distill.data.TeacherViewDataset and the engine must pass batch extras)")
        h, w = images.shape[-2:]
        gh, gw = self.teacher.grid_for(h, w)
        hv, wv = views.shape[-2:]
        iy = ((torch.arange(gh, dtype=torch.float64) + 0.5) * h / gh / VIEW_STEP).long().clamp_(0, hv - 1)
        ix = ((torch.arange(gw, dtype=torch.float64) + 0.5) * w / gw / VIEW_STEP).long().clamp_(0, wv - 1)
        views = views.detach().to("cpu", torch.float32)
        feats, valids = [], []
        for b, sid in enumerate(batch["ids"]):
            tile, (sy, sx) = self.tile(sid)
            c = views[b][:, iy][:, :, ix]                                  # [3, gh, gw]: x, y, valid
            valid = c[2] > 0.5
            # continuous cell coordinates (cell j is centred at j) of every target cell
            fx = (c[0] + 0.5) / sx - 0.5
            fy = (c[1] + 0.5) / sy - 0.5
            feats.append(_sample_cells(tile, fx, fy, valid, images.device))
            valids.append(valid)
        return BatchTargets(feat=torch.stack(feats), valid=torch.stack(valids).to(images.device), logits=None)

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "reason": self.reason, "cache_mb_cap": self.cfg.distill.teacher.cache_mb}


def _sample_cells(tile: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, valid: torch.Tensor,
                  device: torch.device) -> torch.Tensor:
    """Bilinear samples of a cached ``[D, Gh, Gw]`` map at cell coordinates ``fx, fy`` (``[gh, gw]``) -> ``[D,
    gh, gw]`` float32 on ``device``. Only the bounding box of the valid points is converted and moved."""
    d, gh_t, gw_t = tile.shape
    if not bool(valid.any()):
        return torch.zeros((d, *fx.shape), dtype=torch.float32, device=device)
    vx, vy = fx[valid], fy[valid]
    x0 = int(max(0, np.floor(float(vx.min())) - 1))
    x1 = int(min(gw_t - 1, np.ceil(float(vx.max())) + 1))
    y0 = int(max(0, np.floor(float(vy.min())) - 1))
    y1 = int(min(gh_t - 1, np.ceil(float(vy.max())) + 1))
    sub = tile[:, y0:y1 + 1, x0:x1 + 1].to(device=device, dtype=torch.float32)
    sw, sh = sub.shape[-1], sub.shape[-2]
    u = (fx - x0) / max(1, sw - 1) * 2 - 1 if sw > 1 else torch.zeros_like(fx)
    v = (fy - y0) / max(1, sh - 1) * 2 - 1 if sh > 1 else torch.zeros_like(fy)
    grid = torch.stack([u, v], dim=-1)[None].to(device=device, dtype=torch.float32)
    out = F.grid_sample(sub[None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0]


__all__ = ["TeacherTargets", "BatchTargets", "cache_rule", "run_crop_pixels", "tile_pixels", "deterministic_views", "uses_logits", "uses_features",
           "VIEW_KEY", "VIEW_STEP"]
