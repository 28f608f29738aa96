"""Warm start of a whole segmentation model (encoder and decoder) from a finished run (``model.init_from``).

``model.init_from`` is a run id (its folder under the workspace), a run folder, or a checkpoint file. From a run,
``model.init_weights`` picks the file: ``auto`` → ``best_ema.pth`` (EMA weights), else ``best.pth`` / ``last.pth``
(raw); ``ema`` → ``best_ema.pth``; ``raw`` → ``best.pth``, else ``last.pth``. A file may also be a bare state dict.

Files are read with ``torch.load(weights_only=True)`` only: a checkpoint from elsewhere is data, never code. A file
that needs full unpickling (e.g. a ``last.pth`` carrying numpy RNG state) is refused with a message naming a file
that loads.

Every tensor whose name and shape match is copied; the report names what matched, what the model kept from its own
initialisation (``missing``: e.g. a head for a different class count, ``mismatched`` shapes) and what the file had
that the model has not (``unexpected``). Nothing matching at all is an error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..config import resolve_path
from ..errors import CheckpointError
from ..safeload import load_file
from ..workspace import run_dir


def resolve_source(spec: str, weights: str = "auto") -> Path:
    """The checkpoint file ``model.init_from`` names (see the module doc)."""
    p = Path(str(spec)).expanduser()
    if not p.exists():
        rp = Path(resolve_path(str(spec)))
        if rp.exists():
            p = rp
        else:
            rd = run_dir(str(spec))
            if not Path(rd).is_dir():
                raise CheckpointError(f"model.init_from: '{spec}' is neither a checkpoint file, a run folder nor a "
                                      f"run id in the workspace; give a .pth file or the id of a finished run")
            p = Path(rd)
    if p.is_file():
        return p
    folder = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    order = {"auto": ["best_ema.pth", "best.pth", "last.pth"], "ema": ["best_ema.pth"],
             "raw": ["best.pth", "last.pth"]}[weights]
    for name in order:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"model.init_from: no checkpoint in {folder} (looked for {', '.join(order)}, "
                          f"model.init_weights={weights})")


def safe_load(path: Path) -> Any:
    """The file's content, read by :func:`mapsage.safeload.load_file` (weights only, safetensors accepted)."""
    return load_file(path, what="weights", key="model.init_from")


def pick_state(obj: Any, path: Path, weights: str) -> tuple[dict, str]:
    """(state dict, which weights) from a loaded file."""
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        has_ema = isinstance(obj.get("ema"), dict)
        if weights == "ema" and not has_ema:
            raise CheckpointError(f"model.init_from: {path} holds no EMA weights; set model.init_weights: raw")
        use_ema = has_ema and (weights == "ema" or (weights == "auto" and (obj.get("kind") == "best_ema"
                                                                           or path.name == "best_ema.pth")))
        return (obj["ema"], "ema") if use_ema else (obj["model"], "raw")
    if isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        return obj, "state dict"
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return obj["state_dict"], "state dict"
    raise CheckpointError(f"model.init_from: {path} holds no model weights (no 'model' entry and not a state dict)")


def _align_names(state: dict, own: dict) -> dict:
    """Accept state dicts saved from the bare smp network or from DDP (``module.``) as well."""
    def strip(k: str) -> str:
        return k[len("module."):] if k.startswith("module.") else k
    state = {strip(k): v for k, v in state.items()}
    if sum(k in own for k in state) < sum(f"net.{k}" in own for k in state):
        state = {f"net.{k}": v for k, v in state.items()}
    return state


def warm_start(model: nn.Module, spec: str, weights: str = "auto") -> dict:
    """Load the matching tensors of ``spec`` into ``model``; returns the report (see :func:`describe`)."""
    path = resolve_source(spec, weights)
    state, used = pick_state(safe_load(path), path, weights)
    own = model.state_dict()
    state = _align_names(state, own)
    load, mismatched = {}, []
    for k, v in state.items():
        if k in own:
            if tuple(own[k].shape) == tuple(v.shape):
                load[k] = v
            else:
                mismatched.append(f"{k} {list(v.shape)}→{list(own[k].shape)}")
    if not load:
        raise CheckpointError(f"model.init_from: no tensor of {path} fits this model ({len(state)} in the file, "
                              f"{len(own)} in the model); is it a segmentation checkpoint of the same architecture?")
    model.load_state_dict(load, strict=False)
    missing = [k for k in own if k not in load]
    unexpected = [k for k in state if k not in own]
    own_params = {k for k, _ in model.named_parameters()}
    n_par = sum(own[k].numel() for k in own if k in own_params)
    n_loaded = sum(own[k].numel() for k in load if k in own_params)
    return {"path": str(path), "weights": used, "loaded": len(load), "total": len(own),
            "param_share": n_loaded / max(1, n_par), "missing": missing, "unexpected": unexpected,
            "mismatched": mismatched}


def describe(r: dict) -> str:
    text = (f"warm start from {r['path']} ({r['weights']} weights): {r['loaded']}/{r['total']} tensors loaded, "
            f"{r['param_share']:.1%} of the parameters")
    if r["mismatched"]:
        text += f"; shape-mismatched (kept own init): {', '.join(r['mismatched'][:6])}"
    extra = [k for k in r["missing"] if k not in {m.split(' ')[0] for m in r["mismatched"]}]
    if extra:
        text += f"; not in the file: {', '.join(extra[:6])}" + (f" (+{len(extra) - 6})" if len(extra) > 6 else "")
    if r["unexpected"]:
        text += f"; unused from the file: {', '.join(r['unexpected'][:6])}" + (
            f" (+{len(r['unexpected']) - 6})" if len(r["unexpected"]) > 6 else "")
    return text
