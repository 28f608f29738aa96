"""Batch-level CutMix and MixUp (``augment.cutmix_p``, ``augment.mixup_p``, ``augment.mixup_alpha``).

* CutMix: each sample, with probability ``cutmix_p``, receives a random box (area share ``1 - lam``,
  ``lam ~ U(0, 1)``) of image and labels from a partner in the same batch. With ``augment.cutmix_same_domain`` the
  partner has the same domain tag (Urban with Urban, Rural with Rural); a sample with no same-domain partner is
  left alone. A dataset without domain tags mixes freely.
* MixUp: with probability ``mixup_p`` per batch, ``x = lam * x + (1 - lam) * x[perm]`` with
  ``lam ~ Beta(alpha, alpha)`` (taken as ``max(lam, 1 - lam)``); the targets become soft
  (:class:`mapsage.losses.Targets` with ``mask_b`` and ``lam``), which every loss term handles.

Randomness comes from a ``torch.Generator`` seeded per epoch by the engine, so a resumed run mixes identically.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ..losses import Targets


def _beta(alpha: float, g: torch.Generator) -> float:
    """Beta(alpha, alpha) from two Gamma draws of the (seeded) generator."""
    a = torch.full((2,), float(alpha), dtype=torch.float64)
    x = torch._standard_gamma(a, generator=g)
    return float(x[0] / x.sum().clamp_min(1e-12))


def cutmix_partners(domains: Sequence[Optional[str]], apply: Sequence[bool], g: torch.Generator,
                    same_domain: bool = True) -> list[Optional[int]]:
    """A partner index (or None) for each sample: another sample of the same domain when ``same_domain`` and the
    batch has domain tags, else any other sample."""
    n = len(domains)
    tagged = any(d for d in domains)
    out: list[Optional[int]] = []
    for i in range(n):
        if not apply[i] or n < 2:
            out.append(None)
            continue
        if same_domain and tagged:
            cands = [j for j in range(n) if j != i and domains[j] == domains[i] and domains[i]]
        else:
            cands = [j for j in range(n) if j != i]
        if not cands:
            out.append(None)
            continue
        out.append(cands[int(torch.randint(len(cands), (1,), generator=g))])
    return out


def rand_box(h: int, w: int, lam: float, g: torch.Generator) -> tuple[int, int, int, int]:
    """A box (y0, y1, x0, x1) covering about ``1 - lam`` of an h×w image, centre uniform, clipped."""
    cut = math.sqrt(max(0.0, 1.0 - lam))
    ch, cw = int(round(h * cut)), int(round(w * cut))
    cy = int(torch.randint(h, (1,), generator=g))
    cx = int(torch.randint(w, (1,), generator=g))
    y0, y1 = max(0, cy - ch // 2), min(h, cy + (ch - ch // 2))
    x0, x1 = max(0, cx - cw // 2), min(w, cx + (cw - cw // 2))
    return y0, y1, x0, x1


class BatchMixer:
    def __init__(self, augment_cfg, ignore_index: int = 255):
        self.cutmix_p = float(augment_cfg.cutmix_p) if augment_cfg.enabled else 0.0
        self.same_domain = bool(augment_cfg.cutmix_same_domain)
        self.mixup_p = float(augment_cfg.mixup_p) if augment_cfg.enabled else 0.0
        self.alpha = float(augment_cfg.mixup_alpha)
        self.cutmix_alpha = float(getattr(augment_cfg, "cutmix_alpha", 1.0))   # box share lam ~ Beta(a, a)
        self.ignore_index = int(ignore_index)
        self.generator = torch.Generator()
        self.generator.manual_seed(0)

    @property
    def active(self) -> bool:
        return self.cutmix_p > 0 or self.mixup_p > 0

    def set_params(self, params: dict) -> None:
        """Mixing settings of an epoch (:func:`mapsage.train.aug_schedule.mix_params`)."""
        self.cutmix_p, self.mixup_p = float(params["cutmix_p"]), float(params["mixup_p"])
        self.alpha, self.cutmix_alpha = float(params["mixup_alpha"]), float(params["cutmix_alpha"])

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(int(seed))

    def __call__(self, images: torch.Tensor, masks: torch.Tensor,
                 domains: Optional[Sequence[Optional[str]]] = None) -> tuple[torch.Tensor, Targets, dict]:
        g = self.generator
        info = {"cutmix": 0, "mixup": 0.0}
        n = images.shape[0]
        domains = list(domains) if domains is not None else [None] * n
        if self.cutmix_p > 0 and n > 1:
            apply = (torch.rand(n, generator=g) < self.cutmix_p).tolist()
            partners = cutmix_partners(domains, apply, g, self.same_domain)
            if any(p is not None for p in partners):
                src_img, src_mask = images.clone(), masks.clone()
                images, masks = images.clone(), masks.clone()
                h, w = images.shape[-2:]
                for i, j in enumerate(partners):
                    if j is None:
                        continue
                    lam = float(torch.rand(1, generator=g)) if self.cutmix_alpha == 1.0 \
                        else _beta(self.cutmix_alpha, g)
                    y0, y1, x0, x1 = rand_box(h, w, lam, g)
                    images[i, :, y0:y1, x0:x1] = src_img[j, :, y0:y1, x0:x1]
                    masks[i, y0:y1, x0:x1] = src_mask[j, y0:y1, x0:x1]
                    info["cutmix"] += 1
        targets = Targets(mask=masks, ignore_index=self.ignore_index)
        if self.mixup_p > 0 and n > 1 and float(torch.rand(1, generator=g)) < self.mixup_p:
            lam = _beta(self.alpha, g)
            lam = max(lam, 1.0 - lam)
            perm = torch.randperm(n, generator=g).to(images.device)
            images = lam * images + (1.0 - lam) * images[perm]
            targets = Targets(mask=masks, ignore_index=self.ignore_index, mask_b=masks[perm], lam=lam)
            info["mixup"] = lam
        return images, targets, info
