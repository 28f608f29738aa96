"""Training samplers: a fixed-length epoch sampler that works alone and under DDP, and class-aware weights.

:class:`EpochSampler` draws ``num_samples`` indices per epoch (global, over all ranks) from a generator seeded by
``(seed, epoch)`` only, so every rank draws the same sequence and takes its own strided share (a
DistributedSampler), and a resumed run draws exactly what an uninterrupted one would. Without weights it
concatenates random permutations (every sample once per pass); with weights it samples with replacement.

Class-aware sampling (``augment.class_aware_sampling``) is DAFormer's rare-class sampling: class ``c`` with pixel
share ``f_c`` is picked with probability ``P(c) ∝ exp((1 - f_c) / T)`` (``T = augment.class_aware_temp``), then
an image containing it uniformly; an image's weight is ``sum over its classes of P(c) / N_c``. Per-image class
pixel counts come from the full masks and are cached under ``workspace/cache/``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from ..data import sample_class_counts
from ..workspace import workspace_root


class EpochSampler(Sampler[int]):
    def __init__(self, dataset_len: int, num_samples: int, weights: Optional[Sequence[float]] = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1, start_index: int = 0):
        if dataset_len <= 0:
            raise ValueError("the training split is empty")
        self.n = int(dataset_len)
        self.world = max(1, int(world_size))
        self.rank = int(rank)
        self.per_rank = max(1, int(num_samples) // self.world)
        self.total = self.per_rank * self.world
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self.seed = int(seed)
        self.epoch = 0
        self.start_index = int(start_index)     # skip this many of this rank's indices (mid-epoch resume)

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        self.epoch = int(epoch)
        self.start_index = int(start_index)

    def global_indices(self) -> torch.Tensor:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch * 7919 + 17)
        if self.weights is not None:
            return torch.multinomial(self.weights, self.total, replacement=True, generator=g)
        reps = -(-self.total // self.n)
        return torch.cat([torch.randperm(self.n, generator=g) for _ in range(reps)])[:self.total]

    def __iter__(self) -> Iterator[int]:
        idx = self.global_indices()[self.rank::self.world][:self.per_rank]
        return iter(idx[self.start_index:].tolist())

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start_index)


def _cache_path(dataset, cfg) -> Path:
    ids = [str(getattr(s, "mask_path", "")) for s in dataset.samples]
    key = json.dumps({"root": cfg.dataset.root, "type": cfg.dataset.type, "classes": list(cfg.dataset.classes),
                      "color_map": cfg.dataset.color_map, "value_map": {str(k): v for k, v in
                                                                         cfg.dataset.value_map.items()},
                      "ignore_colors": cfg.dataset.ignore_colors, "ignore_values": cfg.dataset.ignore_values,
                      "masks": ids}, sort_keys=True)
    h = hashlib.sha256(key.encode()).hexdigest()[:16]
    return workspace_root() / "cache" / f"class_pixels_{cfg.dataset.name}_{h}.npy"


def cached_sample_class_counts(dataset, cfg, use_cache: bool = True) -> np.ndarray:
    """[N, C] pixel counts per sample and class of the whole masks (``mapsage.data.sample_class_counts``),
    cached on disk so repeated runs over a large dataset do not re-read every mask."""
    path = _cache_path(dataset, cfg)
    shape = (len(dataset.samples), cfg.dataset.num_classes)
    if use_cache and path.exists():
        try:
            arr = np.load(path)
            if arr.shape == shape:
                dataset._class_counts = arr
                return arr
        except (OSError, ValueError):
            pass
    out = np.asarray(sample_class_counts(dataset), dtype=np.int64)
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npy")
            np.save(tmp, out)
            os.replace(tmp, path)
        except OSError:
            pass
    return out


def class_aware_weights(counts: np.ndarray, temperature: float = 0.1, min_share: float = 1e-3) -> np.ndarray:
    """Per-image sampling weights (sum 1) from [N, C] class pixel counts (rare-class sampling)."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(0)
    freq = totals / max(1.0, totals.sum())
    present = counts >= np.maximum(1.0, min_share * counts.sum(1, keepdims=True))
    n_c = present.sum(0)
    logits = (1.0 - freq) / max(1e-6, float(temperature))
    p_c = np.exp(logits - logits.max())
    p_c[n_c == 0] = 0.0
    if p_c.sum() == 0:
        return np.full(len(counts), 1.0 / max(1, len(counts)))
    p_c /= p_c.sum()
    w = (present * (p_c / np.maximum(n_c, 1))[None, :]).sum(1)
    if w.sum() <= 0:
        return np.full(len(counts), 1.0 / max(1, len(counts)))
    return w / w.sum()
