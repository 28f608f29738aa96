"""The imbalance toolbox the engine applies from the training masks' class pixel counts (the counts ``mapsage data
inspect`` reports, cached per dataset by :func:`~mapsage.train.sampler.cached_sample_class_counts`):

* tile samplers (``augment.sampler``, :mod:`mapsage.train.samplers`);
* ``loss.class_weights: auto`` -- ``inverse`` (``1 / f_c``), ``sqrt_inverse`` (``1 / sqrt(f_c)``) or ``effective``
  (``(1 - beta) / (1 - beta^n_c)``, ``n_c`` the class's pixels in tile-equivalents) of each class's pixel share
  ``f_c``, scaled to mean 1 over the classes present; absent classes get 1;
* Balanced Softmax CE (loss term ``bsce``): its log prior ``log f_c`` (Ren et al., NeurIPS 2020).

:func:`prepare` returns what to apply and the notes the run logs; a rebalancing sampler together with Balanced
Softmax (both correct for the same prior: the imbalance is undone twice) is flagged with a warning.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..config import ConfigError


@dataclass
class ImbalancePlan:
    sample_weights: Optional[np.ndarray] = None
    class_weights: Optional[list[float]] = None
    class_prior: Optional[list[float]] = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def uses_bsce(cfg) -> bool:
    return any(float(p.terms.get("bsce", 0) or 0) > 0 for p in cfg.loss.schedule)


def needs_counts(cfg) -> bool:
    return (cfg.augment.sampler.kind != "uniform" or cfg.loss.class_weights == "auto" or uses_bsce(cfg))


def auto_class_weights(counts: np.ndarray, method: str = "inverse", beta: float = 0.999) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    pix = counts.sum(0)
    total = pix.sum()
    present = pix > 0
    if total <= 0 or not present.any():
        return np.ones(len(pix))
    f = pix / total
    if method == "inverse":
        w = np.where(present, 1.0 / np.maximum(f, 1e-12), 0.0)
    elif method == "sqrt_inverse":
        w = np.where(present, 1.0 / np.sqrt(np.maximum(f, 1e-12)), 0.0)
    elif method == "effective":
        tile_px = total / max(1, counts.shape[0])
        n = pix / max(tile_px, 1.0)
        w = np.where(present, (1.0 - beta) / np.maximum(1.0 - np.power(beta, n), 1e-12), 0.0)
    else:
        raise ConfigError(f"loss.class_weights_method: unknown method '{method}'; known: inverse, sqrt_inverse, "
                          f"effective")
    w = w / w[present].mean()
    w[~present] = 1.0
    return w


def class_prior(counts: np.ndarray) -> np.ndarray:
    pix = np.asarray(counts, dtype=np.float64).sum(0)
    pix = np.maximum(pix, 1.0)                       # an absent class keeps a tiny prior (log stays finite)
    return pix / pix.sum()


def prepare(cfg, counts: Optional[np.ndarray]) -> ImbalancePlan:
    plan = ImbalancePlan()
    classes = list(cfg.dataset.classes)
    balanced_sampler = cfg.augment.sampler.kind != "uniform" or bool(cfg.augment.class_aware_sampling)
    if cfg.augment.sampler.kind != "uniform" and cfg.augment.class_aware_sampling:
        raise ConfigError("augment.class_aware_sampling and augment.sampler.kind "
                          f"'{cfg.augment.sampler.kind}' both choose the tile sampler; keep one")
    if counts is not None and cfg.augment.sampler.kind != "uniform":
        from .samplers import sampler_weights
        plan.sample_weights, note = sampler_weights(counts, cfg.augment.sampler)
        plan.notes.append(note)
    if counts is not None and cfg.loss.class_weights == "auto":
        w = auto_class_weights(counts, cfg.loss.class_weights_method, cfg.loss.class_weights_beta)
        plan.class_weights = [float(x) for x in w]
        plan.notes.append(f"loss.class_weights: auto ({cfg.loss.class_weights_method}) from the training masks' "
                          f"pixel counts: " + ", ".join(f"{n} {x:.3g}" for n, x in zip(classes, w)))
    if counts is not None and uses_bsce(cfg):
        prior = class_prior(counts)
        plan.class_prior = [float(x) for x in prior]
        plan.notes.append("Balanced Softmax CE (bsce): class prior from the training masks' pixel shares: "
                          + ", ".join(f"{n} {x:.3f}" for n, x in zip(classes, prior)))
    if cfg.loss.label_smoothing:
        plan.notes.append(f"label smoothing {cfg.loss.label_smoothing:g} on the CE / OHEM terms")
    if balanced_sampler and uses_bsce(cfg):
        which = "augment.class_aware_sampling" if cfg.augment.class_aware_sampling else \
            f"augment.sampler.kind={cfg.augment.sampler.kind}"
        plan.warnings.append(f"doubled rebalancing: {which} oversamples rare classes and the Balanced Softmax CE "
                             f"(loss term bsce) corrects for the same class prior again, so rare classes end up "
                             f"over-predicted; use one of them")
    if balanced_sampler and cfg.loss.class_weights == "auto":
        plan.warnings.append("doubled rebalancing: a class-rebalancing sampler and loss.class_weights: auto both "
                             "up-weight rare classes; consider keeping one")
    return plan
