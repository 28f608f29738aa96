"""The one inference code path: whole-image and sliding-window logits, padding to the output stride, TTA.

Training-time validation and the final evaluation both call :func:`infer_probs`, so they can never disagree on
resizing, windows or TTA.

Definitions (mmsegmentation's, ``EncoderDecoder.slide_inference`` and ``SegTTAModel``):

* **Whole**: the batch is padded at the bottom/right with zeros (the normalised mean colour) to a multiple of the
  model's output stride, run once, and the logits are cropped back to the input size.
* **Slide**: a grid of ``tile`` windows every ``stride`` pixels; the last window of a row or column is shifted back
  inside the image (never padded past the edge); an image smaller than the tile is one window of its own size.
  Window logits are summed into a full-size buffer and divided by the per-pixel window count. Windows of all
  images of the batch are run ``eval.window_batch`` crops per forward pass.
* **TTA**: every scale × (identity, horizontal flip if ``hflip``, vertical flip if ``vflip``) is one view; each
  view is resized/flipped, inferred as above, flipped and resized back to the input size, turned into
  probabilities with a softmax, and the probabilities of all views are averaged.

A model's forward returns logits ``[B,C,h,w]`` (or a dict with ``"seg"``); logits at a lower resolution than the
input are resized bilinearly to the (padded) input size.

Nothing here changes ``model.training``: the caller puts the model in eval mode (``evaluate`` does).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

DEFAULT_OUTPUT_STRIDE = 32


class InferenceError(UserError):
    """An inference set-up the user can fix (a model with the wrong class count, a bad window size...)."""


# ----------------------------------------------------------------------------------------------------------------
# Model helpers


def model_output_stride(model: nn.Module, default: int = DEFAULT_OUTPUT_STRIDE) -> int:
    """The factor the input must be divisible by: ``model.output_stride``, the encoder's (smp), or 32."""
    for obj in (model, getattr(model, "module", None), getattr(model, "model", None)):
        if obj is None:
            continue
        value = getattr(obj, "output_stride", None)
        if isinstance(value, int) and value > 0:
            return value
        enc = getattr(obj, "encoder", None)
        value = getattr(enc, "output_stride", None) if enc is not None else None
        if isinstance(value, int) and value > 0:
            return value
    return default


def model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return fallback


def seg_logits(output: Any) -> torch.Tensor:
    """The segmentation logits of a model's output: a tensor, or ``output["seg"]`` (``"out"`` for torchvision)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        for key in ("seg", "out", "logits"):
            if key in output:
                return output[key]
        raise InferenceError(f"the model returned a dict with keys {sorted(output)}; inference needs the "
                             "segmentation logits under 'seg'")
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise InferenceError(f"the model returned {type(output).__name__}; expected logits [B,C,H,W] or a dict "
                         "with 'seg'")


def forward_padded(model: nn.Module, x: torch.Tensor, divisor: int, num_classes: int | None = None) -> torch.Tensor:
    """Logits for ``x`` [B,3,H,W] at its own size: pad bottom/right to ``divisor``, run, resize if needed, crop."""
    h, w = x.shape[-2:]
    ph = (-h) % divisor if divisor > 1 else 0
    pw = (-w) % divisor if divisor > 1 else 0
    xp = F.pad(x, (0, pw, 0, ph), mode="constant", value=0.0) if (ph or pw) else x
    logits = seg_logits(model(xp))
    if logits.ndim != 4:
        raise InferenceError(f"the model returned logits of shape {tuple(logits.shape)}; expected [B,C,H,W]")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise InferenceError(f"the model outputs {logits.shape[1]} classes but the config has {num_classes} "
                             "(dataset.classes); evaluate the checkpoint with the dataset it was trained on")
    if logits.shape[-2:] != xp.shape[-2:]:
        logits = F.interpolate(logits, size=xp.shape[-2:], mode="bilinear", align_corners=False)
    if ph or pw:
        logits = logits[..., :h, :w]
    return logits.float()


# ----------------------------------------------------------------------------------------------------------------
# Windows


def _pair(value: int | Sequence[int], key: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) <= 0:
        raise InferenceError(f"{key} must be two positive integers [height, width], got {list(value)}")
    return value  # type: ignore[return-value]


def window_grid(size: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """Window starts and ends along one axis, mmsegmentation's grid: the last window is shifted back inside."""
    if stride > tile:
        raise InferenceError(f"eval.stride ({stride}) is larger than eval.tile ({tile}): pixels between windows "
                             "would get no prediction; use a stride <= the tile")
    n = max(size - tile + stride - 1, 0) // stride + 1
    out = []
    for i in range(n):
        a = i * stride
        b = min(a + tile, size)
        a = max(b - tile, 0)
        out.append((a, b))
    return out


