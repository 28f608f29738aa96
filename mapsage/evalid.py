"""The identity of an evaluation: what exactly a figure measured.

Every ``metrics`` event carries an ``identity`` mapping (see :mod:`mapsage.events`):

``run``            the run that wrote it
``checkpoint``     the checkpoint file evaluated (absolute path; null for the training run's in-memory weights)
``ckpt_run``       the run the checkpoint belongs to (the run itself during training)
``ckpt_epoch``     the checkpoint's last completed epoch (0-based, as stored in the file)
``ckpt_hash``      the first 16 hex digits of the file's SHA-256 (null for in-memory weights)
``weights``        ``raw`` or ``ema``
``dataset``        the dataset name; ``split`` stays a field of the event
``tile_count``     how many tiles were scored; ``tile_hash``: first 16 hex digits of SHA-256 over the sorted tile ids
``split_size``     how many tiles the split has (``tile_count < split_size``: a subset)
``device``         where it ran (``cpu``, ``cuda:0 (NVIDIA H200)``)
``params``         the evaluated model's parameter count

A stage sets the facts it knows once with :func:`stamp` (kept on its event writer); the metrics-writing code adds
the tile set of each evaluation with :func:`tile_facts`; :class:`mapsage.events.EventWriter` merges both into
every ``metrics`` record it writes. Torch-free.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Optional

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def tile_hash(ids: Iterable[Any]) -> str:
    """First 16 hex digits of SHA-256 over the sorted tile ids (joined by newlines)."""
    text = "\n".join(sorted(str(i) for i in ids))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def tile_facts(ids: Iterable[Any]) -> dict[str, Any]:
    ids = [str(i) for i in ids]
    return {"tile_count": len(ids), "tile_hash": tile_hash(ids)} if ids else {}


def file_hash(path: str | Path) -> Optional[str]:
    """First 16 hex digits of the file's SHA-256 (cached by path, size and mtime); None when unreadable."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _HASH_CACHE[key] = h.hexdigest()[:16]
    return _HASH_CACHE[key]


def checkpoint_facts(path: str | Path, run_id: Optional[str], weights: str, epoch: Optional[int] = None
                     ) -> dict[str, Any]:
    """Identity facts of a checkpoint file (``epoch`` read by the caller from the file when it has it)."""
    return {"checkpoint": str(path), "ckpt_run": run_id, "weights": weights, "ckpt_epoch": epoch,
            "ckpt_hash": file_hash(path)}


def split_size(dataset) -> Optional[int]:
    """How many tiles the dataset's split has (before ``dataset.max_samples``); the dataset's length otherwise."""
    total = getattr(dataset, "split_total", None)
    if total is None:
        inner = getattr(dataset, "dataset", None)      # a torch Subset
        total = getattr(inner, "split_total", None) if inner is not None else None
    try:
        return int(total) if total is not None else len(dataset)
    except TypeError:
        return None


def stamp(events, **facts: Any) -> None:
    """Remember identity facts on an event writer; every later ``metrics`` record it writes carries them."""
    if events is None:
        return
    current = dict(getattr(events, "eval_identity", None) or {})
    current.update({k: v for k, v in facts.items() if v is not None})
    try:
        events.eval_identity = current
    except AttributeError:   # a writer that refuses attributes: nothing to remember
        pass


def merged(events, payload: dict) -> dict:
    """The ``identity`` of a ``metrics`` payload: the writer's stamped facts under the payload's own."""
    base = dict(getattr(events, "eval_identity", None) or {})
    own = payload.get("identity") if isinstance(payload.get("identity"), dict) else {}
    base.update({k: v for k, v in own.items() if v is not None})
    run_dir = getattr(events, "run_dir", None)
    if run_dir is not None and base.get("run") is None:
        base["run"] = Path(run_dir).name
    if base.get("checkpoint") is None:           # the stage's own in-memory weights (training-time validation)
        base.setdefault("ckpt_run", base.get("run"))
        if payload.get("epoch") is not None:
            base["ckpt_epoch"] = payload.get("epoch")
    if base.get("weights") is None:
        variant = str(payload.get("variant") or "")
        if variant in ("raw", "ema"):
            base["weights"] = variant
    return base


def checkpoint_epoch(path: str | Path) -> Optional[int]:
    """The ``epoch`` stored in a workbench checkpoint file (memory-mapped read; None when absent or unreadable)."""
    try:
        import torch

        data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - the identity then says "epoch unknown"; loading itself reports errors
        return None
    epoch = data.get("epoch") if isinstance(data, dict) else None
    return int(epoch) if isinstance(epoch, (int, float)) else None


def stamp_checkpoint(events, resolved) -> None:
    """Stamp a resolved checkpoint (``mapsage.infer.checkpoints.ResolvedCheckpoint``) on an event writer."""
    path = Path(resolved.path)
    stamp(events, **checkpoint_facts(path, resolved.run_id, resolved.weights, checkpoint_epoch(path)))


def model_params(model) -> Optional[int]:
    """The parameter count of a torch module (None for anything else)."""
    try:
        return int(sum(p.numel() for p in model.parameters()))
    except (AttributeError, TypeError):
        return None
