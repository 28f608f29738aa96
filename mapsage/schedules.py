"""Per-iteration learning-rate schedules (``train.lr_schedule``), stepped once per optimiser step.

Every schedule is a factor of the peak LR at optimiser step ``t`` of ``T = epochs × steps_per_epoch`` steps. All but
``onecycle`` start with the same linear warmup from ``warmup_ratio`` to 1 over ``W = warmup_epochs ×
steps_per_epoch`` steps; after it, with ``p = (t - W) / (T - W - 1)`` and the floor ``m = min_lr_ratio``:

* ``cosine`` (the plan's default): ``m + (1 - m) · ½(1 + cos πp)``.
* ``poly`` (mmseg's "warmup + poly"): ``m + (1 - m) · (1 - (t - W) / (T - W))^power`` (``train.poly_power``).
* ``step``: ``gamma^k`` with ``k`` the number of ``train.lr_steps`` milestones (epochs) reached
  (``train.lr_gamma``).
* ``cosine_restarts`` (SGDR): cosine from 1 to ``m`` within each cycle; the first cycle lasts
  ``train.restart_epochs``, each next one ``train.restart_mult`` times longer.
* ``onecycle``: torch's OneCycleLR (cosine annealing): from ``1/div`` up to 1 over ``onecycle_pct`` of the run, then
  down to ``1/(div·final_div)``; no separate warmup.
* ``constant``: 1 after the warmup.

:func:`lr_curve` gives the whole curve without an optimiser (for the Plan form's figure, :func:`lr_figure`).
"""
from __future__ import annotations

import bisect
import math
from typing import Optional, Sequence

from .config import ConfigError

KINDS = ("cosine", "poly", "step", "cosine_restarts", "onecycle", "constant")


class LRSchedule:
    """``factor(t)`` × peak is the LR of optimiser step ``t``; ``step()`` advances and writes every group's LR
    (``lr × group["lr_mult"]``). Same interface and state as the original warmup+cosine scheduler."""

    def __init__(self, optimizer, peak_lr: float, total_steps: int, warmup_steps: int = 0, *,
                 kind: str = "cosine", warmup_ratio: float = 1e-3, min_lr_ratio: float = 0.01,
                 poly_power: float = 1.0, milestones: Sequence[int] = (), gamma: float = 0.1,
                 cycle_steps: int = 0, cycle_mult: float = 1.0, pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4):
        if kind not in KINDS:
            raise ConfigError(f"train.lr_schedule: unknown schedule '{kind}'; known: {', '.join(KINDS)}")
        self.optimizer = optimizer
        self.kind = kind
        self.peak = float(peak_lr)
        self.total = max(1, int(total_steps))
        self.warmup = 0 if kind == "onecycle" else max(0, min(int(warmup_steps), self.total))
        self.warmup_ratio = float(warmup_ratio)
        self.min_ratio = float(min_lr_ratio)
        self.power = float(poly_power)
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.cycle = max(1, int(cycle_steps or self.total))
        self.cycle_mult = max(1.0, float(cycle_mult))
        self.pct_start = float(pct_start)
        self.div = float(div_factor)
        self.final_div = float(final_div_factor)
        self.step_count = 0
        self._apply()

    # ---------------------------------------------------------------------------------------------------- curve
    def factor(self, t: int) -> float:
        if self.kind == "onecycle":
            return self._onecycle(t)
        if self.warmup and t < self.warmup:
            return self.warmup_ratio + (1.0 - self.warmup_ratio) * t / self.warmup
        m = self.min_ratio
        u = t - self.warmup
        if self.kind == "cosine":
            span = max(1, self.total - self.warmup - 1)
            p = min(1.0, max(0.0, u / span))
            return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * p))
        if self.kind == "poly":
            span = max(1, self.total - self.warmup)
            p = min(1.0, max(0.0, u / span))
            return m + (1.0 - m) * (1.0 - p) ** self.power
        if self.kind == "step":
            return self.gamma ** bisect.bisect_right(self.milestones, t)
        if self.kind == "cosine_restarts":
            start, length = self._cycle_of(u)
            p = (u - start) / length
            return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * p))
        return 1.0                                              # constant

    def _cycle_of(self, u: int) -> tuple[int, float]:
        """(first step, length) of the restart cycle that holds step ``u`` (counted after the warmup)."""
        start, length = 0, float(self.cycle)
        while u >= start + length:
            start += int(round(length))
            length *= self.cycle_mult
        return start, length

    def _onecycle(self, t: int) -> float:
        initial = 1.0 / self.div
        final = initial / self.final_div
        up_end = float(self.pct_start * self.total) - 1.0
        down_end = float(self.total) - 1.0
        if t <= up_end:
            p = t / up_end if up_end > 0 else 1.0
            return final_anneal(initial, 1.0, p)
        p = (t - up_end) / max(1e-9, down_end - up_end)
        return final_anneal(1.0, final, min(1.0, p))

    def lr_at(self, t: int) -> float:
        return self.peak * self.factor(t)

    # ---------------------------------------------------------------------------------------------------- stepping
    def _apply(self) -> None:
        lr = self.lr_at(self.step_count)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_mult", 1.0)

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    @property
    def current_lr(self) -> float:
        return self.lr_at(self.step_count)

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "peak": self.peak, "total": self.total, "warmup": self.warmup,
                "warmup_ratio": self.warmup_ratio, "min_ratio": self.min_ratio, "kind": self.kind}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


