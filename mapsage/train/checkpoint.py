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

FORMAT = 2     # 2: RNG states as tensors and lists (loads with weights_only=True)
LAST, BEST, BEST_EMA = "last.pth", "best.pth", "best_ema.pth"


def rng_state() -> dict:
    """The RNG states as tensors and plain lists only, so the checkpoint loads with ``weights_only=True``."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [int(version), [int(x) for x in internal], gauss],
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict | None) -> None:
    if not state:
        return
    if "python" in state:
        random.setstate(_to_python_state(state["python"]))
    if "numpy" in state:
        n = state["numpy"]
        if isinstance(n, dict):
            keys = n["keys"].numpy() if isinstance(n["keys"], torch.Tensor) else np.asarray(n["keys"])
            np.random.set_state((n["kind"], keys.astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                                 float(n["cached_gaussian"])))
        else:   # format-1 files (a pickled numpy tuple), loaded from a file the user trusted
            np.random.set_state(n)
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8).cpu() for s in state["cuda"]])
        except (RuntimeError, IndexError):
            pass


def _to_python_state(s):
    # random.setstate needs tuples; the checkpoint keeps lists
    if isinstance(s, list):
        return tuple(_to_python_state(x) for x in s)
    return s


def _state_bytes(obj) -> int:
    """Rough size of a checkpoint dict on disk: its tensors' bytes (the rest is small)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_state_bytes(v) for v in obj)
    return 0


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete half-written ``.<name>.tmp<pid>`` checkpoint files whose writer is no longer running."""
    from .. import diskspace

    return diskspace.remove_stale_temps(folder)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to a temporary name, then rename. On a full disk the temporary file is removed and a
    :class:`~mapsage.errors.DiskFullError` says where and how much space is missing."""
    from .. import diskspace

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    state = {"format": FORMAT, **state}
    need = _state_bytes(state)
    if diskspace.free_mb(path.parent) * 2**20 < need:      # cannot fit: say so before filling the disk
        raise diskspace.disk_full_error(path.parent, need)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        # torch's zip writer words ENOSPC in its own ways ("file write failed", "unexpected pos"): after removing
        # the temporary file, too little free space for the checkpoint is the proof
        if diskspace.is_disk_full(exc) or diskspace.free_mb(path.parent) * 2**20 < need:
            raise diskspace.disk_full_error(path.parent, need) from exc
        raise
    return path


def load_checkpoint(path: str | Path) -> dict:
    from ..safeload import load_file

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
