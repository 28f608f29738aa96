"""Learning-rate schedules (train.lr_schedule): every curve against its formula and, where torch has the same
schedule, against torch's own scheduler."""
from __future__ import annotations

import math

import pytest
import torch

from tests.support.train import tiny_cfg


def _torch_curve(make, steps, peak=1.0):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=peak)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _sched(kind, total, warmup=0, **kw):
    from mapsage.schedules import LRSchedule
    return LRSchedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 1.0, total, warmup,
                      kind=kind, **kw)


def test_cosine_default_is_linear_warmup_then_cosine_to_the_floor():
    a = _sched("cosine", 50, 5, warmup_ratio=0.1, min_lr_ratio=0.01)
    warm = [0.1 + 0.9 * t / 5 for t in range(5)]
    cos = [0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, (t - 5) / 44))) for t in range(5, 50)]
    assert [a.lr_at(t) for t in range(50)] == pytest.approx(warm + cos, abs=1e-12)
    assert a.lr_at(0) == pytest.approx(0.1) and a.lr_at(5) == pytest.approx(1.0) and a.lr_at(49) == pytest.approx(0.01)


def test_poly_matches_formula_and_torch():
    s = _sched("poly", 100, 10, warmup_ratio=0.0, min_lr_ratio=0.0, poly_power=0.9)
    for t in (10, 37, 80, 99):
        assert s.lr_at(t) == pytest.approx((1 - (t - 10) / 90) ** 0.9)
    assert s.lr_at(5) == pytest.approx(0.5)                      # linear warmup from 0
    s0 = _sched("poly", 60, 0, min_lr_ratio=0.0, poly_power=2.0)
    ref = _torch_curve(lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=60, power=2.0), 60)
    assert [s0.lr_at(t) for t in range(60)] == pytest.approx(ref, abs=1e-9)


def test_step_matches_multistep():
    s = _sched("step", 90, 0, milestones=[30, 60], gamma=0.1)
    ref = _torch_curve(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [30, 60], gamma=0.1), 90)
    assert [s.lr_at(t) for t in range(90)] == pytest.approx(ref, abs=1e-12)
    assert s.lr_at(29) == 1.0 and s.lr_at(30) == pytest.approx(0.1) and s.lr_at(60) == pytest.approx(0.01)


@pytest.mark.parametrize("mult", [1, 2])
def test_cosine_restarts_match_sgdr(mult):
    s = _sched("cosine_restarts", 70, 0, min_lr_ratio=0.0, cycle_steps=10, cycle_mult=mult)
    ref = _torch_curve(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=mult), 70)
    assert [s.lr_at(t) for t in range(70)] == pytest.approx(ref, abs=1e-9)
    assert s.lr_at(10) == pytest.approx(1.0)                    # a restart
    assert s.lr_at(9) < 0.05


def test_onecycle_matches_torch():
    s = _sched("onecycle", 200, 0, pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    ref = _torch_curve(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=200, pct_start=0.3,
                                                                     div_factor=25.0, final_div_factor=1e4,
                                                                     cycle_momentum=False), 200)
    assert [s.lr_at(t) for t in range(200)] == pytest.approx(ref, rel=1e-6, abs=1e-12)
    assert max(s.lr_at(t) for t in range(200)) == pytest.approx(1.0)


def test_config_builds_per_iteration_schedule_and_steps_groups():
    from mapsage.train.optim import build_scheduler
    cfg = tiny_cfg("train.lr_schedule=step", "train.lr_steps=[1,2]", "train.lr_gamma=0.5", "train.epochs=3",
                   "train.warmup_epochs=0")
    p = torch.nn.Parameter(torch.zeros(1))
    q = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr_mult": 1.0}, {"params": [q], "lr_mult": 0.5}], lr=1.0)
    sched = build_scheduler(opt, cfg, 1.0, steps_per_epoch=4)
    seen = []
    for _ in range(12):
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]))
        sched.step()
    assert [a for a, _ in seen] == [1.0] * 4 + [0.5] * 4 + [0.25] * 4
    assert all(b == pytest.approx(a * 0.5) for a, b in seen)


def test_step_without_milestones_names_the_key():
    from mapsage.config import ConfigError
    from mapsage.schedules import lr_curve
    with pytest.raises(ConfigError, match="train.lr_steps"):
        lr_curve(tiny_cfg("train.lr_schedule=step"), 10)


def test_lr_figure_draws_the_curve():
    from mapsage.schedules import lr_curve, lr_figure
    cfg = tiny_cfg("train.lr_schedule=cosine_restarts", "train.restart_epochs=2", "train.epochs=6",
                   "train.warmup_epochs=0")
    fig = lr_figure(cfg, steps_per_epoch=5)
    ys = list(fig.data[0].y)
    assert ys == pytest.approx(lr_curve(cfg, 5))
    assert len(ys) == 30 and "restarts" in fig.layout.title.text
    assert sum(1 for a, b in zip(ys, ys[1:]) if b > a + 1e-12) == 2     # two restarts in six epochs
