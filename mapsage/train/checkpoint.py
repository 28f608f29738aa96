"""Training checkpoints (format pinned in docs/INTERFACES.md) and loading a trained model for inference.

A checkpoint is a ``torch.save`` dict:

``model`` (state dict of the raw weights), ``ema`` (EMA state dict or None), ``optimizer``, ``scheduler``,
``scaler`` (state dicts or None), ``epoch`` (0-based index of the last completed epoch; -1 when none),
``global_step``, ``best`` (best metrics so far), ``config`` (``to_dict(cfg)``), ``rng`` (python, numpy, torch,
cuda states), and the engine's extras: ``epochs_done`` (= epoch + 1), ``step_in_epoch`` (optimiser steps done
inside the next epoch when the run stopped mid-epoch, else 0), ``ema_updates``, ``loss_schedule``,
``early_stop``, ``val_history``, ``kind`` (last | best | best_ema), ``metrics`` (the epoch's validation summary),
``format`` (version).

Files are written to a temporary name and renamed, so a crash never leaves a half-written ``last.pth``.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError

FORMAT = 1
LAST, BEST, BEST_EMA = "last.pth", "best.pth", "best_ema.pth"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict | None) -> None:
    if not state:
        return
    if "python" in state:
        random.setstate(_to_python_state(state["python"]))
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8).cpu() for s in state["cuda"]])
        except (RuntimeError, IndexError):
            pass


def _to_python_state(s):
    # random.setstate needs tuples; torch.load may give lists back
    if isinstance(s, list):
        return tuple(_to_python_state(x) for x in s)
    return s


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, **state}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; give an existing .pth written by a training run "
                              f"(workspace/runs/<run_id>/checkpoints/last.pth, best.pth or best_ema.pth)")
    try:
        try:
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - numpy RNG state and similar need full unpickling
            ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc}); the file may be "
                              f"truncated. Use another checkpoint of the run (last.pth / best.pth)") from exc
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
    from ..config import config_from_dict
    from ..models import build_model
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
