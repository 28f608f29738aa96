"""Model regularisers set from the config: dropout before the segmentation head (``model.dropout``) and
stochastic depth over the encoder's blocks (``model.drop_path``).

* Dropout is a forward pre-hook on the segmentation head (``Dropout2d`` of the decoder output, training only), so
  state-dict keys stay the same with and without it.
* Drop-path: every encoder block with a ``drop_path`` slot (MiT, timm ViTs / ConvNeXts / ResNets …) gets timm's
  ``DropPath`` with a rate rising linearly from 0 (first block) to ``model.drop_path`` (last block), the usual
  stochastic-depth rule; 0 turns it off. ``null`` keeps the encoder's own default (MiT: 0.1).
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError


def apply_dropout(model: nn.Module, p: float) -> None:
    if not p:
        return
    if not 0 < float(p) < 1:
        raise ConfigError(f"model.dropout must be in [0, 1), got {p}")
    rate = float(p)

    def hook(module, args):
        return (F.dropout2d(args[0], rate, module.training), *args[1:])

    model.net.segmentation_head.register_forward_pre_hook(hook)
    model.head_dropout = rate


def drop_path_slots(encoder: nn.Module) -> list[tuple[nn.Module, str]]:
    """(block, attribute) of every ``drop_path`` slot in depth order."""
    from timm.layers import DropPath
    out = []
    for _, m in encoder.named_modules():
        slot = getattr(m, "drop_path", None)
        if isinstance(slot, (nn.Identity, DropPath)):
            out.append((m, "drop_path"))
    return out


def apply_drop_path(model: nn.Module, rate) -> list[float]:
    """Set the stochastic-depth rates; returns them per block (empty when ``rate`` is null)."""
    if rate is None:
        return []
    from timm.layers import DropPath

    rate = float(rate)
    if not 0 <= rate < 1:
        raise ConfigError(f"model.drop_path must be in [0, 1), got {rate}")
    slots = drop_path_slots(model.encoder)
    if not slots and rate > 0:
        raise ConfigError(f"model.drop_path: the encoder '{model.encoder_name}' has no stochastic-depth blocks "
                          f"(MiT and timm 'tu-' encoders have them); set model.drop_path: null")
    n = len(slots)
    rates = [rate * i / max(1, n - 1) for i in range(n)]
    for (block, attr), r in zip(slots, rates):
        setattr(block, attr, DropPath(r) if r > 0 else nn.Identity())
    return rates
