"""Training checkpoints (format pinned in docs/INTERFACES.md): writing them, and the RNG state they carry.
Reading one and building its model for inference is :mod:`mapsage.models.checkpoint` (re-exported here).

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

from ..models.checkpoint import (  # noqa: F401  (reading lives next to the models; re-exported)
    BEST,
    BEST_EMA,
    LAST,
    load_checkpoint,
    load_for_inference,
    resolve_checkpoint,
)

FORMAT = 2     # 2: RNG states as tensors and lists (loads with weights_only=True)


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
        else:   # format-1 files pickled numpy's own tuple (mapsage.safeload reads numpy arrays as data)
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
