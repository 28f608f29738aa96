"""Health check ``label_ids``: the ids stored in the masks against the class table, and boundaries that exist.

1. **Off by one.** Masks converted by mmsegmentation with ``reduce_zero_label`` (ISPRS Potsdam/Vaihingen, LoveDA,
   ADE20K) store 0 = ignore and 1..K = the K classes. Read as plain index masks, the ignore value becomes class 0
   and every class shifts by one, and nothing else complains when the class table has room for the ids. The raw
   values are scanned with PIL (no library decoder) and judged:

   * the value K appears while the config reads stored values as ids 0..K-1: fail (K is no class id; with
     ``dataset.reduce_zero_label: true`` the masks read correctly);
   * the value read as class 0 forms thin strips along the borders of other values or frames the image (the shape
     of ignore strips and no-data rims, not of a class): warn, naming the value and the share of its pixels;
   * ``reduce_zero_label`` is on, but the value K never appears while 0 is common and looks like a class: warn
     (0-based masks read as mmseg masks lose class 0 and shift the others down).

2. **Boundary IoU has something to measure.** The decoded labels are scored against themselves with the run's
   metric settings; a class with (almost) no boundary pixels in the label (ISPRS eroded labels: every border is an
   ignore strip) is a warning that names ``eval.boundary_strip_px``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..data import load_mask
from ..data.io import read_index_mask
from ..metrics import SegMetrics
from ..metrics.settings import metric_kwargs
from .context import HealthRun
from .ids import mask_samples
from .result import CheckResult

STRIP_RADIUS = 4          # a strip up to 2 * 4 + 1 px wide counts as a strip
IGNORE_LIKE_SHARE = 0.5   # value 0 is "ignore-like" when at least half its pixels are strips or an image frame
MAX_MASKS = 200           # masks scanned when health.scan_max_masks is not set


@dataclass
class RawIdScan:
    """Raw stored values of a set of index masks, and the shape of the value-0 pixels."""
    counts: dict[int, int] = field(default_factory=dict)
    zero_pixels: int = 0
    zero_strip: int = 0
    zero_frame: int = 0
    files: int = 0

    def add(self, raw: np.ndarray) -> None:
        self.files += 1
        vals, cnt = np.unique(raw, return_counts=True)
        for v, n in zip(vals.tolist(), cnt.tolist()):
            self.counts[int(v)] = self.counts.get(int(v), 0) + int(n)
        zero = raw == 0
        n0 = int(zero.sum())
        if not n0 or int(raw.max()) > 254:
            self.zero_pixels += n0
            return
        self.zero_pixels += n0
        r8 = raw.astype(np.uint8)
        k = np.ones((2 * STRIP_RADIUS + 1, 2 * STRIP_RADIUS + 1), np.uint8)
        mx = cv2.dilate(r8, k)                                           # zeros never raise the max
        mn = cv2.erode(np.where(zero, 255, r8).astype(np.uint8), k)      # zeros (as 255) never lower the min
        strip = zero & (mx > mn) & (mn > 0)                              # two different non-zero values nearby
        n_lab, lab = cv2.connectedComponents(zero.view(np.uint8), connectivity=8)
        edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        edge = edge[edge > 0]
        frame = np.isin(lab, edge) if edge.size else np.zeros_like(zero)
        self.zero_strip += int((strip & ~frame).sum())
        self.zero_frame += int(frame.sum())

    @property
    def zero_ignore_like(self) -> float:
        return (self.zero_strip + self.zero_frame) / self.zero_pixels if self.zero_pixels else 0.0


def judge_ids(scan: RawIdScan, num_classes: int, classes: list[str], reduce_zero_label: bool,
              identity: bool) -> tuple[str, str, dict]:
    """(status, verdict, evidence) of the off-by-one judgement (see the module docs)."""
    K = num_classes
    values = sorted(scan.counts)
    total = sum(scan.counts.values())
    evidence = {"values": values, "pixels_per_value": {str(v): n for v, n in sorted(scan.counts.items())},
                "value0_share": scan.counts.get(0, 0) / total if total else 0.0,
                "value0_ignore_like_share": round(scan.zero_ignore_like, 4),
                "value0_strip_pixels": scan.zero_strip, "value0_frame_pixels": scan.zero_frame,
                "masks_scanned": scan.files, "reduce_zero_label": reduce_zero_label}
    plain = [v for v in values if v != 255]
    shape = (f"{100 * scan.zero_ignore_like:.0f} % of its pixels lie in thin strips between other values or in "
             f"areas framing the image")
    if reduce_zero_label:
        if K not in values and 0 in values and scan.zero_ignore_like < IGNORE_LIKE_SHARE \
                and evidence["value0_share"] > 0.01:
            return ("warn", f"dataset.reduce_zero_label is on, but the masks never hold the value {K} (the last "
                            f"class, '{classes[-1]}') while 0 covers {100 * evidence['value0_share']:.1f} % of the "
                            f"pixels and looks like a class ({shape}): if the masks store 0..{K - 1} as the class "
                            f"ids, set dataset.reduce_zero_label: false", evidence)
        return ("pass", f"mmseg-converted masks read with reduce_zero_label: stored values {_fmt(plain)} -> "
                        f"0 ignored, 1..{K} = classes 0..{K - 1}", evidence)
    if not identity:
        return ("pass", f"stored values {_fmt(plain)} are mapped by dataset.value_map / ignore_values", evidence)
    if K in values and plain and max(plain) == K:
        return ("fail", f"the masks hold the value {K} but the class table has ids 0..{K - 1}: they look "
                        f"converted by mmsegmentation with reduce_zero_label (0 = ignore, 1..{K} = classes; "
                        f"value 0 {'is absent' if 0 not in values else 'is ignore-like: ' + shape}). Read as ids, "
                        f"every class shifts by one and 0 becomes '{classes[0]}'. Fix: set "
                        f"dataset.reduce_zero_label: true", evidence)
    if 0 in values and scan.zero_ignore_like >= IGNORE_LIKE_SHARE and scan.zero_pixels:
        return ("warn", f"the value 0, read as class '{classes[0]}', looks like an ignore value: {shape}. If the "
                        f"masks are mmseg-converted (0 = ignore, 1..K = classes), set dataset.reduce_zero_label: "
                        f"true and list the K real classes; if 0 marks no-data, list it in dataset.ignore_values",
                evidence)
    return ("pass", f"stored values {_fmt(plain)} fit the class ids 0..{K - 1}", evidence)


def _fmt(values: list[int], limit: int = 12) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def _read_raw(path: Path) -> np.ndarray | None:
    try:
        return read_index_mask(path)
    except Exception:          # a colour or unreadable file: the ids check reports it
        return None


def check_label_ids(h: HealthRun) -> CheckResult:
    cfg = h.cfg
    d = cfg.dataset
    samples = mask_samples(h)
    limit = cfg.health.scan_max_masks or MAX_MASKS
    samples = samples[:limit]
    if not samples:
        return CheckResult("label_ids", "warn", "no labelled samples to check", {})
    status, verdict, evidence = "pass", "colour masks: class ids come from dataset.color_map", {}
    if d.type in ("index_mask", "loveda"):
        scan = RawIdScan()
        for i, s in enumerate(samples):
            if h.should_stop():
                break
            raw = _read_raw(Path(s.mask_path))
            if raw is not None:
                scan.add(raw)
            if i % 20 == 0:
                h.progress(f"label_ids: raw values {i + 1}/{len(samples)}")
        status, verdict, evidence = judge_ids(scan, d.num_classes, list(d.classes), bool(d.reduce_zero_label),
                                              identity=not d.value_map and not d.reduce_zero_label)
    elif d.type == "part_mask":
        verdict = "part masks: class ids come from dataset.part_masks.parts"
    if status == "fail":
        return CheckResult("label_ids", status, verdict, evidence)
    # Boundary IoU: label against itself with the run's settings -> boundary pixels per class
    m = SegMetrics(d.num_classes, **metric_kwargs(cfg))
    scored = 0
    for s in samples[: min(len(samples), 48)]:
        try:
            lab = load_mask(s.mask_path, d)
        except Exception:       # undecodable masks are the ids check's business
            continue
        m.update(lab, lab)
        scored += 1
    if scored:
        res = m.result()
        evidence["boundary_pixels"] = {n: int(b) for n, b in zip(res.class_names, res.b_label)}
        evidence["boundary_masks_scored"] = scored
        evidence["boundary_setting"] = res.boundary_setting
        warnings = res.boundary_warnings
        if warnings:
            evidence["boundary_warnings"] = warnings
            names = [w.split("class ", 1)[1].split(" has", 1)[0] for w in warnings]
            strip_hint = ("" if cfg.eval.boundary_strip_px else
                          "; if the labels mark class borders with ignore strips (ISPRS eroded labels), set "
                          "eval.boundary_strip_px to the strip width")
            verdict = (f"{verdict}; Boundary IoU: {len(warnings)} class(es) have almost no boundary pixels in the "
                       f"labels ({', '.join(names)}), so their BIoU says nothing{strip_hint}")
            status = "warn" if status == "pass" else status
    return CheckResult("label_ids", status, verdict, evidence)
