"""Score a model on clean or corrupted full tiles through the workbench's one inference path
(:func:`mapsage.infer.infer_probs`) and one metrics engine (:class:`mapsage.metrics.SegMetrics`).

Corrupted views that hide pixels (cloud occlusion) are scored three ways: every pixel (``all``), the pixels whose
ground is visible (``clear``: occluded pixels set to the ignore index) and the occluded pixels alone
(``occluded``). A ``hook(probs [C,H,W], label [H,W], tile)`` sees each tile's probabilities (calibration)."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from ..config.schema import TTACfg
from ..infer.core import infer_probs
from ..infer.evaluate import make_metrics, pick_indices


@dataclass
class ScoreOutcome:
    all: Any                              # SegMetrics over every valid pixel
    clear: Any = None                     # SegMetrics, occluding corruptions only
    occluded: Any = None
    occluded_share: Optional[float] = None
    n_images: int = 0
    seconds: float = 0.0
    tiles: list[str] = field(default_factory=list)
    complete: bool = True


def single_view(eval_cfg):
    """``eval_cfg`` without TTA (corruption and extent passes measure the model, not the TTA)."""
    out = copy.deepcopy(eval_cfg)
    out.tta = TTACfg(scales=[1.0], hflip=False, vflip=False)
    return out


def score(model, dataset, cfg, device, *, eval_cfg=None, max_tiles: Optional[int] = None,
          hook: Optional[Callable] = None, progress: Optional[Callable[[int, int], None]] = None,
          should_stop: Optional[Callable[[], bool]] = None) -> ScoreOutcome:
    eval_cfg = eval_cfg or cfg.eval
    C, ign = cfg.dataset.num_classes, cfg.dataset.ignore_index
    idx = pick_indices(len(dataset), max_tiles)
    out = ScoreOutcome(all=make_metrics(cfg))
    occ_px = valid_px = 0
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        for n, i in enumerate(idx):
            if should_stop is not None and should_stop():
                out.complete = False
                break
            item = dataset[i]
            tile = str(item.get("id", i))
            probs = infer_probs(model, item["image"].unsqueeze(0).to(device), eval_cfg, C)[0]
            pred = probs.argmax(0).to(torch.uint8).cpu()
            label = item["mask"]
            out.all.update(pred, label, tile=tile)
            if "occluded" in item:
                occ = item["occluded"].bool()
                if out.clear is None:
                    out.clear, out.occluded = make_metrics(cfg), make_metrics(cfg)
                valid = label != ign
                occ_px += int((occ & valid).sum())
                valid_px += int(valid.sum())
                out.clear.update(pred, torch.where(occ, torch.full_like(label, ign), label), tile=tile)
                out.occluded.update(pred, torch.where(occ, label, torch.full_like(label, ign)), tile=tile)
            if hook is not None:
                hook(probs, label, tile)
            out.tiles.append(tile)
            out.n_images += 1
            if progress is not None:
                progress(n + 1, len(idx))
    finally:
        if was_training:
            model.train()
    if valid_px:
        out.occluded_share = occ_px / valid_px
    out.seconds = time.perf_counter() - t0
    return out