def final_anneal(start: float, end: float, p: float) -> float:
    """Cosine interpolation from ``start`` (p=0) to ``end`` (p=1), as torch's OneCycleLR anneals."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * p) + 1.0)


def schedule_kwargs(cfg, steps_per_epoch: int) -> dict:
    """The :class:`LRSchedule` arguments ``cfg.train`` asks for (steps from epochs)."""
    t = cfg.train
    spe = max(1, int(steps_per_epoch))
    kind = str(getattr(t, "lr_schedule", "cosine"))
    milestones = [int(round(float(e) * spe)) for e in (getattr(t, "lr_steps", None) or [])]
    if kind == "step" and not milestones:
        raise ConfigError("train.lr_schedule is 'step' but train.lr_steps is empty; list the epochs at which the "
                          "LR is multiplied by train.lr_gamma, e.g. train.lr_steps=[30,45]")
    return dict(kind=kind, warmup_ratio=float(t.warmup_ratio), min_lr_ratio=float(t.min_lr_ratio),
                poly_power=float(getattr(t, "poly_power", 1.0)), milestones=milestones,
                gamma=float(getattr(t, "lr_gamma", 0.1)),
                cycle_steps=int(round(float(getattr(t, "restart_epochs", 10.0)) * spe)),
                cycle_mult=float(getattr(t, "restart_mult", 1.0)), pct_start=float(getattr(t, "onecycle_pct", 0.3)),
                div_factor=float(getattr(t, "onecycle_div", 25.0)),
                final_div_factor=float(getattr(t, "onecycle_final_div", 1e4)))


def build_schedule(optimizer, cfg, peak_lr: float, steps_per_epoch: int) -> LRSchedule:
    total = int(cfg.train.epochs) * int(steps_per_epoch)
    warm = int(round(float(cfg.train.warmup_epochs) * steps_per_epoch))
    return LRSchedule(optimizer, peak_lr, total, warm, **schedule_kwargs(cfg, steps_per_epoch))


def _effective_lr(cfg, world_size: int = 1) -> float:
    """``mapsage.train.optim.effective_lr`` without importing torch (the app draws curves torch-free)."""
    lr = float(cfg.train.lr)
    if cfg.train.scale_lr:
        gb = int(cfg.train.batch_size) * int(world_size) * max(1, int(cfg.train.accumulate))
        lr *= gb / float(max(1, cfg.train.base_batch))
    return lr


class _NoOptimizer:
    param_groups: list = []


def lr_curve(cfg, steps_per_epoch: int, peak_lr: Optional[float] = None, world_size: int = 1) -> list[float]:
    """The LR of every optimiser step of the run ``cfg`` describes (peak: the effective LR unless given)."""
    peak = _effective_lr(cfg, world_size) if peak_lr is None else float(peak_lr)
    sched = build_schedule(_NoOptimizer(), cfg, peak, steps_per_epoch)
    return [sched.lr_at(t) for t in range(sched.total)]


def describe(cfg) -> str:
    """A short text of the schedule (``warmup 1e + poly^0.9``)."""
    t = cfg.train
    kind = str(getattr(t, "lr_schedule", "cosine"))
    warm = f"warmup {float(t.warmup_epochs):g}e + " if float(t.warmup_epochs) > 0 and kind != "onecycle" else ""
    if kind == "poly":
        body = f"poly^{float(t.poly_power):g}"
    elif kind == "step":
        body = f"step ×{float(t.lr_gamma):g} at {[float(e) for e in t.lr_steps]}"
    elif kind == "cosine_restarts":
        body = f"cosine restarts every {float(t.restart_epochs):g}e (×{float(t.restart_mult):g})"
    elif kind == "onecycle":
        body = f"one-cycle (up {float(t.onecycle_pct):.0%})"
    else:
        body = kind
    return warm + body


def lr_figure(cfg, steps_per_epoch: Optional[int] = None, world_size: int = 1):
    """A plotly figure of the per-iteration LR against epochs (x in epochs, 1-based ends), for the Plan form."""
    from .figures import lr_schedule_figure

    given = steps_per_epoch or cfg.train.steps_per_epoch
    spe = int(given or 100)
    lrs = lr_curve(cfg, spe, world_size=world_size)
    n = len(lrs)
    stride = max(1, n // 2000)                               # a few thousand points are enough to draw
    xs = [t / spe for t in range(0, n, stride)]
    ys = lrs[::stride]
    per = f"{spe} steps per epoch" if given else "drawn with 100 steps per epoch (one pass over the data decides)"
    return lr_schedule_figure(xs, ys, f"Learning rate: {describe(cfg)} · {per}")
