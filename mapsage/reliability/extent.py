"""Extent invariance: does the prediction of a place depend on how the image was cut into windows?

The same tile is predicted twice: (A) with the evaluation's own settings (``eval.mode`` / ``tile`` / ``stride``)
and (B) with windows ``extent_window_scale`` times as large (a multiple of 32; for a whole-image evaluation, the
``eval.tile`` window) laid on a grid shifted by half a window (the image is mirror-padded at the top and left by
the offset, predicted, and the padding cut off again). Both single view, no TTA.

Reported: the share of valid pixels whose class differs between A and B (the disagreement rate), and where the
disagreements lie. Each pixel falls in one zone: ``border`` (within ``extent_zone_px`` of the image border),
``seam`` (within ``extent_zone_px`` of a window edge of A or B inside the image) or ``interior``. Per zone: its
share of the pixels, its disagreement rate and its share of all disagreements. Disagreements that concentrate on
seams mean the windows' context decides the class; on borders, that the padding does.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..infer.core import infer_probs, slide_windows
from ..infer.evaluate import pick_indices
from .scoring import single_view

ZONES = ("border", "seam", "interior")


def _window_b(eval_cfg, scale: float) -> tuple[int, int]:
    base = list(eval_cfg.tile) if eval_cfg.mode == "slide" else list(eval_cfg.tile)
    if eval_cfg.mode == "slide":
        base = [max(32, int(round(v * scale / 32.0)) * 32) for v in base]
    return int(base[0]), int(base[1])


def _edges(h: int, w: int, tile, stride, oy: int = 0, ox: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bool rows / columns of the image that are window edges inside the image, for windows laid over the image
    padded by (oy, ox) at the top/left."""
    rows = np.zeros(h, bool)
    cols = np.zeros(w, bool)
    for (y1, y2, x1, x2) in slide_windows(h + oy, w + ox, tile, stride):
        for y in (y1 - oy, y2 - oy):
            if 0 < y < h:
                rows[y] = True
        for x in (x1 - ox, x2 - ox):
            if 0 < x < w:
                cols[x] = True
    return rows, cols


def _near(flags: np.ndarray, d: int) -> np.ndarray:
    idx = np.flatnonzero(flags)
    out = np.zeros(flags.shape, bool)
    for i in idx:
        out[max(0, i - d):i + d] = True
    return out


def zones(h: int, w: int, seam_rows: np.ndarray, seam_cols: np.ndarray, d: int) -> np.ndarray:
    """uint8 ``[H,W]`` zone map: 0 border, 1 seam, 2 interior."""
    z = np.full((h, w), 2, np.uint8)
    near_r, near_c = _near(seam_rows, d), _near(seam_cols, d)
    z[near_r, :] = 1
    z[:, near_c] = 1
    z[:d, :] = 0
    z[-d:, :] = 0
    z[:, :d] = 0
    z[:, -d:] = 0
    return z


def predict_shifted(model, image: torch.Tensor, eval_cfg, num_classes: int, oy: int, ox: int) -> torch.Tensor:
    """Argmax ``[H,W]`` of ``image [3,H,W]`` predicted on a window grid shifted by (oy, ox) (mirror padding)."""
    x = image.unsqueeze(0)
    h, w = x.shape[-2:]
    if oy or ox:
        if oy >= h or ox >= w:          # reflect padding needs pad < size
            oy, ox = min(oy, h - 1), min(ox, w - 1)
        x = F.pad(x, (ox, 0, oy, 0), mode="reflect")
    probs = infer_probs(model, x, eval_cfg, num_classes)[0]
    return probs[:, oy:, ox:].argmax(0).cpu()


def extent_invariance(model, dataset, cfg, device, *, max_tiles: Optional[int] = 6, scale: float = 0.75,
                      zone_px: int = 16, progress: Optional[Callable[[int, int], None]] = None,
                      should_stop: Optional[Callable[[], bool]] = None) -> dict[str, Any]:
    C, ign = cfg.dataset.num_classes, cfg.dataset.ignore_index
    a_cfg = single_view(cfg.eval)
    b_cfg = copy.deepcopy(a_cfg)
    tb = _window_b(a_cfg, scale)
    b_cfg.mode, b_cfg.tile = "slide", list(tb)
    b_cfg.stride = [max(1, int(round(t * (s / a))) if a_cfg.mode == "slide" else t)
                    for t, s, a in zip(tb, a_cfg.stride, a_cfg.tile)]
    off = (tb[0] // 2, tb[1] // 2)
    counts = {z: [0, 0] for z in ZONES}      # zone -> [pixels, disagreements]
    per_tile = []
    idx = pick_indices(len(dataset), max_tiles)
    model.eval()
    for n, i in enumerate(idx):
        if should_stop is not None and should_stop():
            break
        item = dataset[i]
        img = item["image"].to(device)
        h, w = img.shape[-2:]
        pa = predict_shifted(model, img, a_cfg, C, 0, 0).numpy()
        pb = predict_shifted(model, img, b_cfg, C, *off).numpy()
        valid = item["mask"].numpy() != ign if "mask" in item else np.ones((h, w), bool)
        ra, ca = _edges(h, w, a_cfg.tile, a_cfg.stride) if a_cfg.mode == "slide" else (np.zeros(h, bool),
                                                                                       np.zeros(w, bool))
        rb, cb = _edges(h, w, b_cfg.tile, b_cfg.stride, *off)
        zmap = zones(h, w, ra | rb, ca | cb, int(zone_px))
        diff = (pa != pb) & valid
        for k, z in enumerate(ZONES):
            sel = (zmap == k) & valid
            counts[z][0] += int(sel.sum())
            counts[z][1] += int((diff & sel).sum())
        per_tile.append({"tile": str(item.get("id", i)), "pixels": int(valid.sum()), "disagree": int(diff.sum())})
        if progress is not None:
            progress(n + 1, len(idx))
    total = sum(c[0] for c in counts.values())
    dis = sum(c[1] for c in counts.values())
    zone_rows = [{"zone": z, "pixel_share": counts[z][0] / total if total else None,
                  "rate": counts[z][1] / counts[z][0] if counts[z][0] else None,
                  "disagreement_share": counts[z][1] / dis if dis else None,
                  "pixels": counts[z][0], "disagree": counts[z][1]} for z in ZONES]
    seam = next(r for r in zone_rows if r["zone"] == "seam")
    interior = next(r for r in zone_rows if r["zone"] == "interior")
    conc = None
    if seam["rate"] is not None and interior["rate"]:
        conc = seam["rate"] / interior["rate"]
    return {
        "rate": dis / total if total else None, "pixels": total, "disagree": dis, "zones": zone_rows,
        "seam_vs_interior": conc, "n_tiles": len(per_tile), "tiles": per_tile, "zone_px": int(zone_px),
        "a": {"mode": a_cfg.mode, "tile": list(a_cfg.tile), "stride": list(a_cfg.stride), "offset": [0, 0]},
        "b": {"mode": "slide", "tile": list(b_cfg.tile), "stride": list(b_cfg.stride), "offset": list(off)},
    }
