"""Decoder add-ons by registry (``model.addons: [name, ...]``): modules applied to the decoder's output before the
segmentation head, each built from the decoder's channel count.

``register_addon(name)`` registers a factory ``(channels) -> nn.Module`` (shape-preserving ``[B,C,H,W]``). The
built-in ``msa`` is a lightweight multi-scale attention block (the face-parsing report's kind of add-on): depthwise
3×3 convolutions at dilations 1, 2 and 3 gather context at three scales, a pointwise convolution fuses them, and a
squeeze-excitation channel gate plus a sigmoid spatial gate re-weight the input; the block is residual and starts
as the identity (its last gate scale is zero-initialised), so adding it never worsens a warm-started model at step
0. The engine logs each add-on's parameter count.

Add-ons hang off the segmentation head as a forward pre-hook (a bound method of the :class:`AddonStack`, so EMA /
SWA deep copies call their own copy) and add state-dict keys under ``addons.`` only.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..config import ConfigError

ADDONS: dict[str, Callable[[int], nn.Module]] = {}


def register_addon(name: str):
    def deco(factory):
        ADDONS[name] = factory
        return factory
    return deco


class MultiScaleAttention(nn.Module):
    def __init__(self, channels: int, dilations=(1, 2, 3), reduction: int = 8):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=d, dilation=d, groups=channels, bias=False) for d in dilations)
        self.fuse = nn.Sequential(nn.Conv2d(channels * len(dilations), channels, 1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        hidden = max(4, channels // reduction)
        self.channel_gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1),
                                          nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1), nn.Sigmoid())
        self.spatial_gate = nn.Sequential(nn.Conv2d(channels, 1, 7, padding=3), nn.Sigmoid())
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.fuse(torch.cat([b(x) for b in self.branches], dim=1))
        att = ctx * self.channel_gate(ctx) * self.spatial_gate(ctx)
        return x + self.scale * att


@register_addon("msa")
def _msa(channels: int) -> nn.Module:
    return MultiScaleAttention(channels)


class AddonStack(nn.ModuleList):
    def pre_hook(self, module, args):
        x = args[0]
        for addon in self:
            x = addon(x)
        return (x, *args[1:])


def apply_addons(model: nn.Module, names: list[str], channels: int) -> list[dict]:
    """Build and attach ``names``; returns ``[{name, params}]`` for the run's log."""
    if not names:
        return []
    unknown = [n for n in names if n not in ADDONS]
    if unknown:
        raise ConfigError(f"model.addons: unknown add-on(s) {unknown}; registered: {sorted(ADDONS)}")
    stack = AddonStack(ADDONS[n](int(channels)) for n in names)
    model.addons = stack
    model.net.segmentation_head.register_forward_pre_hook(stack.pre_hook)
    return [{"name": n, "params": sum(p.numel() for p in m.parameters())} for n, m in zip(names, stack)]


def describe(report: list[dict]) -> str:
    return "decoder add-ons: " + ", ".join(f"{r['name']} ({r['params'] / 1e3:.1f} k parameters)" for r in report)
