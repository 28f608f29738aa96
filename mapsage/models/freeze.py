"""Freezing a share of the encoder and unfreezing it group by group (the plan's in-domain fine-tuning recipe).

The encoder's parameters are split into *units* in forward order (a stem, each transformer/residual block, each
stage's patch embedding and norm), then the units are cut into ``model.freeze.groups`` contiguous groups of about
equal parameter count. ``model.freeze.ratio`` of the groups (the earliest ones) start frozen; every
``model.freeze.unfreeze_every`` epochs the deepest frozen group is released.
"""
from __future__ import annotations

import re

import torch.nn as nn

# one "unit" = the parameter-name prefix up to the first indexed component (block1.0, layer2.1, stages_0.blocks.3)
_MIT = re.compile(r"^(patch_embed\d|block\d\.\d+|norm\d)\.")


def _unit_of(name: str) -> str:
    if name.startswith("model."):          # timm universal encoders wrap the timm model as .model
        name = name[len("model."):]
    m = _MIT.match(name)
    if m:
        return m.group(1)
    parts = name.split(".")
    out = []
    for i, p in enumerate(parts[:-1]):          # the last part is the tensor name (weight, bias, ...)
        out.append(p)
        nxt = parts[i + 1] if i + 1 < len(parts) - 1 else None
        if p.isdigit():
            break                               # blocks.3 / features.7
        if re.search(r"\d", p) and not (nxt and nxt.isdigit()):
            break                               # conv1, stages_0 (but layer1.0 goes one deeper)
    return ".".join(out) if out else parts[0]


_MIT_ORDER = re.compile(r"^(patch_embed|block|norm)(\d)(?:\.(\d+))?$")


def encoder_units(encoder: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """(unit name, parameters) pairs of the encoder, in forward order."""
    units: dict[str, list[nn.Parameter]] = {}
    for name, p in encoder.named_parameters():
        units.setdefault(_unit_of(name), []).append(p)
    items = list(units.items())
    if items and all(_MIT_ORDER.match(n) for n, _ in items):
        # MiT registers all patch embeddings before the blocks; forward order is stage by stage
        rank = {"patch_embed": 0, "block": 1, "norm": 2}

        def key(item):
            m = _MIT_ORDER.match(item[0])
            return int(m.group(2)), rank[m.group(1)], int(m.group(3) or 0)
        items.sort(key=key)
    return items


def encoder_groups(encoder: nn.Module, groups: int) -> list[list[nn.Parameter]]:
    """The units cut into ``groups`` contiguous groups of (nearly) equal unit counts, earliest first."""
    units = encoder_units(encoder)
    if not units:
        return []
    groups = max(1, min(int(groups), len(units)))
    base, extra = divmod(len(units), groups)
    out, start = [], 0
    for g in range(groups):
        n = base + (1 if g < extra else 0)
        out.append([p for _, ps in units[start:start + n] for p in ps])
        start += n
    return out


class FreezeSchedule:
    """Frozen-group bookkeeping for ``model.freeze`` (ratio, unfreeze_every, groups)."""

    def __init__(self, encoder: nn.Module, ratio: float, unfreeze_every: int, groups: int):
        self.encoder = encoder
        self.groups = encoder_groups(encoder, groups) if ratio > 0 else []
        self.initial = int(round(ratio * len(self.groups))) if self.groups else 0
        self.initial = min(self.initial, len(self.groups))
        self.every = max(1, int(unfreeze_every))
        self.current = -1

    @property
    def active(self) -> bool:
        return self.initial > 0

    def frozen_at(self, epoch: int) -> int:
        """How many of the earliest groups are frozen during ``epoch`` (0-based)."""
        if not self.active:
            return 0
        return max(0, self.initial - epoch // self.every)

    def apply(self, epoch: int) -> bool:
        """Set requires_grad for ``epoch``. Returns True when the frozen set changed."""
        n = self.frozen_at(epoch)
        if n == self.current:
            return False
        self.current = n
        for gi, params in enumerate(self.groups):
            for p in params:
                p.requires_grad_(gi >= n)
        return True

    def set_norm_eval(self) -> None:
        """Keep BatchNorm statistics of frozen groups fixed (call after ``model.train()``)."""
        if self.current <= 0:
            return
        frozen = {id(p) for g in self.groups[:self.current] for p in g}
        for m in self.encoder.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                ps = [p for p in m.parameters(recurse=False)]
                if ps and all(id(p) in frozen for p in ps):
                    m.eval()

    def describe(self, epoch: int) -> dict:
        n = self.frozen_at(epoch)
        total = sum(p.numel() for g in self.groups for p in g) or 1
        frozen = sum(p.numel() for g in self.groups[:n] for p in g)
        return {"frozen_groups": n, "groups": len(self.groups), "frozen_share": round(frozen / total, 4)}
