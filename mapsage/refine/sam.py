"""SAM refinement of a semantic label map.

Every connected component of every class becomes one prompt (:mod:`mapsage.refine.prompts`). SAM answers each
prompt with candidate masks and a predicted IoU score per mask; for each prompt the best-scored candidate that
still agrees with its raw component (IoU >= ``refine.sam.min_mask_iou``) is kept. The kept masks are merged into
one label map: a pixel takes the class of the highest-scored mask that covers it; pixels no kept mask claims keep
the raw label.

Predictors (anything with this module's :class:`MaskPredictor` interface can be plugged in with
:func:`register_predictor`):

* ``segment_anything`` models: any key of ``segment_anything.sam_model_registry`` (``vit_b``, ``vit_l``,
  ``vit_h``, ``default``), built from the local ``refine.sam.checkpoint``;
* ``vit_t`` (MobileSAM) through the ``mobile_sam`` package's registry when it is installed;
* ``efficientsam_ti`` / ``efficientsam_s`` (EfficientSAM): a TorchScript export of the model (the ``.jit`` files
  EfficientSAM publishes) or, with the ``efficient_sam`` package installed, its ``.pt`` state dict.

Nothing is ever downloaded: without ``refine.sam.checkpoint`` the SAM chains raise :class:`SamUnavailable`.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np
import torch

from ..config import resolve_path
from ..errors import CheckpointError, UserError
from .prompts import ComponentPrompt, component_prompts


class SamUnavailable(UserError):
    """The SAM chains cannot run (no checkpoint, unknown model type, missing package)."""


class MaskPredictor(Protocol):
    """What the refinement needs from a promptable segmenter (SAM, MobileSAM, EfficientSAM, ...)."""

    def set_image(self, image: np.ndarray) -> None:
        """Embed one RGB uint8 image [H, W, 3]."""

    def predict_prompts(self, points: np.ndarray, labels: np.ndarray,
                        boxes: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Decode a batch of prompts on the current image.

        ``points`` [B, N, 2] float (x, y) pixels, ``labels`` [B, N] (1 positive, 0 negative, -1 padding),
        ``boxes`` [B, 4] (x0, y0, x1, y1) or None. Returns (masks bool [B, K, H, W] at image size,
        scores float [B, K] predicted mask IoU)."""


# ------------------------------------------------------------------------------------------------------------
# Adapters


class SegmentAnythingPredictor:
    """``segment_anything.SamPredictor`` (or MobileSAM's, same interface) behind :class:`MaskPredictor`."""

    def __init__(self, sam_model, multimask: bool = True):
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(sam_model)
        self.multimask = multimask
        self.shape: tuple[int, int] | None = None

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(np.ascontiguousarray(image[..., :3]), image_format="RGB")
        self.shape = tuple(image.shape[:2])

    @torch.no_grad()
    def predict_prompts(self, points, labels, boxes):
        p = self.predictor
        coords = torch.as_tensor(p.transform.apply_coords(np.asarray(points, np.float32), self.shape),
                                 dtype=torch.float, device=self.device)
        lab = torch.as_tensor(np.asarray(labels), dtype=torch.int, device=self.device)
        box_t = None
        if boxes is not None:
            box_t = torch.as_tensor(p.transform.apply_boxes(np.asarray(boxes, np.float32), self.shape),
                                    dtype=torch.float, device=self.device)
        masks, scores, _ = p.predict_torch(coords, lab, box_t, None, multimask_output=self.multimask)
        return masks.cpu().numpy(), scores.float().cpu().numpy()


