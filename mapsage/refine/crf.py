"""Fully connected CRF (Krähenbühl & Koltun, 2011) on softmax probabilities, with ``pydensecrf``.

Unary: ``-log p`` of the network's softmax (clipped at 1e-5). Pairwise, the documented DeepLab-style defaults
(``cfg.refine.crf``): an appearance-free Gaussian kernel (``gauss_sxy=3``, ``gauss_compat=3``) that removes
isolated pixels, and a bilateral kernel (``bilateral_sxy=80``, ``bilateral_srgb=13``, ``bilateral_compat=10``)
that snaps labels to colour edges; ``iterations`` mean-field steps (5-10). Potts compatibility.
"""
from __future__ import annotations

import numpy as np

from ..errors import UserError


def _densecrf():
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:  # pragma: no cover - installed with the project
        raise UserError("the crf chains need pydensecrf (pip install pydensecrf2); or drop 'crf' and 'sam+crf' "
                        "from refine.chains") from exc
    return dcrf


def crf_probs(image: np.ndarray, probs: np.ndarray, crf_cfg) -> np.ndarray:
    """Mean-field CRF inference. ``image`` uint8 [H, W, 3], ``probs`` [C, H, W] (sums to 1 over C).

    Returns the CRF's marginals, float32 [C, H, W]."""
    dcrf = _densecrf()
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3:
        raise ValueError(f"probs must be [C, H, W], got {probs.shape}")
    c, h, w = probs.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"image {image.shape[:2]} and probabilities {(h, w)} differ in size")
    if int(crf_cfg.iterations) < 1:
        raise UserError(f"refine.crf.iterations must be at least 1 (plan: 5-10), got {crf_cfg.iterations}")
    unary = -np.log(np.clip(probs, 1e-5, 1.0)).reshape(c, -1)
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    d.addPairwiseGaussian(sxy=float(crf_cfg.gauss_sxy), compat=float(crf_cfg.gauss_compat))
    d.addPairwiseBilateral(sxy=float(crf_cfg.bilateral_sxy), srgb=float(crf_cfg.bilateral_srgb),
                           rgbim=np.ascontiguousarray(image[..., :3], dtype=np.uint8),
                           compat=float(crf_cfg.bilateral_compat))
    q = d.inference(int(crf_cfg.iterations))
    return np.asarray(q, dtype=np.float32).reshape(c, h, w)


def crf_refine(image: np.ndarray, probs: np.ndarray, crf_cfg) -> np.ndarray:
    """CRF label map (uint8 [H, W]) from softmax probabilities."""
    return crf_probs(image, probs, crf_cfg).argmax(0).astype(np.uint8)


def labels_to_probs(probs: np.ndarray, labels: np.ndarray, weight: float) -> np.ndarray:
    """Blend softmax probabilities with a hard label map: ``(1-w) p + w onehot(labels)``.

    Used by the ``sam+crf`` chain so the CRF starts from SAM's labels while keeping the network's confidence
    where SAM agrees with it. With ``w > 0.5`` the blend's argmax is the given label map."""
    probs = np.asarray(probs, dtype=np.float32)
    c = probs.shape[0]
    onehot = np.zeros_like(probs)
    lab = np.asarray(labels)
    valid = lab < c
    np.put_along_axis(onehot, np.where(valid, lab, 0)[None].astype(np.int64), 1.0, axis=0)
    onehot[:, ~valid] = 0.0
    w = float(weight)
    return (1.0 - w) * probs + w * onehot