def slide_windows(height: int, width: int, tile: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """All windows ``(y1, y2, x1, x2)`` of an image, rows outer, columns inner (mmsegmentation's order)."""
    th, tw = _pair(tile, "eval.tile")
    sh, sw = _pair(stride, "eval.stride")
    rows = window_grid(height, th, sh)
    cols = window_grid(width, tw, sw)
    return [(y1, y2, x1, x2) for (y1, y2) in rows for (x1, x2) in cols]


def _chunks(items: list, size: int) -> Iterable[list]:
    """Consecutive groups of at most ``size`` items, balanced: 9 windows at 4 per pass run as 3 + 3 + 3, not
    4 + 4 + 1 (a lone window in the last pass costs nearly as much time as a full pass on a CPU)."""
    n = len(items)
    if n == 0:
        return
    passes = -(-n // max(1, size))
    per = -(-n // passes)
    for i in range(0, n, per):
        yield items[i:i + per]


def whole_logits(model: nn.Module, images: torch.Tensor, num_classes: int, divisor: int) -> torch.Tensor:
    return forward_padded(model, images, divisor, num_classes)


def slide_logits(model: nn.Module, images: torch.Tensor, num_classes: int, tile: Sequence[int],
                 stride: Sequence[int], window_batch: int, divisor: int) -> torch.Tensor:
    """Sliding-window logits: window logits summed, divided by the per-pixel window count."""
    b, _, h, w = images.shape
    windows = slide_windows(h, w, tile, stride)
    per_pass = max(1, int(window_batch) // b)
    out = images.new_zeros((b, num_classes, h, w), dtype=torch.float32)
    count = images.new_zeros((1, 1, h, w), dtype=torch.float32)
    for group in _chunks(windows, per_pass):
        crops = torch.cat([images[:, :, y1:y2, x1:x2] for (y1, y2, x1, x2) in group], dim=0)
        logits = forward_padded(model, crops, divisor, num_classes)
        for k, (y1, y2, x1, x2) in enumerate(group):
            out[:, :, y1:y2, x1:x2] += logits[k * b:(k + 1) * b]
            count[:, :, y1:y2, x1:x2] += 1
    return out / count


def single_view_logits(model: nn.Module, images: torch.Tensor, eval_cfg, num_classes: int,
                       divisor: int | None = None) -> torch.Tensor:
    """Logits of one view (no TTA), whole or sliding window as ``eval_cfg.mode`` says."""
    divisor = divisor or model_output_stride(model)
    if eval_cfg.mode == "slide":
        return slide_logits(model, images, num_classes, eval_cfg.tile, eval_cfg.stride,
                            eval_cfg.window_batch, divisor)
    if eval_cfg.mode == "whole":
        return whole_logits(model, images, num_classes, divisor)
    raise InferenceError(f"eval.mode must be 'whole' or 'slide', got {eval_cfg.mode!r}")


# ----------------------------------------------------------------------------------------------------------------
# TTA


@dataclass(frozen=True)
class View:
    scale: float = 1.0
    flip: str | None = None      # None | "h" | "v"

    @property
    def name(self) -> str:
        return f"s{self.scale:g}" + (f"-flip{self.flip}" if self.flip else "")


def tta_views(tta) -> list[View]:
    """The views of a TTA config (``eval.tta`` or a ``tta_ab`` variant): scales × (none, h-flip, v-flip)."""
    scales = list(getattr(tta, "scales", None) or [1.0]) if tta is not None else [1.0]
    for s in scales:
        if not s > 0:
            raise InferenceError(f"eval.tta.scales must be positive, got {scales}")
    flips: list[str | None] = [None]
    if tta is not None and getattr(tta, "hflip", False):
        flips.append("h")
    if tta is not None and getattr(tta, "vflip", False):
        flips.append("v")
    return [View(float(s), f) for s in scales for f in flips]


def _flip(x: torch.Tensor, flip: str | None) -> torch.Tensor:
    if flip == "h":
        return x.flip(-1)
    if flip == "v":
        return x.flip(-2)
    return x


def view_logits(model: nn.Module, images: torch.Tensor, eval_cfg, num_classes: int, view: View,
                divisor: int) -> torch.Tensor:
    """Logits of one TTA view, flipped and resized back to the input size."""
    h, w = images.shape[-2:]
    x = images
    if view.scale != 1.0:
        size = (max(1, int(h * view.scale + 0.5)), max(1, int(w * view.scale + 0.5)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    x = _flip(x, view.flip)
    logits = single_view_logits(model, x, eval_cfg, num_classes, divisor)
    logits = _flip(logits, view.flip)
    if logits.shape[-2:] != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits


def infer_probs(model: nn.Module, images: torch.Tensor, eval_cfg, num_classes: int) -> torch.Tensor:
    """Class probabilities ``[B,C,H,W]`` for normalised ``images [B,3,H,W]``.

    Whole image or sliding window per ``eval_cfg.mode`` (``tile``, ``stride``, ``window_batch``), TTA per
    ``eval_cfg.tta`` (softmax averaged over views), each view's logits divided by ``eval_cfg.temperature`` when
    set (temperature scaling). Runs on the model's device under ``torch.inference_mode``;
    the result is on that device. Does not change ``model.training``."""
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise InferenceError(f"infer_probs needs images [B,C,H,W], got {tuple(images.shape)}")
    device = model_device(model, images.device)
    divisor = model_output_stride(model)
    views = tta_views(getattr(eval_cfg, "tta", None))
    temperature = getattr(eval_cfg, "temperature", None)     # temperature scaling (eval.temperature)
    with torch.inference_mode():
        x = images.to(device, dtype=torch.float32, non_blocking=True)
        probs = None
        for view in views:
            z = view_logits(model, x, eval_cfg, num_classes, view, divisor)
            if temperature:
                z = z / float(temperature)
            p = z.softmax(dim=1)
            probs = p if probs is None else probs.add_(p)
        if len(views) > 1:
            probs = probs.div_(len(views))
    return probs


def infer_logits(model: nn.Module, images: torch.Tensor, eval_cfg, num_classes: int) -> torch.Tensor:
    """Averaged logits of one view (no TTA): what the logit-averaging ensemble combines."""
    if images.ndim == 3:
        images = images.unsqueeze(0)
    device = model_device(model, images.device)
    with torch.inference_mode():
        return single_view_logits(model, images.to(device, dtype=torch.float32), eval_cfg, num_classes,
                                  model_output_stride(model))
