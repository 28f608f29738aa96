"""Refinement chains: ``raw`` (argmax of the softmax), ``crf``, ``sam``, ``sam+crf``.

``refine_tile(image, probs, chain, cfg)`` returns one label map; :class:`Refiner` runs several chains on a tile
and shares their common steps (SAM's image embedding and prompts run once for ``sam`` and ``sam+crf``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..config import ConfigError
from .crf import crf_probs, labels_to_probs
from .sam import MaskPredictor, SamReport, SamUnavailable, build_predictor, sam_refine, sam_unavailable_reason

CHAINS = ("raw", "crf", "sam", "sam+crf")
SAM_CHAINS = frozenset({"sam", "sam+crf"})


def validate_chains(chains) -> list[str]:
    """The chains of ``refine.chains`` in order, checked; ``raw`` (the baseline) is always first."""
    chains = [str(c).strip().lower() for c in chains]
    bad = [c for c in chains if c not in CHAINS]
    if bad:
        raise ConfigError(f"refine.chains: unknown chain(s) {bad}; known chains: {', '.join(CHAINS)}")
    out = ["raw"] + [c for c in dict.fromkeys(chains) if c != "raw"]
    return out


def _as_probs(probs) -> np.ndarray:
    if hasattr(probs, "detach"):
        probs = probs.detach().float().cpu().numpy()
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim == 4 and probs.shape[0] == 1:
        probs = probs[0]
    if probs.ndim != 3:
        raise ValueError(f"probabilities must be [C, H, W] (or [1, C, H, W]), got {probs.shape}")
    return probs


def _as_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image[..., :3])


@dataclass
class ChainResult:
    chain: str
    labels: np.ndarray                  # uint8 [H, W]
    seconds: float                      # refinement time of this chain (inference excluded)
    sam: Optional[SamReport] = None


@dataclass
class Refiner:
    """Runs refinement chains with one config; builds the SAM predictor once, on first use."""

    cfg: object                         # mapsage Config
    predictor: Optional[MaskPredictor] = None
    device: str = "cpu"
    _sam_error: Optional[str] = field(default=None, init=False)

    @property
    def num_classes(self) -> int:
        return self.cfg.dataset.num_classes

    def sam_unavailable(self) -> Optional[str]:
        """None when the SAM chains can run; else the reason (naming the config key to set)."""
        if self.predictor is not None:
            return None
        return self._sam_error or sam_unavailable_reason(self.cfg.refine.sam)

    def get_predictor(self) -> MaskPredictor:
        if self.predictor is None:
            reason = self.sam_unavailable()
            if reason:
                raise SamUnavailable(reason)
            try:
                self.predictor = build_predictor(self.cfg.refine.sam, self.device)
            except SamUnavailable as exc:
                self._sam_error = str(exc)
                raise
        return self.predictor

    def run(self, image, probs, chains) -> dict[str, ChainResult]:
        """Every chain of ``chains`` on one tile. SAM chains raise :class:`SamUnavailable` when SAM cannot run."""
        image = _as_image(image)
        probs = _as_probs(probs)
        if image.shape[:2] != probs.shape[1:]:
            raise ValueError(f"image {image.shape[:2]} and probabilities {probs.shape[1:]} differ in size")
        chains = validate_chains(chains)
        rcfg = self.cfg.refine
        out: dict[str, ChainResult] = {}
        raw = probs.argmax(0).astype(np.uint8)
        out["raw"] = ChainResult("raw", raw, 0.0)
        if "crf" in chains:
            t = time.perf_counter()
            labels = crf_probs(image, probs, rcfg.crf).argmax(0).astype(np.uint8)
            out["crf"] = ChainResult("crf", labels, time.perf_counter() - t)
        if SAM_CHAINS & set(chains):
            predictor = self.get_predictor()
            t = time.perf_counter()
            sam_labels, report = sam_refine(image, raw, predictor, rcfg.sam, self.num_classes,
                                            ignore_index=self.cfg.ignore_index)
            sam_s = time.perf_counter() - t
            if "sam" in chains:
                out["sam"] = ChainResult("sam", sam_labels.astype(np.uint8), sam_s, report)
            if "sam+crf" in chains:
                t = time.perf_counter()
                blended = labels_to_probs(probs, sam_labels, rcfg.crf.sam_label_weight)
                labels = crf_probs(image, blended, rcfg.crf).argmax(0).astype(np.uint8)
                out["sam+crf"] = ChainResult("sam+crf", labels, sam_s + time.perf_counter() - t, report)
        return {c: out[c] for c in chains}


def refine_tile(image, probs, chain: str, cfg, predictor: Optional[MaskPredictor] = None,
                device: str = "cpu") -> np.ndarray:
    """One chain on one tile: ``image`` uint8 [H, W, 3], ``probs`` softmax [C, H, W] -> label map uint8 [H, W].

    ``predictor`` (for ``sam`` / ``sam+crf``): a :class:`MaskPredictor`; by default built from
    ``cfg.refine.sam`` (reuse a :class:`Refiner` to build it once for many tiles)."""
    chain = str(chain).strip().lower()
    if chain not in CHAINS:
        raise ConfigError(f"unknown refinement chain '{chain}'; known chains (refine.chains): {', '.join(CHAINS)}")
    refiner = Refiner(cfg, predictor=predictor, device=device)
    return refiner.run(image, probs, [chain])[chain].labels
