"""Loss terms, soft (MixUp) targets, the epoch schedule and the Lovász guard, on real LoveDA labels."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mapsage.config import ConfigError
from mapsage.losses import SegLoss, Targets, TermContext, label_edges
from mapsage.losses.terms import boundary_loss, ce_loss, dice_loss, focal_loss, lovasz_loss, ohem_loss
from tests.support.train import tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

C, IGN = 7, 255


def _with_ignore(mask: torch.Tensor) -> torch.Tensor:
    m = mask.clone()
    m[:, :16, :] = IGN                         # a band of no-data, as at LoveDA tile borders
    return m


def _logits(mask: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(mask.shape[0], C, *mask.shape[1:], generator=g, requires_grad=True)


def test_real_crop_has_several_classes(loveda_mask_crop):
    assert len(torch.unique(loveda_mask_crop[loveda_mask_crop != IGN])) >= 3


def test_ce_ignore_and_class_weights_match_torch(loveda_mask_crop):
    mask = _with_ignore(loveda_mask_crop)
    logits = _logits(mask)
    ctx = TermContext(num_classes=C, ignore_index=IGN)
    got = ce_loss(logits, Targets(mask), ctx)
    ref = F.cross_entropy(logits, mask, ignore_index=IGN)
    assert torch.allclose(got, ref, atol=1e-6)
    # ignored pixels get no gradient
    got.backward()
    assert logits.grad[:, :, :16, :].abs().max() == 0
    assert logits.grad[:, :, 16:, :].abs().max() > 0
    w = torch.tensor([0.1, 2.0, 1.5, 3.0, 2.5, 1.2, 1.0])                 # the plan's example weights
    ctx_w = TermContext(num_classes=C, ignore_index=IGN, class_weights=w)
    got_w = ce_loss(logits.detach(), Targets(mask), ctx_w)
    ref_w = F.cross_entropy(logits.detach(), mask, weight=w, ignore_index=IGN)
    assert torch.allclose(got_w, ref_w, atol=1e-6)


def test_soft_targets_are_linear_mix_of_hard(loveda_mask_crop):
    mask = loveda_mask_crop
    mask_b = torch.flip(mask, dims=[0])
    logits = _logits(mask, 1).detach()
    ctx = TermContext(num_classes=C, ignore_index=IGN)
    lam = 0.7
    t = Targets(mask, mask_b=mask_b, lam=lam)
    assert t.is_soft
    soft = ce_loss(logits, t, ctx)
    # the valid set is where both labels are valid; CE is linear in the target distribution
    parts = t.parts()
    ref = sum(w * F.cross_entropy(logits, m, ignore_index=IGN, reduction="sum") for m, w in parts) / t.valid().sum()
    assert torch.allclose(soft, ref, atol=1e-5)
    q = t.soft(C)
    assert torch.allclose(q.sum(1)[t.valid()], torch.ones(int(t.valid().sum())))
    # the soft path of Dice equals smp's hard Dice when the soft target is one-hot
    hard = dice_loss(logits, Targets(mask), ctx)
    same = dice_loss(logits, Targets(mask, mask_b=mask.clone(), lam=0.5), ctx)
    assert torch.allclose(hard, same, atol=1e-5)


def test_ohem_keeps_the_hardest_share(loveda_mask_crop):
    mask = _with_ignore(loveda_mask_crop)
    logits = _logits(mask, 2)
    keep = 0.3
    ctx = TermContext(num_classes=C, ignore_index=IGN, ohem_keep=keep)
    loss = ohem_loss(logits, Targets(mask), ctx)
    per = F.cross_entropy(logits.detach(), mask, ignore_index=IGN, reduction="none")[mask != IGN]
    k = math.ceil(keep * per.numel())
    assert torch.allclose(loss.detach(), per.sort(descending=True).values[:k].mean(), atol=1e-6)
    loss.backward()
    touched = (logits.grad.abs().sum(1) > 0).sum().item()
    assert touched == k                                                   # exactly the kept pixels get gradient
    ctx_all = TermContext(num_classes=C, ignore_index=IGN, ohem_keep=1.0)
    assert torch.allclose(ohem_loss(logits.detach(), Targets(mask), ctx_all),
                          F.cross_entropy(logits.detach(), mask, ignore_index=IGN), atol=1e-6)


def test_lovasz_perfect_prediction_is_zero_and_ignores_ignore(loveda_mask_crop):
    mask = _with_ignore(loveda_mask_crop)
    perfect = 30.0 * F.one_hot(torch.where(mask == IGN, 0, mask), C).permute(0, 3, 1, 2).float()
    perfect[:, :, :16, :] = torch.randn(2, C, 16, 128)                    # garbage where the label is ignored
    ctx = TermContext(num_classes=C, ignore_index=IGN)
    assert lovasz_loss(perfect, Targets(mask), ctx).item() < 1e-4
    assert lovasz_loss(_logits(mask, 3).detach(), Targets(mask), ctx).item() > 0.3
    assert dice_loss(perfect, Targets(mask), ctx).item() < 1e-4


def test_focal_with_gamma_zero_is_ce(loveda_mask_crop):
    mask = _with_ignore(loveda_mask_crop)
    logits = _logits(mask, 4).detach()
    ctx0 = TermContext(num_classes=C, ignore_index=IGN, focal_gamma=0.0)
    assert torch.allclose(focal_loss(logits, Targets(mask), ctx0), F.cross_entropy(logits, mask, ignore_index=IGN),
                          atol=1e-5)
    ctx2 = TermContext(num_classes=C, ignore_index=IGN, focal_gamma=2.0)
    assert focal_loss(logits, Targets(mask), ctx2) < focal_loss(logits, Targets(mask), ctx0)


def test_boundary_band_and_loss(loveda_mask_crop):
    mask = _with_ignore(loveda_mask_crop)
    band = label_edges(mask, C, IGN, px=2)
    assert band.any() and not band[mask == IGN].any()
    flat = torch.full((1, 32, 32), 3, dtype=torch.long)
    assert not label_edges(flat, C, IGN, px=2).any()
    # every band pixel is within 2 px of a different class
    b, y, x = [int(v) for v in band.nonzero()[len(band.nonzero()) // 2]]
    win = mask[b, max(0, y - 2):y + 3, max(0, x - 2):x + 3]
    assert len(torch.unique(win[win != IGN])) >= 2
    logits = _logits(mask, 5)
    ctx = TermContext(num_classes=C, ignore_index=IGN, boundary_px=2)
    loss, parts = boundary_loss(logits, Targets(mask), ctx)
    loss.backward()
    assert (logits.grad.abs().sum(1) > 0).eq(band).all()                  # only the band is trained
    head = torch.zeros(2, 1, 128, 128, requires_grad=True)
    loss2, parts2 = boundary_loss(logits.detach(), Targets(mask), ctx, head)
    assert "boundary_head" in parts2 and parts2["boundary_head"] > 0
    loss2.backward()
    assert head.grad.abs().sum() > 0


def test_schedule_switching_and_logging():
    cfg = tiny_cfg()
    cfg.loss.schedule = [type(cfg.loss.schedule[0])(0, {"ce": 0.7, "dice": 0.3}),
                         type(cfg.loss.schedule[0])(20, {"ce": 0.6, "dice": 0.3, "lovasz": 0.1})]
    loss = SegLoss(cfg)
    assert loss.terms_at(19) == {"ce": 0.7, "dice": 0.3}
    assert loss.terms_at(20) == {"ce": 0.6, "dice": 0.3, "lovasz": 0.1}
    info = loss.start_epoch(0, {})
    assert info["terms"] == {"ce": 0.7, "dice": 0.3} and info["phase"] == 0
    # improving validation: the guard lets Lovász in at epoch 20
    hist = {e: 0.30 + 0.005 * e for e in range(20)}
    info = loss.start_epoch(20, hist)
    assert info["changed"] and info["terms"]["lovasz"] == 0.1 and "switching" in info["guard"]
    logits = torch.randn(1, C, 32, 32)
    mask = torch.randint(0, C, (1, 32, 32))
    total, values = loss(logits, Targets(mask))
    assert set(values) == {"ce", "dice", "lovasz"}
    expect = 0.6 * values["ce"] + 0.3 * values["dice"] + 0.1 * values["lovasz"]
    assert torch.allclose(total, expect, atol=1e-5)


def test_lovasz_guard_postpones_when_val_fell():
    cfg = tiny_cfg()
    cfg.loss.schedule = [type(cfg.loss.schedule[0])(0, {"ce": 0.7, "dice": 0.3}),
                         type(cfg.loss.schedule[0])(20, {"ce": 0.6, "dice": 0.3, "lovasz": 0.1})]
    loss = SegLoss(cfg)
    loss.start_epoch(0, {})
    hist = {e: 0.40 for e in range(20)}
    hist[19] = 0.35                                                       # fell below epoch 9's 0.40
    info = loss.start_epoch(20, hist)
    assert not info["changed"] and info["terms"] == {"ce": 0.7, "dice": 0.3}
    assert "fell below" in info["guard"] and "epoch 30" in info["guard"]
    assert loss.terms_at(29) == {"ce": 0.7, "dice": 0.3} and loss.start_of(1) == 30
    hist.update({e: 0.41 for e in range(20, 30)})
    info = loss.start_epoch(30, hist)
    assert info["changed"] and "lovasz" in info["terms"]
    # the postponement is part of the resumable state
    state = loss.state()
    fresh = SegLoss(cfg)
    fresh.load_state(state)
    assert fresh.start_of(1) == 30 and fresh.active_terms == loss.active_terms


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="loss.class_weights"):
        SegLoss(tiny_cfg("loss.class_weights=[1.0, 2.0]"))
    with pytest.raises(ConfigError, match="model.boundary_head"):
        SegLoss(tiny_cfg("model.boundary_head=true"))
    with pytest.raises(ConfigError, match="loss.boundary_classes"):
        SegLoss(tiny_cfg("loss.boundary_classes=[roads]"))
    SegLoss(tiny_cfg("model.boundary_head=true", "loss.boundary_classes=[road, building]",
                     "loss.schedule=[{from_epoch: 0, terms: {ce: 1.0, boundary: 0.2}}]"))
