"""One progress model for every stage kind: a monotonic fraction of the work, a phase label, throughput and ETA.

A stage reports ``ctx.progress(frac=..., phase=..., step=..., steps=..., epoch=..., epochs=..., message=...)``;
:class:`Tracker` (kept by :class:`mapsage.stage.StageContext`) makes the fraction monotonic -- a later phase that
restarts its own count never moves the bar back -- and adds ``eta_s`` (from the elapsed time and the fraction) and
``rate`` (steps per second within the current phase). Readers -- the Plan board, Run detail, ``mapsage runs
list/show`` -- call :func:`view` on the last heartbeat's progress and the run's status, so all of them show the same
figure, and a succeeded run shows 100 %. Torch-free."""
from __future__ import annotations

import math
import time
from typing import Any, Mapping, Optional

PHASES = ("loading", "training", "validating", "evaluating", "refining", "writing")
_ALIASES = {"load": "loading", "train": "training", "val": "validating", "eval": "evaluating",
            "refine": "refining", "write": "writing", "save": "writing"}


def phase_label(phase: Any) -> Optional[str]:
    if phase is None or phase == "":
        return None
    p = str(phase)
    return _ALIASES.get(p, p)


def fraction(progress: Optional[Mapping[str, Any]]) -> Optional[float]:
    """The fraction of the work in [0, 1]: ``frac``, else ``step/steps``, else ``epoch/epochs``."""
    if not progress:
        return None
    frac = progress.get("frac")
    if frac is None and progress.get("steps"):
        frac = (progress.get("step") or 0) / max(1, progress["steps"])
    if frac is None and progress.get("epochs"):
        frac = (progress.get("epoch") or 0) / max(1, progress["epochs"])
    try:
        f = float(frac)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else max(0.0, min(1.0, f))


class Tracker:
    """Monotonic fraction, ETA and per-phase rate for one stage process."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.t0 = clock()
        self.best = 0.0
        self._phase: Optional[str] = None
        self._phase_t0 = self.t0
        self._phase_step0 = 0

    def update(self, progress: dict) -> dict:
        out = dict(progress)
        now = self.clock()
        phase = phase_label(out.get("phase"))
        if phase is not None:
            out["phase"] = phase
        if phase != self._phase:
            self._phase, self._phase_t0, self._phase_step0 = phase, now, int(out.get("step") or 0)
        f = fraction(out)
        if f is not None:
            self.best = max(self.best, f)
            out["frac"] = self.best
            elapsed = now - self.t0
            if 0.0 < self.best < 1.0 and elapsed > 0:
                out["eta_s"] = elapsed * (1.0 - self.best) / self.best
        step = out.get("step")
        dt = now - self._phase_t0
        if step is not None and dt > 0 and out.get("rate") is None:
            done = int(step) - self._phase_step0
            if done > 0:
                out["rate"] = done / dt
        return out


def view(progress: Optional[Mapping[str, Any]], status: Optional[str] = None) -> dict[str, Any]:
    """``{frac, phase, rate, eta_s, text}`` of a run as every reader shows it (100 % once it succeeded)."""
    p = dict(progress or {})
    frac = fraction(p)
    if status == "succeeded":
        frac, p["eta_s"] = 1.0, None
    phase = phase_label(p.get("phase"))
    if status in ("queued", "succeeded", "failed", "cancelled", "died"):
        phase = status
    return {"frac": frac, "phase": phase, "rate": p.get("rate"), "eta_s": p.get("eta_s"),
            "text": text(p, frac, phase)}


def _dur(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def text(p: Mapping[str, Any], frac: Optional[float], phase: Optional[str]) -> str:
    """``73 % · training · epoch 3/10 · step 40/100 · 2.1 it/s · ETA 4m10s`` (parts present only when known)."""
    parts = []
    if frac is not None:
        parts.append(f"{frac * 100:.0f} %")
    if phase:
        parts.append(phase)
    message = str(p.get("message") or "")
    if p.get("epochs") and "epoch" not in message.lower() and phase not in ("succeeded",):
        ep = p.get("epoch")
        parts.append(f"epoch {int(ep) + 1 if isinstance(ep, (int, float)) else '?'}/{p['epochs']}")
    if message and phase not in ("succeeded",):
        parts.append(message)
    elif p.get("steps") and phase not in ("succeeded",):
        parts.append(f"step {p.get('step', '?')}/{p['steps']}")
    rate = p.get("rate")
    if isinstance(rate, (int, float)) and rate > 0 and phase not in ("succeeded",):
        parts.append(f"{rate:.2f} it/s")
    eta = p.get("eta_s")
    if isinstance(eta, (int, float)) and eta > 0 and frac is not None and frac < 1:
        parts.append(f"ETA {_dur(eta)}")
    return " · ".join(parts)
