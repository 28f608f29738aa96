"""Grad-CAM (Selvaraju et al. 2017) on the classifier's last feature map.

``cam = ReLU(Σ_k α_k A_k)`` with ``α_k`` the spatial mean of ``∂y_c / ∂A_k``; ``A`` is the backbone's
``forward_features`` output (``[B, K, h, w]`` for CNNs; ViT-style token outputs ``[B, N, D]`` are reshaped to their
patch grid, prefix tokens dropped). The map is upsampled to the input size and scaled to 0..1."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _as_grid(feats: torch.Tensor) -> torch.Tensor:
    if feats.dim() == 4:
        return feats
    if feats.dim() == 3:                       # tokens: drop prefix tokens, square grid
        b, n, d = feats.shape
        side = int(math.isqrt(n))
        while side > 0 and n - side * side > 8:
            side -= 1
        grid = feats[:, n - side * side:, :]
        return grid.transpose(1, 2).reshape(b, d, side, side)
    raise ValueError(f"Grad-CAM needs a [B,K,h,w] or [B,N,D] feature output, got {tuple(feats.shape)}")


def grad_cam(model, image: torch.Tensor, target: int | None = None) -> tuple[np.ndarray, int, float]:
    """(cam float32 [H, W] in 0..1, class explained, its probability) for one normalised image ``[3, H, W]``."""
    model.eval()
    x = image.unsqueeze(0).requires_grad_(False)
    with torch.enable_grad():
        feats = model.features(x)
        feats.retain_grad()
        logits = model.head_from(feats)
        probs = logits.softmax(1)[0]
        cls = int(probs.argmax()) if target is None else int(target)
        model.zero_grad(set_to_none=True)
        logits[0, cls].backward()
        a, g = _as_grid(feats), _as_grid(feats.grad)
        weights = g.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * a).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
    cam = cam.detach().cpu().numpy().astype(np.float32)
    top = float(cam.max())
    cam = cam / top if top > 0 else cam
    return cam, cls, float(probs[cls].detach())


def overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The map in a jet colour ramp over the image (uint8 RGB, the image's size)."""
    import cv2

    h, w = rgb.shape[:2]
    c = cv2.resize(cam, (w, h), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap((np.clip(c, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    return (rgb.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).clip(0, 255).astype(np.uint8)