class EfficientSamPredictor:
    """An EfficientSAM model (module or TorchScript) behind :class:`MaskPredictor`.

    EfficientSAM exposes ``get_image_embeddings(images [B,3,H,W] in 0..1)`` and ``predict_masks(embeddings,
    points [B,Q,N,2], labels [B,Q,N], multimask_output, input_h, input_w, output_h, output_w)``; a box is two
    points labelled 2 (top-left) and 3 (bottom-right). Its decoder takes at most
    ``decoder_max_num_input_points`` points: the box corners are kept, then negatives are dropped before
    positives."""

    def __init__(self, model, device: torch.device | str = "cpu", max_points: Optional[int] = None):
        self.model = model.to(device).eval()
        self._device = torch.device(device)
        self.max_points = int(max_points or getattr(model, "decoder_max_num_input_points", 6))
        self.embeddings = None
        self.shape: tuple[int, int] | None = None

    @property
    def device(self) -> torch.device:
        return self._device

    @torch.no_grad()
    def set_image(self, image: np.ndarray) -> None:
        t = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1).float().div(255.0)
        self.embeddings = self.model.get_image_embeddings(t[None].to(self._device))
        self.shape = tuple(image.shape[:2])

    def _fit(self, pts: np.ndarray, lab: np.ndarray, box: Optional[np.ndarray]):
        keep_pos = [i for i in range(len(lab)) if lab[i] == 1]
        keep_neg = [i for i in range(len(lab)) if lab[i] == 0]
        budget = self.max_points - (2 if box is not None else 0)
        pos = keep_pos[:max(1, budget)]
        neg = keep_neg[:max(0, budget - len(pos))]
        out_p = [pts[i] for i in pos + neg]
        out_l = [1] * len(pos) + [0] * len(neg)
        if box is not None:
            out_p = [box[:2], box[2:]] + out_p
            out_l = [2, 3] + out_l
        return out_p, out_l

    @torch.no_grad()
    def predict_prompts(self, points, labels, boxes):
        if self.embeddings is None:
            raise RuntimeError("set_image() must be called before predict_prompts()")
        h, w = self.shape
        fitted = [self._fit(np.asarray(points[b]), np.asarray(labels[b]),
                            None if boxes is None else np.asarray(boxes[b])) for b in range(len(points))]
        n = max(len(p) for p, _ in fitted)
        pts = np.full((1, len(fitted), n, 2), -1.0, np.float32)
        lab = np.full((1, len(fitted), n), -1.0, np.float32)
        for q, (p, l) in enumerate(fitted):
            pts[0, q, :len(p)] = np.asarray(p, np.float32)
            lab[0, q, :len(l)] = l
        masks, iou = self.model.predict_masks(
            self.embeddings, torch.from_numpy(pts).to(self._device), torch.from_numpy(lab).to(self._device),
            True, h, w, h, w)
        return (masks[0] >= 0).cpu().numpy(), iou[0].float().cpu().numpy()


# ------------------------------------------------------------------------------------------------------------
# Building predictors from the config


PredictorFactory = Callable[[str, Path, torch.device], MaskPredictor]
_FACTORIES: dict[str, PredictorFactory] = {}


def register_predictor(model_type: str, factory: PredictorFactory) -> None:
    """Plug in another promptable segmenter: ``factory(model_type, checkpoint_path, device) -> MaskPredictor``."""
    _FACTORIES[model_type] = factory


def _segment_anything_factory(model_type: str, checkpoint: Path, device: torch.device) -> MaskPredictor:
    from segment_anything import sam_model_registry

    build = sam_model_registry[model_type]
    model = build(checkpoint=None)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"refine.sam.checkpoint {checkpoint}: not a '{model_type}' SAM checkpoint "
                              f"({str(exc).splitlines()[0]}); set refine.sam.model_type to the model the "
                              f"file holds") from exc
    return SegmentAnythingPredictor(model.to(device).eval())


