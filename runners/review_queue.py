"""The review queue of one run: its tiles ranked so that the next one a reviewer opens is the one the model is least
sure about.

Per tile, from the files the run registered (``store.queue_queries.queue_files``):

* the class probabilities of the scored variant (``<tile>_prob.npz``, written by an evaluation with
  ``eval.save_probabilities=true`` or by ``mapsage predict --probabilities``): mean normalised entropy, mean top-2
  margin and the share of low-margin pixels;
* the masks of every variant of the tile (``pred`` / ``refined``: raw against refinement chains, TTA views,
  post-processing): the share of pixels where they do not all agree;
* the probabilities of two or more variants: their mutual information (BALD).

The scores are computed by :func:`mapsage.analysis.uncertainty.tile_scores`; :func:`queue` adds what reviewers
have done (a verdict on the tile in this run, or a correction of it in any label version of the run's dataset)
and orders the tiles with :func:`mapsage.analysis.uncertainty.review_queue`: not yet reviewed first, then the most
uncertain. Tiles with no label (a ``predict`` run on new imagery) are scored the same way: the queue is where to
label next.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from mapsage.analysis.uncertainty import SCORES, load_probs, review_queue, tile_scores
from mapsage.errors import DataError, UserError

SCORE_COLUMNS = list(SCORES)
QUEUE_COLUMNS = ["rank", "tile", "reviewed", "verdict", "corrected_in", *SCORE_COLUMNS, "variant", "members",
                 "pixels"]


class QueueError(UserError):
    """A run whose tiles cannot be queued (unknown run, no probabilities and no masks)."""


def _read_mask(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im)
    except (OSError, FileNotFoundError) as exc:
        raise DataError(f"{path}: cannot read the prediction mask ({exc})") from exc
    return a[..., 0] if a.ndim == 3 else a


def default_variant(files: pd.DataFrame) -> Optional[str]:
    """The variant whose probabilities cover most tiles (ties: by name); without probabilities, the variant with
    masks of most tiles; None when the run has neither."""
    for kinds in (("prob",), ("pred", "refined")):
        sub = files[files["kind"].isin(kinds)]
        if not sub.empty:
            counts = sub.groupby("variant")["tile"].nunique()
            return str(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0])
    return None


def score_tiles(run_id: str, variant: Optional[str] = None, ignore_index: int = 255,
                progress: Optional[Callable[[int, int], None]] = None) -> tuple[pd.DataFrame, dict]:
    """Uncertainty scores of every tile of a run that has probabilities or masks.

    Returns ``(frame, info)``: one row per tile with the :data:`~mapsage.analysis.uncertainty.SCORES` (NaN where
    the tile's files cannot give one), ``variant`` (whose probabilities were scored), ``members`` (the mask
    variants compared for disagreement) and ``pixels``; ``info`` holds ``variant``, ``variants`` (with masks),
    ``prob_variants`` and ``available`` (the scores at least one tile has). ``progress(done, total)`` is called
    per tile."""
    from store import queue_queries

    files = queue_queries.queue_files(run_id)
    if files.empty:
        raise QueueError(f"run {run_id}: no probability or mask files are registered, so no tile can be ranked; "
                         "evaluate its checkpoint with eval.save_probabilities=true (or mapsage predict "
                         "--probabilities float16) first")
    prob_variants = sorted(set(files.loc[files["kind"] == "prob", "variant"]))
    mask_variants = sorted(set(files.loc[files["kind"].isin(["pred", "refined"]), "variant"]))
    if variant is None:
        variant = default_variant(files)
    elif variant not in prob_variants and variant not in mask_variants:
        raise QueueError(f"run {run_id} has no files of variant {variant!r}; it has "
                         f"{', '.join(sorted(set(prob_variants) | set(mask_variants))) or 'none'}")
    groups = files.groupby("tile", sort=True)
    total = groups.ngroups
    rows = []
    for i, (tile, f) in enumerate(groups):
        probs_of = dict(zip(f.loc[f["kind"] == "prob", "variant"], f.loc[f["kind"] == "prob", "abs_path"]))
        masks = f[f["kind"].isin(["pred", "refined"])].drop_duplicates("variant", keep="last")
        probs = load_probs(probs_of[variant]) if variant in probs_of else None
        member_probs = [load_probs(p) for _, p in sorted(probs_of.items())] if len(probs_of) >= 2 else []
        member_masks = [_read_mask(p) for p in masks["abs_path"]] if len(masks) >= 2 else []
        if member_masks and len({m.shape for m in member_masks}) > 1:
            raise DataError(f"run {run_id}, tile {tile}: the variants' masks differ in size "
                            f"({', '.join(f'{v} {m.shape}' for v, m in zip(masks['variant'], member_masks))})")
        scores = tile_scores(probs, members=member_masks, member_probs=member_probs, ignore_index=ignore_index,
                             what=f"run {run_id}, tile {tile}")
        shape = probs.shape[1:] if probs is not None else (member_masks[0].shape if member_masks else None)
        rows.append({"tile": tile, **scores, "variant": variant if probs is not None else None,
                     "members": ", ".join(masks["variant"]) if len(masks) >= 2 else "",
                     "pixels": int(np.prod(shape)) if shape is not None else 0})
        if progress is not None:
            progress(i + 1, total)
    frame = pd.DataFrame(rows, columns=["tile", *SCORE_COLUMNS, "variant", "members", "pixels"])
    available = [s for s in SCORES if frame[s].notna().any()]
    return frame, {"variant": variant, "variants": mask_variants, "prob_variants": prob_variants,
                   "available": available}


def corrected_tiles(run: Optional[dict]) -> dict[str, int]:
    """``{tile: newest label version that corrected it}`` for the dataset of a run (its config's
    ``dataset`` block: ``name``, ``labels_root``)."""
    from mapsage.analysis import labels

    ds = ((run or {}).get("config") or {}).get("dataset") or {}
    out: dict[str, int] = {}
    for m in labels.versions(labels.labels_root(ds)):
        for tile in m.get("tiles") or {}:
            out[str(tile)] = int(m["version"])
    return out


def order(scores: pd.DataFrame, run_id: str, by: str = "entropy", run: Optional[dict] = None,
          include_reviewed: bool = True) -> pd.DataFrame:
    """``scores`` (from :func:`score_tiles`) ordered for review with the run's verdicts and corrections: columns
    :data:`QUEUE_COLUMNS`."""
    from store import queue_queries

    if run is None:
        import store

        run = store.run(run_id)
    seen = queue_queries.reviewed_tiles(run_id)
    verdict = dict(zip(seen["tile"].astype(str), seen["verdict"]))
    corrected = corrected_tiles(run)
    reviewed = set(verdict) | set(corrected)
    rows = review_queue(scores.to_dict("records"), by=by, reviewed=reviewed, include_reviewed=include_reviewed)
    out = pd.DataFrame(rows, columns=[c for c in QUEUE_COLUMNS if c not in ("verdict", "corrected_in")])
    out["verdict"] = out["tile"].map(verdict)
    out["corrected_in"] = out["tile"].map(lambda t: f"v{corrected[t]}" if t in corrected else None)
    return out[QUEUE_COLUMNS].reset_index(drop=True)


def queue(run_id: str, by: Optional[str] = None, variant: Optional[str] = None, include_reviewed: bool = True,
          progress: Optional[Callable[[int, int], None]] = None) -> tuple[pd.DataFrame, dict]:
    """The review queue of a run: :func:`score_tiles` then :func:`order`. ``by`` None: entropy where the run
    saved probabilities, else the masks' disagreement. Returns ``(queue, info)``; ``info["by"]`` is the score
    used."""
    import store

    run = store.run(run_id)
    if run is None:
        raise QueueError(f"run {run_id!r} is not in the store; `mapsage runs` lists the runs")
    ignore = int((((run.get("config") or {}).get("dataset") or {}).get("ignore_index", 255)))
    scores, info = score_tiles(run_id, variant=variant, ignore_index=ignore, progress=progress)
    if by is None:
        by = next((s for s in ("entropy", "disagreement") if s in info["available"]), None)
        if by is None:
            raise QueueError(f"run {run_id}: its tiles have neither probabilities nor two mask variants to compare; "
                             "evaluate with eval.save_probabilities=true")
    elif by not in info["available"]:
        raise QueueError(f"run {run_id}: no tile has a {by!r} score (available: "
                         f"{', '.join(info['available']) or 'none'}); "
                         + ("entropy and margin need eval.save_probabilities=true" if by in
                            ("entropy", "margin", "low_margin_share") else
                            "disagreement needs two or more mask variants per tile" if by == "disagreement" else
                            "member entropy needs probabilities of two or more variants"))
    info["by"] = by
    return order(scores, run_id, by=by, run=run, include_reviewed=include_reviewed), info


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
