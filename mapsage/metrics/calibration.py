"""Pixel-level calibration: expected calibration error, reliability diagrams and temperature scaling.

Definitions (ignored label pixels are dropped before anything is counted):

* **ECE** (confidence ECE, Guo et al. 2017): pixels are binned by their confidence ``max_k p_k`` into ``n_bins``
  bins; ``ECE = Σ_b (n_b / N) · |acc_b − conf_b|`` with ``acc_b`` the share of the bin's pixels whose argmax is the
  label and ``conf_b`` their mean confidence. Bins are **fixed** (equal width over [0, 1], the default, 15 bins)
  or **equal-mass** (edges at the confidence quantiles, each bin holding the same number of pixels).
* **Per-class ECE** (class-wise, Kull et al. 2019): for class ``k``, every valid pixel is binned by ``p_k`` and
  ``acc_b`` is the share of the bin's pixels labelled ``k``; the table reports it per class and its mean.
* **Temperature scaling**: one scalar ``T`` divides the logits, ``p = softmax(z / T)``; ``T`` minimises the
  negative log-likelihood of the validation pixels (a one-dimensional convex problem in ``1/T``, solved by golden
  section search over ``log T`` in [log 0.05, log 20]). The argmax (so mIoU) is unchanged without TTA.

The accumulator keeps exact confidence bins over every valid pixel and, for the fit and the after-scaling
figures, a deterministic sample of pixels per tile (``sample_per_tile``), each sampled pixel weighted by its tile's
valid pixels over its sampled pixels, so a large tile counts as much as its pixels do (the sampled figures estimate
the all-pixel ones). Log-probabilities stand in for logits:
``softmax(log p / T) = softmax(z / T)`` because ``log p`` and ``z`` differ by one constant per pixel.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Optional

import numpy as np

T_MIN, T_MAX = 0.05, 20.0


def _bin_index(conf: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each confidence: ``edges`` are ``n_bins + 1`` increasing values from 0 to 1; bins are
    ``(e_i, e_{i+1}]`` with the first bin closed at 0."""
    idx = np.searchsorted(edges, conf, side="left") - 1
    return np.clip(idx, 0, len(edges) - 2)


def bin_edges(conf: np.ndarray, n_bins: int, scheme: str = "fixed") -> np.ndarray:
    if scheme == "fixed":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if scheme == "mass":
        q = np.quantile(conf, np.linspace(0.0, 1.0, n_bins + 1)) if conf.size else np.linspace(0, 1, n_bins + 1)
        q[0], q[-1] = 0.0, 1.0
        return np.maximum.accumulate(q)
    raise ValueError(f"bins must be 'fixed' or 'mass', got {scheme!r}")


def reliability_bins(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15,
                     scheme: str = "fixed", weights: Optional[np.ndarray] = None) -> dict[str, list]:
    """Per bin: ``count`` (pixels, or their summed ``weights``), mean ``conf``, ``acc`` (None for an empty bin),
    and the ``edges``."""
    conf = np.asarray(conf, np.float64).ravel()
    correct = np.asarray(correct, np.float64).ravel()
    w = np.ones_like(conf) if weights is None else np.asarray(weights, np.float64).ravel()
    edges = bin_edges(conf, n_bins, scheme)
    idx = _bin_index(conf, edges)
    count = np.bincount(idx, weights=w, minlength=n_bins)
    if weights is None:
        count = count.round().astype(np.int64)
    sconf = np.bincount(idx, weights=conf * w, minlength=n_bins)
    sacc = np.bincount(idx, weights=correct * w, minlength=n_bins)
    return _bins_dict(count, sconf, sacc, edges)


def _bins_dict(count, sconf, sacc, edges) -> dict[str, list]:
    with np.errstate(invalid="ignore", divide="ignore"):
        mc = np.where(count > 0, sconf / np.maximum(count, 1), np.nan)
        ma = np.where(count > 0, sacc / np.maximum(count, 1), np.nan)
    f = lambda a: [None if not np.isfinite(x) else float(x) for x in a]   # noqa: E731
    return {"edges": [float(e) for e in edges], "count": [int(round(float(c))) for c in count], "conf": f(mc),
            "acc": f(ma)}


