"""Reading a training checkpoint and building the model it describes, for inference.

The checkpoint format is written by :mod:`mapsage.train.checkpoint` (pinned in docs/INTERFACES.md); reading it
sits next to the models so inference, health checks, delivery and distillation load trained models without
importing the training engine. Files are loaded with ``weights_only=True`` (:mod:`mapsage.safeload`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import config_from_dict
from ..errors import CheckpointError
from ..safeload import load_file
from .factory import build_model

LAST, BEST, BEST_EMA = "last.pth", "best.pth", "best_ema.pth"


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; give an existing .pth written by a training run "
                              f"(workspace/runs/<run_id>/checkpoints/last.pth, best.pth or best_ema.pth)")
    try:
        ckpt = load_file(path)
    except CheckpointError as exc:
        if "refused to load" in str(exc):
            raise
        raise CheckpointError(f"{exc}. Use another checkpoint of the run (`mapsage runs resume RUN --checkpoint "
                              f"FILE` with best.pth, or a mid-epoch last.pth)") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a workbench training checkpoint (no 'model' entry). For external "
                              f"weights use model.pretrained instead")
    return ckpt


def resolve_checkpoint(path: str | Path, weights: str = "ema") -> Path:
    """A checkpoint file, or a run folder (-> its checkpoints/best_ema.pth or best.pth, else last.pth)."""
    p = Path(path)
    if p.is_dir():
        folder = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        order = [BEST_EMA, BEST, LAST] if weights in ("ema", "auto") else [BEST, LAST]
        for name in order:
            if (folder / name).is_file():
                return folder / name
        raise CheckpointError(f"{p}: no checkpoint found (looked for {', '.join(order)} in {folder})")
    return p


def load_for_inference(path: str | Path, weights: str = "ema", device: str | torch.device = "cpu"):
    """Build the model of a training checkpoint and load its weights -> ``(model, cfg)`` in eval mode.

    ``weights``: ``"ema"`` (the EMA weights; CheckpointError if the run kept none), ``"raw"``, or ``"auto"`` (EMA
    when present). ``path`` may be a run folder. ``model.weights_variant`` tells which weights were loaded."""
    if weights not in ("ema", "raw", "auto"):
        raise CheckpointError(f"weights must be 'ema', 'raw' or 'auto', got {weights!r}")
    path = resolve_checkpoint(path, weights)
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(f"{path}: the checkpoint carries no config; it was not written by the workbench")
    cfg = config_from_dict(ckpt["config"])
    use = weights
    if weights == "auto":
        use = "ema" if ckpt.get("ema") is not None else "raw"
    if use == "ema" and ckpt.get("ema") is None:
        raise CheckpointError(f"{path}: this run kept no EMA weights (train.ema.enabled was false); load the raw "
                              f"weights instead (weights='raw')")
    state = ckpt["ema"] if use == "ema" else ckpt["model"]
    model = build_model(cfg, load_pretrained=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model its config describes "
                              f"({cfg.model.arch}/{cfg.model.encoder}): {str(exc)[:300]}") from exc
    model.weights_variant = use
    model.checkpoint_path = str(path)
    model.checkpoint_epoch = ckpt.get("epoch")
    model.to(device).eval()
    return model, cfg
