"""The imbalance toolbox on the real demo tiles (Dubai aerial, training split): sampler class frequencies reach
their targets, the caps and formulas hold, auto class weights and Balanced Softmax follow the pixel counts, label
smoothing matches torch's, and doubled rebalancing is flagged."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.train import DUBAI_CFG, tiny_cfg


@pytest.fixture(scope="module")
def dubai_counts():
    from mapsage.config import load_config
    from mapsage.data import build_dataset, sample_class_counts
    cfg = load_config(DUBAI_CFG, [])
    ds = build_dataset(cfg, cfg.dataset.train_split, train=False)
    return np.asarray(sample_class_counts(ds), dtype=np.int64), cfg


def _draw(weights, n=40000, seed=3):
    from mapsage.train.sampler import EpochSampler
    s = EpochSampler(len(weights), n, weights=weights, seed=seed)
    s.set_epoch(0)
    return np.asarray(list(iter(s)))


def _scfg(**kw):
    from mapsage.config.schema import SamplerCfg
    return SamplerCfg(**kw)


@pytest.mark.parametrize("kind,extra", [("effective_number", {"beta": 0.99}), ("class_balanced", {"cap": 3.0}),
                                        ("repeat_factor", {"t": 1.0, "alpha": 1.0}),
                                        ("class_balanced", {"cap": 5.0, "by": "pixels"})])
def test_sampler_class_frequencies_reach_their_targets(dubai_counts, kind, extra):
    from mapsage.train.samplers import expected_class_frequency, sampler_weights, tile_class_matrix
    counts, _ = dubai_counts
    scfg = _scfg(kind=kind, **extra)
    w, note = sampler_weights(counts, scfg)
    a = tile_class_matrix(counts, scfg.by, scfg.min_share).astype(float)   # presence 0/1 or pixel shares
    target = w @ a            # expected share of drawn tiles containing each class (or its mean pixel share)
    if scfg.by == "presence":
        assert np.allclose(target, expected_class_frequency(a, w))
    idx = _draw(w)
    observed = a[idx].mean(0)
    assert np.abs(observed - target).max() < 0.02, (observed, target)
    uniform = a.mean(0)
    rarest = int(np.argmin(np.where(uniform > 0, uniform, 9)))
    assert target[rarest] > uniform[rarest] + 1e-3        # the rarest present class is drawn more often
    assert target.max() / target.min() < uniform.max() / uniform.min()     # and the classes are closer together
    assert kind.replace("_", "-") in note


def test_class_balanced_cap_holds_and_formula(dubai_counts):
    from mapsage.train.samplers import class_balanced_weights, tile_class_matrix
    counts, _ = dubai_counts
    a = tile_class_matrix(counts).astype(float)
    n = len(a)
    free = class_balanced_weights(a, cap=0)
    n_c = a.sum(0)
    manual = (a / np.where(n_c > 0, n_c, 1)).sum(1)
    assert np.allclose(free, manual / manual.sum())
    capped = class_balanced_weights(a, cap=1.1)
    assert capped.max() * n <= 1.1 + 1e-9 and capped.sum() == pytest.approx(1.0)
    assert free.max() * n > 1.15                         # the cap did bind on these tiles


def test_repeat_factor_and_effective_number_formulas(dubai_counts):
    from mapsage.train.samplers import effective_number_weights, repeat_factors, tile_class_matrix
    counts, _ = dubai_counts
    a = tile_class_matrix(counts)
    r_i, r_c = repeat_factors(a, t=0.6, alpha=0.5)
    f = a.mean(0)
    for c in range(a.shape[1]):
        if f[c] > 0:
            assert r_c[c] == pytest.approx(max(1.0, np.sqrt(0.6 / f[c])))
    i = 0
    assert r_i[i] == pytest.approx(max(r_c[a[i]]))
    w, w_c = effective_number_weights(a, beta=0.9)
    n_c = a.sum(0)
    assert w_c[n_c > 0] == pytest.approx((1 - 0.9) / (1 - 0.9 ** n_c[n_c > 0]))


def test_auto_class_weights_and_prior(dubai_counts):
    from mapsage.train.imbalance import auto_class_weights, class_prior
    counts, cfg = dubai_counts
    pix = counts.sum(0).astype(float)
    w = auto_class_weights(counts, "inverse")
    present = pix > 0
    assert w[present].mean() == pytest.approx(1.0)
    ratio = (w[present] * pix[present] / pix.sum())
    assert np.allclose(ratio, ratio[0])                   # w_c ∝ 1 / f_c
    assert np.argmax(w) == np.argmin(np.where(present, pix, np.inf))
    ws = auto_class_weights(counts, "sqrt_inverse")
    assert ws.max() / ws[present].min() < w.max() / w[present].min()
    assert class_prior(counts).sum() == pytest.approx(1.0)


def test_label_smoothing_matches_torch_and_bsce_shifts_logits():
    from mapsage.losses.terms import TERMS, Targets, TermContext
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    mask = torch.randint(0, 4, (2, 8, 8), generator=g)
    mask[0, 0, :3] = 255
    t = Targets(mask=mask)
    ctx = TermContext(num_classes=4, label_smoothing=0.1)
    ref = torch.nn.functional.cross_entropy(logits, mask, ignore_index=255, label_smoothing=0.1)
    assert TERMS["ce"](logits, t, ctx) == pytest.approx(float(ref), rel=1e-5)
    soft = Targets(mask=mask, mask_b=mask, lam=0.5)        # soft path with identical masks: same value
    assert TERMS["ce"](logits, soft, ctx) == pytest.approx(float(ref), rel=1e-5)
    prior = torch.tensor([0.7, 0.2, 0.05, 0.05])
    bctx = TermContext(num_classes=4, log_prior=prior.log())
    ref_b = torch.nn.functional.cross_entropy(logits + prior.log().view(1, -1, 1, 1), mask, ignore_index=255)
    assert TERMS["bsce"](logits, t, bctx) == pytest.approx(float(ref_b), rel=1e-5)


def test_plan_notes_and_doubling_warning(dubai_counts):
    from mapsage.train.imbalance import prepare
    counts, _ = dubai_counts
    cfg = tiny_cfg("augment.sampler.kind=repeat_factor", "loss.class_weights=auto",
                   "loss.schedule=[{from_epoch: 0, terms: {bsce: 1.0}}]", base=DUBAI_CFG)
    plan = prepare(cfg, counts)
    assert plan.sample_weights is not None and len(plan.class_weights) == cfg.dataset.num_classes
    assert plan.class_prior is not None
    text = " ".join(plan.notes)
    assert "repeat-factor" in text and "auto (inverse)" in text and "Balanced Softmax" in text
    assert any("bsce" in w and "sampler" in w for w in plan.warnings)
    clean = prepare(tiny_cfg("loss.class_weights=auto", base=DUBAI_CFG), counts)
    assert not clean.warnings and clean.sample_weights is None


def test_engine_applies_the_toolbox(tmp_workspace, tmp_path, one_thread):
    from mapsage.events import EventWriter, read_events
    from mapsage.train import Trainer
    cfg = tiny_cfg("train.epochs=1", "augment.sampler.kind=class_balanced", "loss.class_weights=auto",
                   "loss.label_smoothing=0.1", "loss.schedule=[{from_epoch: 0, terms: {bsce: 1.0}}]",
                   "train.ema.enabled=false")
    ev = EventWriter(tmp_path)
    tr = Trainer(cfg, run_dir=tmp_path, events=ev, show_bar=False, validate=False)
    tr.fit()
    logs = [e["message"] for e in read_events(tmp_path / "events.jsonl")[0] if e["type"] == "log"]
    assert any(m.startswith("imbalance: class-balanced sampler") for m in logs)
    assert any("loss.class_weights: auto" in m for m in logs)
    assert any(m.startswith("doubled rebalancing") for m in logs)
    assert tr.loss_fn.ctx.class_weights is not None and tr.loss_fn.ctx.log_prior is not None
    assert tr.sampler.weights is not None