def _mobile_sam_factory(model_type: str, checkpoint: Path, device: torch.device) -> MaskPredictor:
    try:
        from mobile_sam import sam_model_registry
    except ImportError as exc:
        raise SamUnavailable("refine.sam.model_type 'vit_t' is MobileSAM and needs the mobile_sam package "
                             "installed; or set refine.sam.model_type to vit_b/vit_l/vit_h (segment_anything) "
                             "or efficientsam_ti with a matching refine.sam.checkpoint") from exc
    model = sam_model_registry["vit_t"](checkpoint=str(checkpoint))
    return SegmentAnythingPredictor(model.to(device).eval())


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _efficient_sam_factory(model_type: str, checkpoint: Path, device: torch.device) -> MaskPredictor:
    if _is_torchscript(checkpoint):
        model = torch.jit.load(str(checkpoint), map_location=device)
        return EfficientSamPredictor(model, device)
    try:
        from efficient_sam.efficient_sam import build_efficient_sam
    except ImportError as exc:
        raise SamUnavailable(f"refine.sam.checkpoint {checkpoint} is not a TorchScript EfficientSAM export and "
                             f"the efficient_sam package is not installed: point refine.sam.checkpoint at the "
                             f"TorchScript file (e.g. efficientsam_ti_cpu.jit) or install efficient_sam") from exc
    dims = (384, 6) if model_type.endswith("_s") else (192, 3)   # EfficientSAM-S / -Ti encoders
    model = build_efficient_sam(encoder_patch_embed_dim=dims[0], encoder_num_heads=dims[1], checkpoint=None)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state.get("model", state))
    except RuntimeError as exc:
        raise CheckpointError(f"refine.sam.checkpoint {checkpoint}: not an '{model_type}' EfficientSAM "
                              f"checkpoint ({str(exc).splitlines()[0]}); set refine.sam.model_type to "
                              f"efficientsam_ti or efficientsam_s to match the file") from exc
    return EfficientSamPredictor(model, device)


for _key in ("default", "vit_h", "vit_l", "vit_b"):
    register_predictor(_key, _segment_anything_factory)
register_predictor("vit_t", _mobile_sam_factory)
for _key in ("efficientsam", "efficientsam_ti", "efficientsam_s"):
    register_predictor(_key, _efficient_sam_factory)


def known_model_types() -> list[str]:
    return sorted(_FACTORIES)


def sam_unavailable_reason(sam_cfg) -> Optional[str]:
    """Why the SAM chains cannot run with this ``refine.sam`` config, or None when they can be tried."""
    if sam_cfg.model_type not in _FACTORIES:
        return (f"refine.sam.model_type '{sam_cfg.model_type}' is not a known SAM model; known: "
                f"{', '.join(known_model_types())}")
    if not sam_cfg.checkpoint:
        return ("SAM chains need a local SAM checkpoint: set refine.sam.checkpoint to the weights file of the "
                f"'{sam_cfg.model_type}' model (refine.sam.model_type); nothing is downloaded. CRF still runs.")

    path = resolve_path(sam_cfg.checkpoint)
    if not path.is_file():
        return f"refine.sam.checkpoint {path}: file not found; set refine.sam.checkpoint to a local weights file"
    return None


def build_predictor(sam_cfg, device: torch.device | str = "cpu") -> MaskPredictor:
    """The predictor named by ``refine.sam.model_type`` with the weights of ``refine.sam.checkpoint``."""
    reason = sam_unavailable_reason(sam_cfg)
    if reason:
        raise SamUnavailable(reason)

    return _FACTORIES[sam_cfg.model_type](sam_cfg.model_type, resolve_path(sam_cfg.checkpoint),
                                          torch.device(device))


# ------------------------------------------------------------------------------------------------------------
# Refinement


@dataclass
class SamReport:
    """What SAM did on one tile."""

    prompts: int = 0
    accepted: int = 0
    rejected: int = 0                                   # best candidate disagreed with its raw component
    changed_pixels: int = 0
    per_class_prompts: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"prompts": self.prompts, "accepted": self.accepted, "rejected": self.rejected,
                "changed_pixels": self.changed_pixels,
                "per_class_prompts": {str(k): v for k, v in sorted(self.per_class_prompts.items())}}


