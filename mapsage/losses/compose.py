"""The training loss: a weighted mix of terms that changes by epoch (``loss.schedule``), with the plan's Lovász guard.

``loss.schedule`` is a list of phases ``{from_epoch, terms: {name: weight}}``. The active phase at epoch ``e`` is the
last one whose (possibly postponed) start is ``<= e``.

Lovász guard (``loss.lovasz_guard``, the plan's rule): when a phase that *adds* Lovász is about to start at epoch
``e``, the validation mIoU of the last epoch (``e - 1``) is compared with the one at the previous milestone,
``loss.lovasz_guard_epochs`` epochs earlier. If it fell below it, training is not stable enough to add Lovász: the
old mix is kept and the switch is postponed by ``lovasz_guard_epochs`` epochs (the check repeats then). Each
decision is returned by :meth:`SegLoss.start_epoch` so the engine logs it.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn

from ..config import ConfigError
from .terms import TERMS, Targets, TermContext, boundary_loss


def describe_mix(terms: dict[str, float]) -> str:
    return " + ".join(f"{name} {w:g}" for name, w in terms.items() if w) or "(no terms)"


class SegLoss(nn.Module):
    """Callable loss: ``loss(outputs, targets) -> (total, {term: value})``.

    ``outputs`` is the logits tensor or the model's dict (``seg``, optional ``boundary``). ``extra_terms`` are
    modules called as ``term(batch, outputs) -> tensor`` (e.g. distillation); their weights are theirs."""

    def __init__(self, cfg, num_classes: Optional[int] = None):
        super().__init__()
        lcfg = cfg.loss
        self.num_classes = int(num_classes if num_classes is not None else cfg.dataset.num_classes)
        self.ignore_index = int(cfg.loss_ignore_index)
        cw = None
        if lcfg.class_weights is not None and lcfg.class_weights != "auto":   # auto: set by the engine
            if len(lcfg.class_weights) != self.num_classes:
                raise ConfigError(f"loss.class_weights has {len(lcfg.class_weights)} weights for "
                                  f"{self.num_classes} classes ({', '.join(cfg.dataset.classes)}); give one per class")
            cw = torch.tensor(lcfg.class_weights, dtype=torch.float32)
        bclasses = None
        if lcfg.boundary_classes:
            names = list(cfg.dataset.classes)
            bad = [c for c in lcfg.boundary_classes if c not in names]
            if bad:
                raise ConfigError(f"loss.boundary_classes: unknown class(es) {bad}; classes are {names}")
            bclasses = [names.index(c) for c in lcfg.boundary_classes]
        self.ctx = TermContext(num_classes=self.num_classes, ignore_index=self.ignore_index, class_weights=cw,
                               ohem_keep=float(lcfg.ohem_keep), focal_gamma=float(lcfg.focal_gamma),
                               boundary_px=int(lcfg.boundary_px), boundary_classes=bclasses,
                               label_smoothing=float(getattr(lcfg, "label_smoothing", 0.0) or 0.0))
        self.phases = sorted(({"from_epoch": int(p.from_epoch), "terms": dict(p.terms)} for p in lcfg.schedule),
                             key=lambda p: p["from_epoch"])
        if not self.phases:
            self.phases = [{"from_epoch": 0, "terms": {"ce": 1.0}}]
        self.phases[0]["from_epoch"] = min(0, self.phases[0]["from_epoch"])
        self.guard = bool(lcfg.lovasz_guard)
        self.guard_epochs = int(getattr(lcfg, "lovasz_guard_epochs", 10))
        self.delays = [0] * len(self.phases)          # postponement of each phase start (epochs)
        self.extra_terms: dict[str, nn.Module] = {}
        self._active = 0
        if getattr(cfg.model, "boundary_head", False) and not any(
                p["terms"].get("boundary", 0) > 0 for p in self.phases):
            raise ConfigError("model.boundary_head is on but no phase of loss.schedule has a 'boundary' term, so the "
                              "head would never learn; add e.g. boundary: 0.2 to loss.schedule terms or set "
                              "model.boundary_head=false")

    # schedule -------------------------------------------------------------------------------------------------
    def start_of(self, k: int) -> int:
        return self.phases[k]["from_epoch"] + self.delays[k]

    def phase_at(self, epoch: int) -> int:
        k = 0
        for i in range(len(self.phases)):
            if self.start_of(i) <= epoch:
                k = i
        return k

    def terms_at(self, epoch: int) -> dict[str, float]:
        return dict(self.phases[self.phase_at(epoch)]["terms"])

    @property
    def active_terms(self) -> dict[str, float]:
        return dict(self.phases[self._active]["terms"])

    def start_epoch(self, epoch: int, val_history: dict[int, float]) -> dict[str, Any]:
        """Fix the mix for ``epoch`` (applying the Lovász guard). Returns {terms, phase, changed, guard}."""
        guard_note = None
        k = self.phase_at(epoch)
        while (self.guard and k > 0 and self.start_of(k) == epoch and k != self._active
               and self.phases[k]["terms"].get("lovasz", 0) > 0
               and not self.phases[k - 1]["terms"].get("lovasz", 0) > 0):
            last = max((e for e in val_history if e < epoch), default=None)
            ref_epoch = max((e for e in val_history if e <= epoch - 1 - self.guard_epochs), default=None)
            if last is None or ref_epoch is None:
                break
            cur, ref = float(val_history[last]), float(val_history[ref_epoch])
            if cur >= ref:
                guard_note = (f"Lovász guard: val mIoU {cur:.4f} at epoch {last} >= {ref:.4f} at epoch {ref_epoch}; "
                              f"switching to {describe_mix(self.phases[k]['terms'])}")
                break
            for i in range(k, len(self.phases)):
                self.delays[i] += self.guard_epochs
            guard_note = (f"Lovász guard: val mIoU {cur:.4f} at epoch {last} fell below {ref:.4f} at epoch "
                          f"{ref_epoch} (previous milestone); keeping {describe_mix(self.phases[k - 1]['terms'])} "
                          f"for {self.guard_epochs} more epochs (switch now at epoch {self.start_of(k)})")
            k = self.phase_at(epoch)
        changed = k != self._active
        self._active = k
        return {"terms": self.active_terms, "phase": k, "changed": changed, "guard": guard_note}

    def state(self) -> dict:
        return {"delays": list(self.delays), "active": self._active}

    def load_state(self, state: dict | None) -> None:
        if state:
            self.delays = [int(d) for d in state.get("delays", self.delays)][:len(self.phases)]
            self.delays += [0] * (len(self.phases) - len(self.delays))
            self._active = int(state.get("active", 0))

    def set_class_stats(self, class_weights=None, class_prior=None) -> None:
        """Class weights (``loss.class_weights: auto``) and the Balanced Softmax prior, from the training data."""
        if class_weights is not None:
            self.ctx.class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
        if class_prior is not None:
            self.ctx.log_prior = torch.log(torch.as_tensor(class_prior, dtype=torch.float32).clamp_min(1e-12))

    # loss -----------------------------------------------------------------------------------------------------
    def add_term(self, name: str, module: nn.Module) -> None:
        """Register an extra loss module called as ``module(batch, outputs) -> scalar`` (distillation hook)."""
        self.extra_terms[name] = module
        self.add_module(f"extra_{name}", module)

    def forward(self, outputs, targets: Targets, batch: Optional[dict] = None,
                terms: Optional[dict[str, float]] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if isinstance(outputs, dict):
            logits, blogits = outputs["seg"], outputs.get("boundary")
        else:
            logits, blogits = outputs, None
        logits = logits.float()
        terms = self.active_terms if terms is None else terms
        values: dict[str, torch.Tensor] = {}
        total = logits.sum() * 0.0
        for name, w in terms.items():
            if not w:
                continue
            if name == "boundary":
                val, parts = boundary_loss(logits, targets, self.ctx, blogits)
                values.update(parts)
            else:
                val = TERMS[name](logits, targets, self.ctx)
            values[name] = val.detach()
            total = total + float(w) * val
        if blogits is not None and not terms.get("boundary"):
            # the boundary head is idle in this phase: keep it in the graph (zero gradient) so DDP sees every
            # trainable parameter used
            total = total + blogits.float().sum() * 0.0
        for name, module in self.extra_terms.items():
            val = module(batch, outputs)
            values[name] = val.detach()
            total = total + val
        return total, values
