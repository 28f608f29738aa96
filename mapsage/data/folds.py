"""Grouped, stratified k-fold assignment (``dataset.split.folds``).

Units: the split groups (``dataset.split.group_regex``: a Dubai tile, a scene), merged further where images of
two groups are near-duplicates (pHash and dHash within ``near_dup_bits`` bits under some flip/rotation, the
health check's hashes), so no picture is validated on while a copy of it trains. Units are dealt to folds largest
first (ties in a seeded hash order); each goes to the fold where it does the least harm to the balance of images
and of class presence (tiles containing each class, rare classes weighted up), so every fold sees every class
where the data allows. Deterministic for a given dataset, k and seed."""
from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np

from ..config import ConfigError
from .hashing import image_hashes, near_pairs
from .io import load_image
from .samples import Sample

_CACHE: dict[tuple, dict[str, int]] = {}


class _Union:
    def __init__(self, items):
        self.parent = {x: x for x in items}

    def find(self, x):
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def join(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def near_duplicate_links(samples: list[Sample], max_bits: int) -> list[tuple[str, str, int]]:
    """(sample id a, sample id b, bits) for image pairs within ``max_bits`` in pHash and dHash (a != b)."""

    if max_bits < 0 or len(samples) < 2:
        return []
    hs = [image_hashes(load_image(s.image_path)) for s in samples]
    qp = np.stack([h["phash"] for h in hs])
    qd = np.stack([h["dhash"] for h in hs])
    rp = qp[:, 0].copy()
    rd = qd[:, 0].copy()
    out = []
    for i, j, dp, dd in near_pairs(qp, qd, rp, rd, max_bits):
        if i < j:
            out.append((samples[i].id, samples[j].id, max(dp, dd)))
    return out


def class_presence(samples: list[Sample], dataset_cfg, min_share: float = 1e-3) -> np.ndarray:
    """[N, C] bool: class c fills at least ``min_share`` of sample i's labelled pixels."""
    from . import load_mask

    c = int(dataset_cfg.num_classes)
    out = np.zeros((len(samples), c), dtype=bool)
    for i, s in enumerate(samples):
        if not s.mask_path:
            continue
        m = load_mask(s.mask_path, dataset_cfg)
        counts = np.bincount(m[m < c].ravel(), minlength=c)[:c]
        total = max(1, int(counts.sum()))
        out[i] = counts / total >= min_share
    return out


def assign_folds(samples: list[Sample], dataset_cfg, k: int, seed: int = 0, near_dup_bits: int = 6,
                 presence: np.ndarray | None = None, links: list | None = None) -> dict[str, int]:
    """``{sample id: fold}`` for ``samples`` (0..k-1)."""

    key = (str(dataset_cfg.root), tuple(s.id for s in samples), int(k), int(seed), int(near_dup_bits))
    if presence is None and links is None and key in _CACHE:
        return dict(_CACHE[key])
    uf = _Union([s.group for s in samples])
    for a, b, _ in (links if links is not None else near_duplicate_links(samples, near_dup_bits)):
        ga = next(s.group for s in samples if s.id == a)
        gb = next(s.group for s in samples if s.id == b)
        uf.join(ga, gb)
    units: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        units[uf.find(s.group)].append(i)
    if len(units) < k:
        raise ConfigError(f"dataset.split.folds={k}: the data has only {len(units)} independent group(s) (split "
                          f"groups after joining near-duplicates); use at most {len(units)} folds")
    pres = presence if presence is not None else class_presence(samples, dataset_cfg)
    pres = pres.astype(np.float64)
    total = pres.sum(axis=0)
    weight = 1.0 / np.maximum(total, 1.0)                     # rare classes count more
    n_total = len(samples)

    def order_key(u):
        return (-len(units[u]), hashlib.sha256(f"{seed}:{u}".encode()).hexdigest())

    fold_pres = np.zeros((k, pres.shape[1]))
    fold_n = np.zeros(k)
    unit_fold: dict[str, int] = {}
    for u in sorted(units, key=order_key):
        idx = units[u]
        up = pres[idx].sum(axis=0)
        best, best_cost = 0, None
        for f in range(k):
            if fold_n[f] == 0 and any(fold_n[g] == 0 for g in range(f)):
                continue      # fill empty folds in order (ties)
            p = fold_pres.copy()
            p[f] += up
            n = fold_n.copy()
            n[f] += len(idx)
            cost = float(((p - total / k) ** 2 * weight).sum()) + float(((n - n_total / k) ** 2).sum()) / n_total
            if fold_n[f] == 0:
                cost -= 1e9        # every fold gets a unit first
            if best_cost is None or cost < best_cost - 1e-12:
                best, best_cost = f, cost
        unit_fold[u] = best
        fold_pres[best] += up
        fold_n[best] += len(idx)
    out = {samples[i].id: unit_fold[u] for u, idx in units.items() for i in idx}
    if presence is None and links is None:
        _CACHE[key] = dict(out)
    return out
