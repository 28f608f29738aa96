"""Resolve ``stage.checkpoint`` (and ``ensemble.members[].checkpoint``) references to checkpoint files.

Supported forms:

* a checkpoint file: absolute, or relative to the project root (or the working directory);
* a run id (a folder under ``workspace/runs/``): its best checkpoint, ``checkpoints/best*.pth``. When there are
  several (``best.pth`` for the raw weights, ``best_ema.pth`` for the EMA weights), the one whose stored ``best``
  score (``train.save_best_by``, mIoU by default) is highest is used, ``best.pth`` on a tie;
* ``<run id>/<file>``: a named file of that run's ``checkpoints/`` (e.g. ``<run id>/last.pth``);
* ``latest:<template>``: the newest run that ended ``succeeded`` and was launched from the template
  ``<template>`` (the config file's stem, e.g. ``latest:demo_segformer_mit-b0_dubai``, or a path under
  ``configs/``), then its best checkpoint as for a run id; ``latest:<template>:<file>`` takes the named file of
  that run's ``checkpoints/`` instead (e.g. ``latest:demo_segformer_mit-b0_dubai:best_ema.pth``).

Files named ``*ema*`` are loaded with the EMA weights, others with the raw weights."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from ..errors import CheckpointError
from ..events import read_events
from ..runids import is_run_id
from ..safeload import load_file
from ..workspace import PROJECT_ROOT, run_dir, runs_dir

LATEST = "latest:"


@dataclass
class ResolvedCheckpoint:
    path: Path
    run_id: Optional[str]          # the run the checkpoint belongs to, when known
    weights: str                   # "ema" | "raw"
    reference: str                 # what the config said

    def to_dict(self) -> dict:
        return {"path": str(self.path), "run_id": self.run_id, "weights": self.weights,
                "reference": self.reference}


def weights_for(path: Path) -> str:
    return "ema" if "ema" in path.stem.lower() else "raw"


def _run_status(folder: Path) -> tuple[Optional[str], float]:
    """The last status of a run and the time it was written (0 when none)."""
    records, _ = read_events(folder / "events.jsonl")
    status, ts = None, 0.0
    for rec in records:
        if rec.get("type") == "status":
            status, ts = rec.get("status"), float(rec.get("ts") or 0.0)
    return status, ts


def _run_template(folder: Path) -> Optional[str]:
    cfg_file = folder / "config.yaml"
    if not cfg_file.exists():
        return None
    try:
        data = yaml.safe_load(cfg_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return None
    return str((data.get("meta") or {}).get("source") or "") or None


def _template_matches(source: str, wanted: str) -> bool:
    src = Path(source)
    want = Path(wanted)
    if want.suffix in (".yaml", ".yml"):
        try:
            return src.resolve() == (PROJECT_ROOT / want).resolve() or src.resolve() == want.resolve() or \
                src.as_posix().endswith(want.as_posix())
        except OSError:
            return False
    return src.stem == want.name


def latest_run(template: str, key: str = "stage.checkpoint") -> str:
    """The newest succeeded run launched from ``template``; CheckpointError naming ``key`` when there is none."""
    root = runs_dir()
    found: list[tuple[float, str]] = []
    if root.exists():
        for folder in root.iterdir():
            if not folder.is_dir():
                continue
            source = _run_template(folder)
            if not source or not _template_matches(source, template):
                continue
            status, ts = _run_status(folder)
            if status == "succeeded":
                found.append((ts, folder.name))
    if not found:
        raise CheckpointError(f"{key}: '{LATEST}{template}' found no succeeded run of template '{template}' under "
                              f"{root}; run that template first (mapsage run ...) or give a run id or a "
                              "checkpoint file")
    return max(found)[1]


def best_score(path: Path, metric: str) -> float:
    """The validation score a best checkpoint was saved for: its ``best`` entry for the weights it holds
    (``best["ema"]`` in ``best_ema.pth``, ``best["raw"]`` in ``best.pth``, as the training engine writes them)."""

    ckpt = load_file(path)
    best = ckpt.get("best") if isinstance(ckpt, dict) else None
    if isinstance(best, dict):
        for k in (weights_for(path), metric, f"val_{metric}"):
            v = best.get(k)
            if isinstance(v, (int, float)):
                return float(v)
    return float("-inf")


def best_checkpoint(folder: Path, key: str = "stage.checkpoint", metric: str = "miou") -> Path:
    ckpt_dir = folder / "checkpoints"
    candidates = sorted(ckpt_dir.glob("best*.pth")) if ckpt_dir.exists() else []
    if not candidates:
        have = sorted(p.name for p in ckpt_dir.glob("*.pth")) if ckpt_dir.exists() else []
        raise CheckpointError(f"{key}: run '{folder.name}' has no checkpoints/best*.pth (found: {have or 'none'}); "
                              f"give '{folder.name}/last.pth' or a checkpoint file instead")
    if len(candidates) == 1:
        return candidates[0]
    scored = [(best_score(p, metric), p.name != "best.pth", p) for p in candidates]
    # highest score; on a tie prefer best.pth (sorts first on the second key)
    scored.sort(key=lambda t: (-t[0], t[1], t[2].name))
    return scored[0][2]


def resolve_checkpoint(reference: Optional[str], key: str = "stage.checkpoint",
                       metric: str = "miou") -> ResolvedCheckpoint:
    """A checkpoint reference (see module doc) -> the file, its run and which weights to load."""
    if not reference or not str(reference).strip():
        raise CheckpointError(f"{key} is empty: set it to a checkpoint file, a run id, or "
                              f"'{LATEST}<template name>' (e.g. {LATEST}demo_segformer_mit-b0_dubai)")
    ref = str(reference).strip()
    if ref.startswith(LATEST):
        template, _, filename = ref[len(LATEST):].strip().partition(":")
        if not template:
            raise CheckpointError(f"{key}: '{ref}' names no template; write e.g. "
                                  f"{LATEST}demo_segformer_mit-b0_dubai")
        rid = latest_run(template, key)
        if filename:
            path = run_dir(rid) / "checkpoints" / filename
            if not path.is_file():
                have = sorted(q.name for q in (run_dir(rid) / "checkpoints").glob("*.pth"))
                raise CheckpointError(f"{key}: run '{rid}' (the latest of {template}) has no checkpoints/{filename} "
                                      f"(found: {have or 'none'})")
        else:
            path = best_checkpoint(run_dir(rid), key, metric)
        return ResolvedCheckpoint(path, rid, weights_for(path), ref)
    p = Path(ref).expanduser()
    for cand in ([p] if p.is_absolute() else [PROJECT_ROOT / p, Path.cwd() / p]):
        if cand.is_file():
            rid = None
            parts = cand.resolve().parts
            if "checkpoints" in parts:
                i = len(parts) - 1 - parts[::-1].index("checkpoints")
                folder = Path(*parts[:i])
                if folder.parent.resolve() == runs_dir().resolve():
                    rid = folder.name
            return ResolvedCheckpoint(cand.resolve(), rid, weights_for(cand), ref)

    if is_run_id(ref) and run_dir(ref).is_dir():
        path = best_checkpoint(run_dir(ref), key, metric)
        return ResolvedCheckpoint(path, ref, weights_for(path), ref)
    head, _, tail = ref.partition("/")
    if tail and is_run_id(head) and run_dir(head).is_dir() and ".." not in Path(tail).parts:
        path = run_dir(head) / "checkpoints" / tail
        if path.is_file():
            return ResolvedCheckpoint(path, head, weights_for(path), ref)
        have = sorted(q.name for q in (run_dir(head) / "checkpoints").glob("*.pth"))
        raise CheckpointError(f"{key}: run '{head}' has no checkpoints/{tail} (found: {have or 'none'})")
    if "/" in ref or "\\" in ref or ref.endswith(SUFFIX_HINTS):
        raise CheckpointError(f"{key}: checkpoint file not found: {p if p.is_absolute() else PROJECT_ROOT / p}; "
                              f"give an existing .pth path, a run id, or '{LATEST}<template name>'")
    raise CheckpointError(f"{key}: '{ref}' is neither a checkpoint file nor a run id under {runs_dir()}; "
                          f"give a .pth path, a run id, or '{LATEST}<template name>'")


SUFFIX_HINTS = (".pth", ".pt", ".ckpt", ".safetensors", ".bin")


def load_checkpoint_model(reference: Optional[str], key: str = "stage.checkpoint", metric: str = "miou"):
    """Resolve and load for inference: ``(model, cfg_of_the_checkpoint, ResolvedCheckpoint)``."""
    resolved = resolve_checkpoint(reference, key, metric)
    from ..models.checkpoint import load_for_inference

    model, ckpt_cfg = load_for_inference(resolved.path, weights=resolved.weights)
    return model, ckpt_cfg, resolved