def ece_from_bins(bins: dict[str, list]) -> float:
    count = np.asarray(bins["count"], np.float64)
    n = count.sum()
    if n == 0:
        return float("nan")
    gap = [abs(a - c) * k for a, c, k in zip(bins["acc"], bins["conf"], count) if k > 0]
    return float(sum(gap) / n)


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15, scheme: str = "fixed",
        ignore_index: Optional[int] = 255, weights: Optional[np.ndarray] = None) -> float:
    """Confidence ECE of ``probs [N,C]`` against ``labels [N]`` (ignored labels dropped; optional pixel weights)."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels).ravel()
    keep = labels != ignore_index if ignore_index is not None else np.ones(labels.shape, bool)
    probs, labels = probs[keep], labels[keep]
    w = None if weights is None else np.asarray(weights, np.float64).ravel()[keep]
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    return ece_from_bins(reliability_bins(conf, correct, n_bins, scheme, w))


def classwise_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15, scheme: str = "fixed",
                  ignore_index: Optional[int] = 255, weights: Optional[np.ndarray] = None) -> list[float]:
    """Class-wise ECE per class: bins of ``p_k`` against ``label == k`` over every valid pixel."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels).ravel()
    keep = labels != ignore_index if ignore_index is not None else np.ones(labels.shape, bool)
    probs, labels = probs[keep], labels[keep]
    w = None if weights is None else np.asarray(weights, np.float64).ravel()[keep]
    return [ece_from_bins(reliability_bins(probs[:, k], labels == k, n_bins, scheme, w))
            for k in range(probs.shape[1])]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0,
        weights: Optional[np.ndarray] = None) -> float:
    """Mean (or ``weights``-weighted mean) negative log-likelihood of ``labels`` under ``softmax(logits / T)``."""
    z = np.asarray(logits, np.float64) / float(temperature)
    z = z - z.max(1, keepdims=True)
    lse = np.log(np.exp(z).sum(1))
    return float(np.average(lse - z[np.arange(len(labels)), labels], weights=weights))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, tol: float = 1e-4,
                    weights: Optional[np.ndarray] = None) -> float:
    """The temperature minimising :func:`nll` (golden-section search over ``log T``)."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    if len(labels) == 0:
        raise ValueError("fit_temperature: no pixels")
    _nll = nll
    nll_w = lambda z, y, t: _nll(z, y, t, weights)   # noqa: E731
    lo, hi = math.log(T_MIN), math.log(T_MAX)
    g = (math.sqrt(5) - 1) / 2
    c, d = hi - g * (hi - lo), lo + g * (hi - lo)
    fc, fd = nll_w(logits, labels, math.exp(c)), nll_w(logits, labels, math.exp(d))
    while hi - lo > tol:
        if fc < fd:
            hi, d, fd = d, c, fc
            c = hi - g * (hi - lo)
            fc = nll_w(logits, labels, math.exp(c))
        else:
            lo, c, fc = c, d, fd
            d = lo + g * (hi - lo)
            fd = nll_w(logits, labels, math.exp(d))
    return float(math.exp((lo + hi) / 2))


def _tile_rng(tile: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(tile.encode()).digest()[:8], "little"))


class CalibrationAccumulator:
    """Collect calibration evidence tile by tile (see the module doc)."""

    def __init__(self, num_classes: int, ignore_index: int = 255, n_bins: int = 15, scheme: str = "fixed",
                 sample_per_tile: int = 20000):
        self.C, self.ignore_index, self.n_bins, self.scheme = int(num_classes), int(ignore_index), int(n_bins), scheme
        self.sample_per_tile = int(sample_per_tile)
        edges = np.linspace(0.0, 1.0, self.n_bins + 1)
        self._edges = edges
        self.count = np.zeros(self.n_bins, np.int64)
        self.sconf = np.zeros(self.n_bins)
        self.sacc = np.zeros(self.n_bins)
        self.logp: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []     # valid pixels of the tile / pixels sampled from it
        self.tile_of: list[int] = []
        self.n_pixels = 0
        self.n_ignored = 0

    def update(self, probs, label, tile: str) -> None:
        """``probs``: ``[C,H,W]`` (torch or numpy) class probabilities; ``label``: ``[H,W]`` ids / ignore."""
        p = probs.detach().float().cpu().numpy() if hasattr(probs, "detach") else np.asarray(probs, np.float32)
        lab = label.detach().cpu().numpy() if hasattr(label, "detach") else np.asarray(label)
        p = p.reshape(self.C, -1)
        lab = lab.reshape(-1)
        keep = lab != self.ignore_index
        self.n_ignored += int((~keep).sum())
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            return
        self.n_pixels += int(idx.size)
        pv = p[:, idx]
        conf = pv.max(0)
        correct = pv.argmax(0) == lab[idx]
        b = _bin_index(conf, self._edges)
        self.count += np.bincount(b, minlength=self.n_bins)
        self.sconf += np.bincount(b, weights=conf, minlength=self.n_bins)
        self.sacc += np.bincount(b, weights=correct.astype(np.float64), minlength=self.n_bins)
        take = idx if idx.size <= self.sample_per_tile else np.sort(
            _tile_rng(str(tile)).choice(idx, self.sample_per_tile, replace=False))
        self.logp.append(np.log(np.clip(p[:, take].T, 1e-12, None)).astype(np.float32))
        self.labels.append(lab[take].astype(np.int64))
        self.weights.append(np.full(len(take), idx.size / len(take), np.float64))
        self.tile_of.append(len(self.tile_of))

    def result(self, fit: bool = True, temperature: Optional[float] = None) -> dict[str, Any]:
        """ECE before (every pixel, exact bins; and on the sample), the fitted temperature, ECE after (on the
        sample; also cross-fitted: T fitted on half of the tiles, scored on the other half), per-class ECE before
        and after, reliability diagrams."""
        if not self.logp:
            raise ValueError("no valid pixels were seen: calibration needs labelled pixels")
        z = np.concatenate(self.logp)
        y = np.concatenate(self.labels)
        w = np.concatenate(self.weights)
        p0 = _softmax(z.astype(np.float64))
        full_bins = _bins_dict(self.count, self.sconf, self.sacc, self._edges)
        T = float(temperature) if temperature is not None else (fit_temperature(z, y, weights=w) if fit else 1.0)
        p1 = _softmax(z.astype(np.float64) / T)
        before_bins = reliability_bins(p0.max(1), p0.argmax(1) == y, self.n_bins, self.scheme, w)
        after_bins = reliability_bins(p1.max(1), p1.argmax(1) == y, self.n_bins, self.scheme, w)
        cls_before = classwise_ece(p0, y, self.n_bins, self.scheme, None, w)
        cls_after = classwise_ece(p1, y, self.n_bins, self.scheme, None, w)
        # cross-fitted: tiles split in two halves by order; each half scored with the other's temperature
        held = None
        if len(self.logp) >= 2 and temperature is None and fit:
            halves = [[i for i in range(len(self.logp)) if i % 2 == h] for h in (0, 1)]
            parts = []
            for h in (0, 1):
                zf = np.concatenate([self.logp[i] for i in halves[1 - h]])
                yf = np.concatenate([self.labels[i] for i in halves[1 - h]])
                th = fit_temperature(zf, yf, weights=np.concatenate([self.weights[i] for i in halves[1 - h]]))
                zs = np.concatenate([self.logp[i] for i in halves[h]]).astype(np.float64) / th
                parts.append((_softmax(zs), np.concatenate([self.labels[i] for i in halves[h]]), th,
                              np.concatenate([self.weights[i] for i in halves[h]])))
            ph = np.concatenate([q[0] for q in parts])
            yh = np.concatenate([q[1] for q in parts])
            wh = np.concatenate([q[3] for q in parts])
            held = {"ece_after": ece(ph, yh, self.n_bins, self.scheme, None, wh),
                    "temperatures": [q[2] for q in parts]}
        nan = lambda v: None if v is None or not np.isfinite(v) else float(v)   # noqa: E731
        return {
            "bins": self.scheme, "n_bins": self.n_bins, "n_pixels": self.n_pixels, "n_ignored": self.n_ignored,
            "n_sampled": int(len(y)), "sample_per_tile": self.sample_per_tile, "n_tiles": len(self.logp),
            "temperature": T,
            "ece_before_all": nan(ece_from_bins(full_bins)),
            "ece_before": nan(ece_from_bins(before_bins)), "ece_after": nan(ece_from_bins(after_bins)),
            "nll_before": nll(z, y, 1.0, w), "nll_after": nll(z, y, T, w),
            "class_ece_before": [nan(v) for v in cls_before], "class_ece_after": [nan(v) for v in cls_after],
            "diagram_before": before_bins, "diagram_after": after_bins, "diagram_all": full_bins,
            "heldout": held,
        }
