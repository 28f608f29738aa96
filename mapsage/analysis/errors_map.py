"""Per-pixel error layers of one tile, and per-tile confusion through the one metrics engine.

Every layer is an RGBA ``uint8 [H, W, 4]`` picture ready for a map overlay: transparent where there is nothing to
show (and always where the label is ignored, for the layers that need a label).

* :func:`tile_confusion` -- the tile's C×C confusion matrix (rows label, columns prediction), from
  :class:`mapsage.metrics.SegMetrics`, the accumulator behind every number of the workbench;
* :func:`cell_mask` / :func:`highlight_rgba` -- the pixels of one confusion cell (label ``c`` predicted ``c'``);
* :func:`error_rgba` -- correct / false positive / false negative of one class, or right / wrong over all classes;
* :func:`confidence_rgba` -- low confidence (max probability or top-2 margin) drawn hot, high confidence clear;
* :func:`disagreement_rgba` -- where two masks (two runs, two variants) disagree.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

# layer colours (RGB): chosen to stand out on aerial imagery and from each other
CORRECT = (46, 204, 64)          # green
FALSE_POSITIVE = (255, 65, 54)   # red: predicted as the class, the label says otherwise
FALSE_NEGATIVE = (0, 116, 217)   # blue: the label's class, predicted as something else
HIGHLIGHT = (255, 0, 255)        # magenta: the pixels of one confusion cell
DISAGREE = (255, 220, 0)         # yellow: two masks differ


def _ids(a) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3:            # an id PNG stored as RGB(A): the first channel holds the id
        a = a[..., 0]
    return a


def _check_pair(pred: np.ndarray, label: np.ndarray) -> None:
    if pred.shape != label.shape:
        raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in size")


def tile_confusion(pred, label, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """The C×C int64 confusion matrix of one tile (rows label, columns prediction, ignored pixels dropped), from
    :class:`mapsage.metrics.SegMetrics` -- the same counting as every evaluation."""
    from ..metrics import SegMetrics

    pred, label = _ids(pred), _ids(label)
    _check_pair(pred, label)
    m = SegMetrics(int(num_classes), ignore_index=int(ignore_index), compute_boundary=False)
    m.update(pred, label)
    return np.asarray(m.result().confusion, np.int64)


def cell_mask(pred, label, true_id: int, pred_id: int, ignore_index: int = 255) -> np.ndarray:
    """Boolean ``[H, W]``: the pixels whose label is ``true_id`` and whose prediction is ``pred_id`` (the pixels
    behind one confusion-matrix cell). Ignored label pixels are never in it."""
    pred, label = _ids(pred), _ids(label)
    _check_pair(pred, label)
    if int(true_id) == int(ignore_index):
        return np.zeros(label.shape, bool)
    return (label == int(true_id)) & (pred == int(pred_id))


def _rgba(shape, where: Sequence[tuple[np.ndarray, tuple[int, int, int]]], alpha: int = 255) -> np.ndarray:
    out = np.zeros((*shape, 4), np.uint8)
    for mask, rgb in where:
        out[mask, :3] = rgb
        out[mask, 3] = alpha
    return out


def highlight_rgba(mask: np.ndarray, colour: tuple[int, int, int] = HIGHLIGHT, alpha: int = 255) -> np.ndarray:
    """A boolean mask drawn in one solid colour, transparent elsewhere."""
    mask = np.asarray(mask, bool)
    return _rgba(mask.shape, [(mask, colour)], alpha)


def error_rgba(pred, label, class_id: Optional[int] = None, ignore_index: int = 255,
               show_correct: bool = True) -> np.ndarray:
    """Error layer of one tile.

    ``class_id`` given: green where the class is predicted and labelled (true positive), red where it is
    predicted but the label says otherwise (false positive), blue where it is labelled but predicted as
    something else (false negative). ``class_id`` None: green where the prediction is right, red where it is
    wrong. Ignored label pixels stay transparent; ``show_correct=False`` leaves the green out."""
    pred, label = _ids(pred), _ids(label)
    _check_pair(pred, label)
    valid = label != int(ignore_index)
    if class_id is None:
        right = valid & (pred == label)
        layers = [(valid & ~right, FALSE_POSITIVE)]
        if show_correct:
            layers.insert(0, (right, CORRECT))
        return _rgba(label.shape, layers)
    c = int(class_id)
    p, t = pred == c, label == c
    layers = [(valid & p & ~t, FALSE_POSITIVE), (valid & t & ~p, FALSE_NEGATIVE)]
    if show_correct:
        layers.insert(0, (valid & p & t, CORRECT))
    return _rgba(label.shape, layers)


def _heat_lut() -> np.ndarray:
    """256-entry RGB ramp yellow -> orange -> red -> purple (a hand-made 'inferno'-like ramp, no matplotlib)."""
    stops = np.array([[255, 255, 160], [255, 200, 40], [240, 90, 20], [190, 20, 60], [90, 0, 110]], np.float64)
    x = np.linspace(0, 1, 256) * (len(stops) - 1)
    lo = np.floor(x).astype(int).clip(0, len(stops) - 2)
    f = (x - lo)[:, None]
    return (stops[lo] * (1 - f) + stops[lo + 1] * f).round().astype(np.uint8)


def confidence_map(probs: np.ndarray, kind: str = "maxprob") -> np.ndarray:
    """Per-pixel confidence in ``[0, 1]`` from class probabilities ``[C, H, W]``: the max probability
    (``maxprob``) or the gap between the two largest (``margin``)."""
    probs = np.asarray(probs, np.float32)
    if probs.ndim != 3:
        raise ValueError(f"probabilities must be [C, H, W], got shape {probs.shape}")
    if kind == "maxprob":
        return probs.max(axis=0)
    if kind == "margin":
        if probs.shape[0] < 2:
            return np.ones(probs.shape[1:], np.float32)
        top2 = np.partition(probs, -2, axis=0)[-2:]
        return top2[1] - top2[0]
    raise ValueError(f"confidence kind must be 'maxprob' or 'margin', got {kind!r}")


def confidence_rgba(probs: np.ndarray, kind: str = "maxprob", floor: float = 0.0) -> np.ndarray:
    """Low confidence drawn hot and opaque, high confidence faint: alpha and colour follow ``1 - confidence``.
    Pixels with uncertainty at or below ``floor`` are left transparent."""
    conf = confidence_map(probs, kind)
    unc = np.clip(1.0 - conf, 0.0, 1.0)
    idx = (unc * 255).round().astype(np.uint8)
    out = np.zeros((*unc.shape, 4), np.uint8)
    out[..., :3] = _heat_lut()[idx]
    out[..., 3] = (40 + 215 * unc).round().astype(np.uint8)
    out[unc <= floor, 3] = 0
    return out


def disagreement_rgba(a, b, ignore_index: int = 255, label=None) -> np.ndarray:
    """Yellow where masks ``a`` and ``b`` differ (ignored pixels of either mask, or of ``label`` when given,
    left out)."""
    a, b = _ids(a), _ids(b)
    _check_pair(a, b)
    differ = (a != b) & (a != int(ignore_index)) & (b != int(ignore_index))
    if label is not None:
        label = _ids(label)
        _check_pair(a, label)
        differ &= label != int(ignore_index)
    return highlight_rgba(differ, DISAGREE)


def disagreement_share(masks: Sequence[np.ndarray], ignore_index: int = 255) -> float:
    """Share of pixels (valid in every mask) where the masks do not all agree; NaN when no pixel is valid."""
    ms = [_ids(m) for m in masks]
    if len(ms) < 2:
        raise ValueError("disagreement needs at least two masks")
    for m in ms[1:]:
        _check_pair(ms[0], m)
    stack = np.stack(ms)
    valid = (stack != int(ignore_index)).all(axis=0)
    n = int(valid.sum())
    if n == 0:
        return float("nan")
    differ = (stack != stack[0]).any(axis=0) & valid
    return float(differ.sum()) / n




def block_error_rates(pred, label, block: int = 64, ignore_index: int = 255) -> np.ndarray:
    """Error rate per ``block``×``block`` window of one (large) tile: misclassified / valid label pixels, NaN
    where a window has no valid pixel. Shape ``[ceil(H/block), ceil(W/block)]``."""
    pred, label = _ids(pred), _ids(label)
    _check_pair(pred, label)
    block = int(block)
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    H, W = label.shape
    gh, gw = -(-H // block), -(-W // block)
    valid = np.zeros((gh * block, gw * block), np.int64)
    wrong = np.zeros_like(valid)
    v = label != int(ignore_index)
    valid[:H, :W] = v
    wrong[:H, :W] = v & (pred != label)
    sv = valid.reshape(gh, block, gw, block).sum(axis=(1, 3))
    sw = wrong.reshape(gh, block, gw, block).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sv > 0, sw / np.maximum(sv, 1), np.nan)


def atlas_rgba(rates: np.ndarray, shape: tuple[int, int], block: int, alpha: int = 150) -> np.ndarray:
    """Block error rates (:func:`block_error_rates`) painted over a tile of ``shape``: the heat ramp from clear
    (0 % wrong) to dark purple (100 % wrong); windows without valid pixels transparent."""
    H, W = shape
    r = np.asarray(rates, np.float64)
    big = np.repeat(np.repeat(r, block, axis=0), block, axis=1)[:H, :W]
    out = np.zeros((H, W, 4), np.uint8)
    ok = np.isfinite(big)
    idx = (np.clip(np.where(ok, big, 0.0), 0, 1) * 255).round().astype(np.uint8)
    out[..., :3] = _heat_lut()[idx]
    out[..., 3] = np.where(ok, (alpha * np.clip(np.where(ok, big, 0), 0, 1) ** 0.5).round(), 0).astype(np.uint8)
    return out


__all__ = ["tile_confusion", "cell_mask", "highlight_rgba", "error_rgba", "confidence_map", "confidence_rgba",
           "disagreement_rgba", "disagreement_share", "block_error_rates", "atlas_rgba", "CORRECT", "FALSE_POSITIVE", "FALSE_NEGATIVE", "HIGHLIGHT",
           "DISAGREE"]
