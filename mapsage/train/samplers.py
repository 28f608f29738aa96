"""Class-rebalancing tile samplers for segmentation (``augment.sampler``), from per-tile class pixel counts.

A tile's classes are read two ways (``augment.sampler.by``): ``presence`` -- class ``c`` is in tile ``i`` when it
fills at least ``min_share`` of the tile's labelled pixels (``a_ic`` is 0/1) -- or ``pixels`` -- ``a_ic`` is the
class's share of the tile's labelled pixels. ``n_c = sum_i a_ic`` is the class's size in tiles (tiles containing it,
or tile-equivalents of pixels) and ``f_c = n_c / N`` its frequency.

* ``effective_number`` (Cui et al., CVPR 2019): class weight ``w_c = (1 - beta) / (1 - beta^n_c)``; tile weight
  ``sum_c a_ic w_c``.
* ``class_balanced``: pick a class uniformly, then a tile by its share of that class: tile weight
  ``sum_c a_ic / n_c``; no tile is drawn more than ``cap`` times its uniform rate (weights clipped at ``cap / N``
  and renormalised until they hold).
* ``repeat_factor`` (LVIS, Gupta et al. 2019): ``r_c = max(1, (t / f_c)^alpha)``, tile repeat factor
  ``r_i = max over the tile's classes of r_c`` (classes with ``a_ic > 0``), weight ``r_i``.

Weights are normalised to sum 1 and drawn with replacement by :class:`~mapsage.train.sampler.EpochSampler`.
:func:`expected_class_frequency` gives the target the draws converge to: the share of drawn tiles containing each
class, ``sum_i p_i · 1[a_ic > 0]``.
"""
from __future__ import annotations

import numpy as np

from ..config import ConfigError

KINDS = ("effective_number", "class_balanced", "repeat_factor")


def tile_class_matrix(counts: np.ndarray, by: str = "presence", min_share: float = 1e-3) -> np.ndarray:
    """``a_ic`` from [N, C] pixel counts (see the module doc)."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(1, keepdims=True)
    share = counts / np.maximum(totals, 1.0)
    if by == "pixels":
        return share
    return (share >= float(min_share)) & (counts > 0)


def effective_number_weights(a: np.ndarray, beta: float = 0.999) -> tuple[np.ndarray, np.ndarray]:
    """(tile weights, class weights) of the effective-number sampler."""
    a = np.asarray(a, dtype=np.float64)
    n_c = a.sum(0)
    beta = float(beta)
    with np.errstate(divide="ignore", invalid="ignore"):
        w_c = np.where(n_c > 0, (1.0 - beta) / (1.0 - np.power(beta, n_c)), 0.0)
    return _normalise(a @ w_c), w_c


def class_balanced_weights(a: np.ndarray, cap: float = 10.0) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    n_c = a.sum(0)
    inv = np.where(n_c > 0, 1.0 / np.maximum(n_c, 1e-12), 0.0)
    w = _normalise(a @ inv)
    return cap_weights(w, cap)


def cap_weights(w: np.ndarray, cap: float) -> np.ndarray:
    """Clip weights at ``cap / N`` (``cap`` times uniform) and renormalise, until no weight exceeds it."""
    w = _normalise(np.asarray(w, dtype=np.float64))
    n = len(w)
    limit = float(cap) / n
    if cap is None or cap <= 0 or limit >= 1.0:
        return w
    if limit * n < 1.0:                       # cap < 1 cannot hold with weights summing to 1
        return np.full(n, 1.0 / n)
    for _ in range(100):
        over = w > limit + 1e-15
        if not over.any():
            break
        free = ~over
        excess = 1.0 - limit * over.sum()
        w = np.where(over, limit, w)
        w[free] = w[free] / max(w[free].sum(), 1e-300) * excess
    return w


def repeat_factors(a: np.ndarray, t: float = 0.3, alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(per-tile repeat factors r_i, per-class r_c)."""
    a = np.asarray(a, dtype=np.float64)
    n = max(1, a.shape[0])
    f_c = a.sum(0) / n
    with np.errstate(divide="ignore"):
        r_c = np.where(f_c > 0, np.maximum(1.0, np.power(float(t) / np.maximum(f_c, 1e-12), float(alpha))), 1.0)
    r_i = np.where(a > 0, r_c[None, :], 1.0).max(1) if a.size else np.ones(0)
    return r_i, r_c


def sampler_weights(counts: np.ndarray, scfg) -> tuple[np.ndarray, str]:
    """Tile weights (sum 1) of ``augment.sampler`` and a one-line note of what was applied."""
    a = tile_class_matrix(counts, scfg.by, scfg.min_share)
    if scfg.kind == "effective_number":
        w, w_c = effective_number_weights(a, scfg.beta)
        note = f"effective-number sampler (beta={scfg.beta:g}, by {scfg.by})"
    elif scfg.kind == "class_balanced":
        w = class_balanced_weights(a, scfg.cap)
        note = f"class-balanced sampler (cap {scfg.cap:g}x uniform, by {scfg.by})"
    elif scfg.kind == "repeat_factor":
        r_i, _ = repeat_factors(a, scfg.t, scfg.alpha)
        w = _normalise(r_i)
        note = f"repeat-factor sampler (t={scfg.t:g}, alpha={scfg.alpha:g}, by {scfg.by})"
    else:
        raise ConfigError(f"augment.sampler.kind: unknown sampler '{scfg.kind}'; known: uniform, {', '.join(KINDS)}")
    n = len(w)
    exp = expected_class_frequency(a, w)
    uni = expected_class_frequency(a, np.full(n, 1.0 / max(1, n)))
    note += (f": tile weights {w.min() * n:.2f}x..{w.max() * n:.2f}x uniform; share of drawn tiles containing each "
             f"class " + ", ".join(f"{u:.2f}->{e:.2f}" for u, e in zip(uni, exp)))
    return w, note


def expected_class_frequency(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Share of drawn tiles that contain each class when tiles are drawn with probabilities ``w``."""
    return (np.asarray(w, dtype=np.float64)[:, None] * (np.asarray(a) > 0)).sum(0)


def _normalise(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    s = w.sum()
    if not np.isfinite(s) or s <= 0:
        return np.full(len(w), 1.0 / max(1, len(w)))
    return w / s
