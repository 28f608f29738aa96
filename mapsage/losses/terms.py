"""Loss terms. Each takes ``(logits [B,C,H,W], targets: Targets, ctx: TermContext)`` and returns a scalar.

Hard targets are ``[B,H,W]`` class ids with ``ignore_index`` elsewhere. MixUp produces *soft* targets
(``lam * onehot(a) + (1 - lam) * onehot(b)``); a pixel counts only where both labels are valid. Every term accepts
both: CE, OHEM and Focal use the soft distribution directly; Dice uses soft one-hot targets; Lovász-softmax (defined
on hard labels) and the boundary term are mixed as ``lam * L(a) + (1 - lam) * L(b)``.

Where smp's losses fit they are used: ``smp.losses.DiceLoss`` (multiclass, ignore_index) for hard targets and
smp's ``soft_dice_score`` for soft ones (the same formula), ``smp.losses.LovaszLoss`` (multiclass, ignore_index).
Focal is the softmax focal loss (smp's multiclass focal is one-vs-all sigmoid, which does not match a softmax
segmentation head and takes no soft targets).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass
class Targets:
    """Training targets of one batch: hard ``mask`` and, after MixUp, a second mask and its mixing weight."""
    mask: torch.Tensor                      # [B,H,W] long, class ids or ignore_index
    ignore_index: int = 255
    mask_b: Optional[torch.Tensor] = None   # MixUp partner labels
    lam: float = 1.0                        # weight of ``mask`` (1 - lam for ``mask_b``)

    @property
    def is_soft(self) -> bool:
        return self.mask_b is not None and self.lam < 1.0

    def valid(self) -> torch.Tensor:
        v = self.mask != self.ignore_index
        if self.is_soft:
            v = v & (self.mask_b != self.ignore_index)
        return v

    def onehot(self, mask: torch.Tensor, num_classes: int, dtype=torch.float32) -> torch.Tensor:
        valid = mask != self.ignore_index
        oh = F.one_hot(torch.where(valid, mask, torch.zeros_like(mask)).long(), num_classes)
        return (oh.permute(0, 3, 1, 2).to(dtype) * valid.unsqueeze(1).to(dtype))

    def soft(self, num_classes: int, dtype=torch.float32) -> torch.Tensor:
        """[B,C,H,W] target distribution (zero where invalid)."""
        q = self.onehot(self.mask, num_classes, dtype)
        if self.is_soft:
            q = self.lam * q + (1.0 - self.lam) * self.onehot(self.mask_b, num_classes, dtype)
        return q * self.valid().unsqueeze(1).to(dtype)

    def parts(self) -> list[tuple[torch.Tensor, float]]:
        """(hard mask, weight) pairs; pixels invalid in either mask are ignored in both (as in ``valid``)."""
        if not self.is_soft:
            return [(self.mask, 1.0)]
        v = self.valid()
        ign = torch.full_like(self.mask, self.ignore_index)
        return [(torch.where(v, self.mask, ign), self.lam), (torch.where(v, self.mask_b, ign), 1.0 - self.lam)]


@dataclass
class TermContext:
    num_classes: int
    ignore_index: int = 255
    class_weights: Optional[torch.Tensor] = None
    ohem_keep: float = 0.3
    focal_gamma: float = 2.0
    boundary_px: int = 3
    boundary_classes: Optional[list[int]] = None       # None: all classes
    label_smoothing: float = 0.0                       # CE / OHEM: target (1 - eps) one-hot + eps / C
    log_prior: Optional[torch.Tensor] = None           # bsce: log class prior [C] (None: uniform, i.e. plain CE)


def _pixel_weights(q: torch.Tensor, cw: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if cw is None:
        return None
    return (q * cw.view(1, -1, 1, 1).to(q)).sum(1)


def pixel_ce(logits: torch.Tensor, targets: Targets, ctx: TermContext) -> tuple[torch.Tensor, torch.Tensor,
                                                                                 Optional[torch.Tensor]]:
    """Per-pixel cross-entropy [B,H,W] (zero where invalid), the valid mask and the per-pixel class weights."""
    valid = targets.valid()
    if not targets.is_soft:
        cw = ctx.class_weights.to(logits) if ctx.class_weights is not None else None
        ls = {"label_smoothing": float(ctx.label_smoothing)} if ctx.label_smoothing else {}
        loss = F.cross_entropy(logits, targets.mask, ignore_index=ctx.ignore_index, reduction="none", **ls)
        w = None
        if cw is not None:
            w = cw[torch.where(valid, targets.mask, torch.zeros_like(targets.mask))] * valid
            loss = loss * w
        return loss, valid, w
    q = targets.soft(ctx.num_classes, logits.dtype)
    w = _pixel_weights(q, ctx.class_weights)
    if ctx.label_smoothing:
        eps = float(ctx.label_smoothing)
        q = (1.0 - eps) * q + eps / ctx.num_classes * valid.unsqueeze(1).to(q.dtype)
    logp = F.log_softmax(logits, dim=1)
    loss = -(q * logp).sum(1)
    if w is not None:
        loss = loss * w
    return loss * valid, valid, w


def ce_loss(logits, targets: Targets, ctx: TermContext) -> torch.Tensor:
    loss, valid, w = pixel_ce(logits, targets, ctx)
    denom = (w.sum() if w is not None else valid.sum()).clamp_min(1e-6)
    return loss.sum() / denom


def bsce_loss(logits, targets: Targets, ctx: TermContext) -> torch.Tensor:
    """Balanced Softmax CE: cross-entropy of ``logits + log prior`` (the training class prior), so the model's
    own logits estimate the class-balanced posterior (Ren et al., NeurIPS 2020)."""
    if ctx.log_prior is None:
        return ce_loss(logits, targets, ctx)
    return ce_loss(logits + ctx.log_prior.to(logits).view(1, -1, 1, 1), targets, ctx)


def ohem_loss(logits, targets: Targets, ctx: TermContext) -> torch.Tensor:
    """Online hard example mining: mean CE of the hardest ``ohem_keep`` share of valid pixels."""
    loss, valid, _ = pixel_ce(logits, targets, ctx)
    vals = loss[valid]
    if vals.numel() == 0:
        return logits.sum() * 0.0
    k = max(1, int(math.ceil(float(ctx.ohem_keep) * vals.numel())))
    if k >= vals.numel():
        return vals.mean()
    return torch.topk(vals, k, sorted=False).values.mean()


def focal_loss(logits, targets: Targets, ctx: TermContext) -> torch.Tensor:
    """Softmax focal loss ``-sum_c q_c (1 - p_c)^gamma log p_c`` with class weights as alpha."""
    valid = targets.valid()
    q = targets.soft(ctx.num_classes, logits.dtype)
    logp = F.log_softmax(logits, dim=1)
    p = logp.exp()
    per = -(q * (1.0 - p).pow(ctx.focal_gamma) * logp).sum(1)
    w = _pixel_weights(q, ctx.class_weights)
    if w is not None:
        per = per * w
        denom = w.sum().clamp_min(1e-6)
    else:
        denom = valid.sum().clamp_min(1)
    return (per * valid).sum() / denom


_SMP_DICE = {}
_SMP_LOVASZ = {}


def dice_loss(logits, targets: Targets, ctx: TermContext) -> torch.Tensor:
    from segmentation_models_pytorch.losses import DiceLoss
    from segmentation_models_pytorch.losses._functional import soft_dice_score
    if not targets.is_soft:
        fn = _SMP_DICE.get(ctx.ignore_index)
        if fn is None:
            fn = _SMP_DICE[ctx.ignore_index] = DiceLoss("multiclass", from_logits=True,
                                                        ignore_index=ctx.ignore_index)
        return fn(logits, targets.mask)
    # the same computation as smp's DiceLoss, with a soft one-hot target
    bs, c = logits.shape[:2]
    valid = targets.valid().reshape(bs, 1, -1).to(logits.dtype)
    probs = logits.log_softmax(dim=1).exp().reshape(bs, c, -1) * valid
    q = targets.soft(c, logits.dtype).reshape(bs, c, -1)
    scores = soft_dice_score(probs, q, smooth=0.0, eps=1e-7, dims=(0, 2))
    loss = (1.0 - scores) * (q.sum((0, 2)) > 0).to(logits.dtype)
    return loss.mean()


def lovasz_loss(logits, targets: Targets, ctx: TermContext) -> torch.Tensor:
    from segmentation_models_pytorch.losses import LovaszLoss
    fn = _SMP_LOVASZ.get(ctx.ignore_index)
    if fn is None:
        fn = _SMP_LOVASZ[ctx.ignore_index] = LovaszLoss("multiclass", per_image=False,
                                                        ignore_index=ctx.ignore_index)
    total = None
    for mask, w in targets.parts():
        term = fn(logits, mask) * w
        total = term if total is None else total + term
    return total


def label_edges(mask: torch.Tensor, num_classes: int, ignore_index: int, px: int,
                classes: Optional[list[int]] = None) -> torch.Tensor:
    """[B,H,W] bool: pixels within ``px`` of a boundary of one of ``classes`` (all when None)."""
    valid = mask != ignore_index
    oh = F.one_hot(torch.where(valid, mask, torch.zeros_like(mask)).long(), num_classes)
    oh = (oh.permute(0, 3, 1, 2).float() * valid.unsqueeze(1))
    if classes is not None:
        oh = oh[:, list(classes)]
    k = 2 * int(px) + 1
    dil = F.max_pool2d(oh, k, stride=1, padding=px)
    ero = -F.max_pool2d(-oh, k, stride=1, padding=px)
    band = (dil - ero).amax(1) > 0
    return band & valid


def boundary_loss(logits, targets: Targets, ctx: TermContext, boundary_logits: Optional[torch.Tensor] = None
                  ) -> tuple[torch.Tensor, dict]:
    """Edge-weighted CE: cross-entropy on the band of ``boundary_px`` pixels around the label's class edges
    (for ``loss.boundary_classes``). With a boundary head its logits are trained too (BCE + Dice on the band)."""
    parts = {}
    total = logits.sum() * 0.0
    head_total = total
    for mask, w in targets.parts():
        band = label_edges(mask, ctx.num_classes, ctx.ignore_index, ctx.boundary_px, ctx.boundary_classes)
        ce = F.cross_entropy(logits, mask, ignore_index=ctx.ignore_index, reduction="none")
        if ctx.class_weights is not None:
            cw = ctx.class_weights.to(logits)
            ce = ce * cw[torch.where(mask != ctx.ignore_index, mask, torch.zeros_like(mask))]
        n = band.sum()
        if n > 0:
            total = total + w * (ce * band).sum() / n
        if boundary_logits is not None:
            valid = (mask != ctx.ignore_index).unsqueeze(1)
            b = boundary_logits.float()
            tgt = band.unsqueeze(1).float()
            bce = F.binary_cross_entropy_with_logits(b, tgt, reduction="none")
            bce = (bce * valid).sum() / valid.sum().clamp_min(1)
            prob = torch.sigmoid(b) * valid
            inter = (prob * tgt).sum()
            dice = 1.0 - (2 * inter + 1.0) / (prob.sum() + tgt.sum() + 1.0)
            head_total = head_total + w * (bce + dice)
    parts["boundary_seg"] = total.detach()
    if boundary_logits is not None:
        parts["boundary_head"] = head_total.detach()
        total = total + head_total
    return total, parts


TERMS = {
    "ce": ce_loss,
    "ohem": ohem_loss,
    "dice": dice_loss,
    "lovasz": lovasz_loss,
    "focal": focal_loss,
    "bsce": bsce_loss,
}
