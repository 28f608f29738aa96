"""Per-tile uncertainty and the review queue: the next tile reviewed is the one the model is least sure about.

Scores of one tile, from its class probabilities ``[C, H, W]`` (a run's ``<tile>_prob.npz``, written with
``eval.save_probabilities``) and/or the masks of several members (ensemble members, TTA views, runs):

* ``entropy`` -- mean per-pixel entropy of the probabilities, divided by ``log C`` (0: certain, 1: uniform);
* ``margin`` -- mean gap between the two largest probabilities (small: the top two classes are close);
* ``low_margin_share`` -- share of pixels whose margin is below ``margin_threshold`` (0.1 by default);
* ``disagreement`` -- share of pixels where the members' masks do not all agree;
* ``member_entropy`` -- with member probabilities: entropy of the members' mean minus the mean entropy of the
  members, normalised by ``log C`` (mutual information, the BALD score): how much the members disagree in their
  beliefs.

:func:`review_queue` ranks tiles: unreviewed first, then by the chosen score (most uncertain first: entropy,
disagreement, low-margin share and member entropy descending, margin ascending), ties by tile id.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from ..errors import DataError, UserError
from .errors_map import disagreement_share

SCORES = ("entropy", "margin", "low_margin_share", "disagreement", "member_entropy")
DESCENDING = {"entropy": True, "margin": False, "low_margin_share": True, "disagreement": True,
              "member_entropy": True}
SCORE_LABELS = {"entropy": "mean entropy (normalised)", "margin": "mean top-2 margin",
                "low_margin_share": "share of pixels with margin < 0.1",
                "disagreement": "share of pixels where members disagree",
                "member_entropy": "mutual information of the members (BALD)"}


def _entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=0)


def _normalised(probs: np.ndarray, what: str) -> np.ndarray:
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise ValueError(f"{what}: probabilities must be [C, H, W] with C >= 2, got shape {probs.shape}")
    s = probs.sum(axis=0, keepdims=True)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise DataError(f"{what}: probabilities hold non-finite or all-zero pixels")
    return probs / s


def tile_scores(probs: Optional[np.ndarray] = None, members: Sequence[np.ndarray] = (),
                member_probs: Sequence[np.ndarray] = (), valid: Optional[np.ndarray] = None,
                margin_threshold: float = 0.1, ignore_index: int = 255, what: str = "tile") -> dict[str, float]:
    """The uncertainty scores of one tile (NaN for a score its inputs cannot give).

    ``probs``: ``[C, H, W]`` probabilities (rescaled to sum to 1 per pixel); ``members``: two or more id masks
    of the same tile; ``member_probs``: two or more ``[C, H, W]`` probability maps of members; ``valid``: a
    boolean mask of the pixels that count (default: all)."""
    out = {k: float("nan") for k in SCORES}
    if probs is None and len(member_probs) >= 1:
        probs = np.mean([_normalised(p, what) for p in member_probs], axis=0)
    if probs is not None:
        p = _normalised(probs, what)
        C = p.shape[0]
        v = np.ones(p.shape[1:], bool) if valid is None else np.asarray(valid, bool)
        if v.shape != p.shape[1:]:
            raise ValueError(f"{what}: valid mask {v.shape} does not fit probabilities {p.shape[1:]}")
        if v.any():
            ent = _entropy(p) / math.log(C)
            top2 = np.partition(p, -2, axis=0)[-2:]
            margin = top2[1] - top2[0]
            out["entropy"] = float(ent[v].mean())
            out["margin"] = float(margin[v].mean())
            out["low_margin_share"] = float((margin[v] < margin_threshold).mean())
            if len(member_probs) >= 2:
                mp = [_normalised(m, what) for m in member_probs]
                if any(m.shape != p.shape for m in mp):
                    raise ValueError(f"{what}: member probabilities {[m.shape for m in mp]} differ from {p.shape}")
                ent_of_mean = _entropy(np.mean(mp, axis=0)) / math.log(C)
                mean_ent = np.mean([_entropy(m) for m in mp], axis=0) / math.log(C)
                out["member_entropy"] = float((ent_of_mean - mean_ent)[v].mean())
    if len(members) >= 2:
        out["disagreement"] = disagreement_share(list(members), ignore_index=ignore_index)
    return out


def load_probs(path: str | Path) -> np.ndarray:
    """Probabilities ``[C, H, W]`` (float32) from a prediction's ``_prob.npz``: float16 ``probs``, or uint8
    ``probs`` with a ``scale`` (the compact form of ``mapsage predict --probabilities uint8``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: probability file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "probs" not in z.files:
                raise DataError(f"{path}: no 'probs' array (has {z.files}); expected a prediction's _prob.npz")
            probs = z["probs"].astype(np.float32)
            if "scale" in z.files:
                probs = probs * float(np.asarray(z["scale"]).reshape(-1)[0])
            elif z["probs"].dtype == np.uint8:
                probs = probs / 255.0
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read probabilities ({exc})") from exc
    if probs.ndim != 3:
        raise DataError(f"{path}: probabilities have shape {probs.shape}, expected [C, H, W]")
    return probs


def review_queue(rows: Iterable[Mapping], by: str = "entropy", reviewed: Iterable[str] = (),
                 include_reviewed: bool = True) -> list[dict]:
    """Tiles ordered for review: unreviewed first, then the most uncertain by ``by`` (see :data:`SCORES`),
    ties by tile id; tiles without that score last. Each row gets ``rank`` (1-based) and ``reviewed``.
    ``include_reviewed=False`` drops reviewed tiles."""
    if by not in SCORES:
        raise UserError(f"review queue score must be one of {list(SCORES)}, got {by!r}")
    done = {str(t) for t in reviewed}
    items = []
    for r in rows:
        d = dict(r)
        d["tile"] = str(d["tile"])
        d["reviewed"] = d["tile"] in done
        if d["reviewed"] and not include_reviewed:
            continue
        items.append(d)
    sign = -1.0 if DESCENDING[by] else 1.0

    def key(d: dict):
        v = d.get(by)
        missing = v is None or (isinstance(v, float) and math.isnan(v))
        return (d["reviewed"], missing, 0.0 if missing else sign * float(v), d["tile"])

    items.sort(key=key)
    for i, d in enumerate(items, 1):
        d["rank"] = i
    return items


__all__ = ["SCORES", "SCORE_LABELS", "DESCENDING", "tile_scores", "load_probs", "review_queue"]
