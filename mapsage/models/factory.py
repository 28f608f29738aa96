"""Model factory: segmentation-models-pytorch architectures over smp and timm ("tu-") encoders.

``build_model(cfg)`` returns a :class:`SegModel`, a thin wrapper around the smp network that

* never downloads anything (``encoder_weights=None`` always; ``model.pretrained`` is a local file or ``none``),
* accepts any input size (pads to the encoder's output stride, crops the logits back) and returns logits at the
  input resolution,
* optionally carries an auxiliary boundary head (``model.boundary_head``): then ``forward`` returns
  ``{"seg": logits, "boundary": edge_logits}``,
* can return the encoder features and the decoder output for distillation (``forward(x, return_features=True)``
  returns a dict with ``seg``, ``features`` (list of encoder feature maps), ``decoder``),
* supports gradient checkpointing for MiT (SegFormer) blocks and timm encoders that implement it.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..config import ConfigError
from ..registries import ARCHITECTURES

ARCHS = ARCHITECTURES          # model.arch -> smp class (the registry: mapsage/registries.py)


def _decoder_kwargs(arch: str, channels: int | None) -> dict[str, Any]:
    if channels is None:
        return {}
    c = int(channels)
    if arch == "segformer":
        return {"decoder_segmentation_channels": c}
    if arch in ("unet", "unetplusplus"):
        return {"decoder_channels": [max(8, c // (2 ** i)) for i in range(5)]}
    if arch == "fpn":
        return {"decoder_pyramid_channels": c, "decoder_segmentation_channels": max(8, c // 2)}
    if arch == "dpt":
        return {"decoder_fusion_channels": c}
    return {"decoder_channels": c}        # deeplabv3plus, upernet


class BoundaryHead(nn.Module):
    """A small auxiliary head on the decoder output predicting label edges (one logit per pixel)."""

    def __init__(self, in_channels: int, mid_channels: int = 64):
        super().__init__()
        mid = max(16, min(mid_channels, in_channels))
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def _checkpointed_class(cls: type) -> type:
    """A subclass of a block class whose forward recomputes activations in the backward pass.

    Swapping ``__class__`` keeps the state-dict keys unchanged (checkpoints load with or without it) and survives
    ``copy.deepcopy`` (EMA copies)."""
    name = f"Checkpointed{cls.__name__}"
    cached = _CKPT_CLASSES.get(cls)
    if cached is not None:
        return cached

    def forward(self, *args, **kwargs):
        if self.training and torch.is_grad_enabled():
            return checkpoint(super(new_cls, self).forward, *args, use_reentrant=False, **kwargs)
        return super(new_cls, self).forward(*args, **kwargs)

    new_cls = type(name, (cls,), {"forward": forward, "__module__": __name__})
    _CKPT_CLASSES[cls] = new_cls
    return new_cls


_CKPT_CLASSES: dict[type, type] = {}


class SegModel(nn.Module):
    """An smp segmentation network with the workbench's conventions (see module doc)."""

    def __init__(self, net: nn.Module, arch: str, encoder_name: str, num_classes: int, boundary_head: bool = False):
        super().__init__()
        self.net = net
        self.arch = arch
        self.encoder_name = encoder_name
        self.num_classes = num_classes
        head_in = _head_in_channels(net)
        self.boundary_head = BoundaryHead(head_in) if boundary_head else None
        self.output_stride = int(getattr(net.encoder, "output_stride", 32))
        if arch == "dpt":
            # DPT reassembles the stride-16 ViT map at 4x..0.5x: the half-resolution branch needs stride 32
            self.output_stride = max(self.output_stride * 2, 32)
        self.pretrained_report: dict | None = None

    # parts the engine and the loaders need ---------------------------------------------------------------
    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        h, w = x.shape[-2:]
        s = self.output_stride
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:
            # zeros (the normalised mean colour) at the bottom/right, as mapsage.infer pads
            x = F.pad(x, (0, pw, 0, ph), mode="constant", value=0.0)
        return x, h, w

    def forward(self, x: torch.Tensor, return_features: bool = False):
        xp, h, w = self._pad(x)
        if self.arch == "dpt":                      # ViT encoder: (features, prefix tokens)
            features, prefix = self.net.encoder(xp)
            decoded = self.net.decoder(features, prefix)
        else:
            features = self.net.encoder(xp)
            decoded = self.net.decoder(features)
        logits = self.net.segmentation_head(decoded)
        if logits.shape[-2:] != xp.shape[-2:]:
            logits = F.interpolate(logits, size=xp.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits[..., :h, :w]
        if self.boundary_head is None and not return_features:
            return logits
        out: dict[str, Any] = {"seg": logits}
        if self.boundary_head is not None:
            b = self.boundary_head(decoded)
            b = F.interpolate(b, size=xp.shape[-2:], mode="bilinear", align_corners=False)
            out["boundary"] = b[..., :h, :w]
        if return_features:
            if self.arch == "dpt":
                out["features"] = list(features)
            else:
                out["features"] = [f for f in features if f.shape[1] > 0][1:]   # drop the input and dummy maps
            out["decoder"] = decoded
        return out


def _head_in_channels(net: nn.Module) -> int:
    head = net.segmentation_head
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise RuntimeError("cannot find the segmentation head's input channels")  # pragma: no cover


def enable_grad_checkpointing(model: SegModel) -> str:
    """Turn on activation checkpointing in the encoder. Returns how; ConfigError when the encoder cannot."""
    enc = model.encoder
    if hasattr(enc, "block1") and hasattr(enc, "patch_embed1"):            # MiT (SegFormer)
        for i in range(1, 5):
            seq = getattr(enc, f"block{i}", None)
            if isinstance(seq, nn.Sequential):
                for blk in seq:
                    if type(blk) not in _CKPT_CLASSES.values():
                        blk.__class__ = _checkpointed_class(type(blk))
        return "mit-blocks"
    inner = getattr(enc, "model", None)
    if inner is not None and hasattr(inner, "set_grad_checkpointing"):
        try:
            inner.set_grad_checkpointing(True)
            return "timm"
        except (AssertionError, NotImplementedError, AttributeError, TypeError):
            pass
    raise ConfigError(f"model.grad_checkpointing: the encoder '{model.encoder_name}' does not support gradient "
                      f"checkpointing here (supported: mit_b* and timm 'tu-' encoders that implement it); "
                      f"set model.grad_checkpointing=false")


def _check_encoder_name(name: str) -> None:
    import segmentation_models_pytorch as smp
    if name.startswith("tu-"):
        import timm
        base = name[3:].split(".")[0]
        if not timm.list_models(base):
            near = timm.list_models(f"*{base.split('_')[0]}*")[:8]
            raise ConfigError(f"model.encoder: timm has no model '{base}'"
                              + (f"; similar: {', '.join(near)}" if near else ""))
        return
    names = smp.encoders.get_encoder_names()
    if name not in names:
        import difflib
        near = difflib.get_close_matches(name, names, n=3)
        raise ConfigError(f"model.encoder: unknown encoder '{name}'"
                          + (f"; did you mean {', '.join(near)}?" if near else "")
                          + " (smp encoders such as mit_b0..mit_b5, resnet50, or any timm model as 'tu-<name>')")


def build_model(cfg, num_classes: int | None = None, load_pretrained: bool = True) -> SegModel:
    """Build the model described by ``cfg.model`` for ``cfg.dataset.num_classes`` classes.

    ``model.pretrained`` is loaded into the encoder (see :mod:`mapsage.models.pretrained`) unless
    ``load_pretrained`` is false (inference from a workbench checkpoint loads its own weights)."""
    import segmentation_models_pytorch as smp

    mcfg = cfg.model
    arch = mcfg.arch.lower()
    if arch not in ARCHS:
        raise ConfigError(f"model.arch: unknown architecture '{mcfg.arch}'; known: {sorted(ARCHS)}")
    n_cls = int(num_classes if num_classes is not None else cfg.dataset.num_classes)
    _check_encoder_name(mcfg.encoder)
    # Refuse hub weights before building anything (a clear message beats a network timeout).
    from .pretrained import check_pretrained_value
    pretrained_path = check_pretrained_value(mcfg.pretrained) if load_pretrained else None

    cls = getattr(smp, ARCHS[arch])
    kwargs = dict(encoder_name=mcfg.encoder, encoder_weights=None, in_channels=3, classes=n_cls,
                  **_decoder_kwargs(arch, mcfg.decoder_channels))
    if arch == "dpt":
        kwargs["dynamic_img_size"] = True          # any input size (a multiple of the patch size after padding)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            net = cls(**kwargs)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"model: cannot build arch '{arch}' with encoder '{mcfg.encoder}': {exc}. "
                              f"Choose another model.encoder or model.arch") from exc
    model = SegModel(net, arch=arch, encoder_name=mcfg.encoder, num_classes=n_cls,
                     boundary_head=bool(mcfg.boundary_head))
    from .addons import apply_addons  # model.addons (before the head's dropout)
    model.addon_report = apply_addons(model, list(getattr(mcfg, "addons", []) or []), _head_in_channels(net))
    from .regularise import apply_drop_path, apply_dropout  # model.dropout, model.drop_path
    apply_dropout(model, getattr(mcfg, "dropout", 0.0))
    apply_drop_path(model, getattr(mcfg, "drop_path", None))
    if mcfg.grad_checkpointing:
        enable_grad_checkpointing(model)
    if pretrained_path is not None:
        from .pretrained import load_pretrained as _load
        model.pretrained_report = _load(model, pretrained_path, min_loaded=mcfg.pretrained_min_loaded,
                                        force=mcfg.force_pretrained)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The SegModel inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