def _pack(prompts: list[ComponentPrompt]):
    n = max(len(p.positive) + len(p.negative) for p in prompts)
    pts = np.zeros((len(prompts), n, 2), np.float32)
    lab = np.full((len(prompts), n), -1, np.int64)
    for i, p in enumerate(prompts):
        k = len(p.positive) + len(p.negative)
        pts[i, :k] = p.points
        lab[i, :k] = p.labels
    boxes = None
    if all(p.box is not None for p in prompts):
        boxes = np.stack([p.box for p in prompts]).astype(np.float32)
    return pts, lab, boxes


def _mask_iou(pred: np.ndarray, prompt: ComponentPrompt) -> float:
    y0, y1, x0, x1 = prompt.window
    inter = int(np.count_nonzero(pred[y0:y1, x0:x1] & prompt.mask))
    union = int(np.count_nonzero(pred)) + prompt.area - inter
    return inter / union if union else 0.0


class MaskMerger:
    """Merge refined per-class masks into one label map, one mask at a time (no mask list kept in memory).

    A pixel takes the class of the highest-scored mask covering it; pixels no mask covers keep the raw label."""

    def __init__(self, raw: np.ndarray):
        self.raw = np.asarray(raw)
        self.out = np.array(self.raw, copy=True)
        self.best = np.full(self.raw.shape, -np.inf, np.float32)

    def add(self, class_id: int, score: float, mask: np.ndarray) -> None:
        win = mask & (score > self.best)
        self.out[win] = class_id
        self.best[win] = score

    @property
    def claimed(self) -> np.ndarray:
        return np.isfinite(self.best)


def merge_masks(raw: np.ndarray, masks) -> np.ndarray:
    """``masks``: iterable of (class id, score, bool mask [H, W]); see :class:`MaskMerger`."""
    merger = MaskMerger(raw)
    for cls, score, mask in masks:
        merger.add(cls, score, mask)
    return merger.out


def sam_refine(image: np.ndarray, label_map: np.ndarray, predictor: MaskPredictor, sam_cfg, num_classes: int,
               ignore_index: int = 255, image_is_set: bool = False) -> tuple[np.ndarray, SamReport]:
    """Refine a label map with SAM: prompt → predict → choose → merge. Returns (label map, report)."""
    label_map = np.asarray(label_map)
    h, w = label_map.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"image {image.shape[:2]} and label map {(h, w)} differ in size")
    prompts = component_prompts(label_map, num_classes, sam_cfg, ignore_index=ignore_index)
    report = SamReport(prompts=len(prompts))
    for p in prompts:
        report.per_class_prompts[p.class_id] = report.per_class_prompts.get(p.class_id, 0) + 1
    if not prompts:
        return label_map.copy(), report
    if not image_is_set:
        predictor.set_image(image)
    # decode in chunks small enough that the [B, 3, H, W] float masks SAM upsamples stay within ~400 MB
    per_prompt_bytes = 3 * h * w * 4
    chunk = max(1, min(int(sam_cfg.prompt_batch), int(4e8 // per_prompt_bytes)))
    merger = MaskMerger(label_map)
    for start in range(0, len(prompts), chunk):
        batch = prompts[start:start + chunk]
        pts, lab, boxes = _pack(batch)
        masks, scores = predictor.predict_prompts(pts, lab, boxes)
        for i, prompt in enumerate(batch):
            chosen = None
            for k in np.argsort(-scores[i]):
                cand = masks[i, k]
                if cand.any() and _mask_iou(cand, prompt) >= sam_cfg.min_mask_iou:
                    chosen = k
                    break
            if chosen is None:
                report.rejected += 1
            else:
                report.accepted += 1
                merger.add(prompt.class_id, float(scores[i, chosen]), masks[i, chosen])
        del masks
    out = merger.out
    report.changed_pixels = int(np.count_nonzero(out != label_map))
    return out, report
