"""Predict a folder of images with one or many classifiers and write ``submission.csv``.

Members are found automatically: a run id, a run folder, a repeat/fold group id (``cv.group``: every run of the
group), a folder or a file; inside a run every checkpoint named ``fold{K}_seed{S}_epoch{E}_score{S}.pth`` is a
member. Each member's logits (averaged over TTA views: ``scales`` x optional horizontal flip) are divided by its
own temperature (fitted on its fold's validation images when it was trained) and softmaxed; the fused probability
is the mean over members (folds, seeds and backbones alike). Members must share classes and category ids.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from ..config import config_from_dict
from ..errors import CheckpointError, UserError
from ..safeload import load_file
from ..workspace import workspace_root
from .data import ClsDataset, ClsSample, list_images

CKPT_RE = re.compile(r"^fold(?P<fold>\d+)_seed(?P<seed>-?\d+)_epoch(?P<epoch>\d+)_score(?P<score>[0-9.]+)\.pth$")


@dataclass
class Member:
    path: Path
    fold: Optional[int]
    seed: Optional[int]
    epoch: Optional[int]
    score: Optional[float]


def _runs_root() -> Path:
    return workspace_root() / "runs"


def _from_dir(d: Path) -> list[Member]:
    out = []
    for p in sorted(d.rglob("*.pth")):
        m = CKPT_RE.match(p.name)
        if m:
            out.append(Member(p, int(m["fold"]), int(m["seed"]), int(m["epoch"]), float(m["score"].rstrip("."))))
    return out


def _group_runs(group_id: str) -> list[Path]:
    import yaml

    root = _runs_root()
    out = []
    if not root.is_dir():
        return out
    for cfgp in sorted(root.glob("*/config.yaml")):
        try:
            data = yaml.safe_load(cfgp.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        if ((data.get("cv") or {}).get("group")) == group_id:
            out.append(cfgp.parent)
    return out


def discover(refs: Iterable[str]) -> list[Member]:
    """Members of every reference (see the module doc); an unknown reference is a one-line error."""
    members: list[Member] = []
    for ref in refs:
        p = Path(ref)
        if p.is_file():
            m = CKPT_RE.match(p.name)
            members.append(Member(p, *(int(m["fold"]), int(m["seed"]), int(m["epoch"]), float(m["score"]))
                                  if m else (None, None, None, None)))
            continue
        if p.is_dir():
            found = _from_dir(p)
        elif (_runs_root() / ref).is_dir():
            found = _from_dir(_runs_root() / ref / "checkpoints")
        else:
            found = [m for rd in _group_runs(ref) for m in _from_dir(rd / "checkpoints")]
            if not found and not _group_runs(ref):
                raise UserError(f"{ref}: not a checkpoint file, a folder, a run id or a repeat/fold group id in "
                                f"{_runs_root()}; `mapsage runs list` shows runs, the Runs page shows groups")
        if not found:
            raise CheckpointError(f"{ref}: no checkpoints named fold<K>_seed<S>_epoch<E>_score<S>.pth found (has "
                                  f"the classification run finished?)")
        members += found
    if not members:
        raise UserError("no models to predict with; name run ids, group ids, folders or checkpoint files")
    return members


def load_member(path: Path):
    """(model in eval mode, checkpoint dict) of a classification checkpoint (weights-only load)."""
    from .model import build_classifier

    data = load_file(path, what="classification checkpoint", key="members")
    if not isinstance(data, dict) or data.get("task") != "classification":
        raise CheckpointError(f"{path}: not a classification checkpoint of this workbench (no task: classification)")
    cfg = config_from_dict(dict(data["config"]))
    model = build_classifier(cfg, len(data["classes"]), load_weights=False)
    model.load_state_dict(data["model"])
    model.eval()
    return model, data, cfg


def _views(x, scales: Sequence[float], hflip: bool):
    import torch
    import torch.nn.functional as F

    for s in scales:
        xs = x if abs(s - 1.0) < 1e-6 else F.interpolate(x, scale_factor=float(s), mode="bilinear",
                                                          align_corners=False)
        yield xs
        if hflip:
            yield torch.flip(xs, dims=[3])


def predict_folder(refs: Iterable[str], folder: str | Path, *, scales: Sequence[float] = (1.0,), hflip: bool = False,
                   calibrate: bool = True, batch_size: int = 64, progress=None, device: str = "cpu") -> dict:
    """Fused probabilities for every image of ``folder``: ``{"files", "probs" [N,C], "classes", "category_ids",
    "members": [...]}``."""
    import torch


    folder = Path(folder)
    files = list_images(folder)
    if not files:
        raise UserError(f"{folder}: no images (jpg, png, tif)")
    members = discover(refs)
    samples = [ClsSample(str(p.relative_to(folder)), p, None, str(p.relative_to(folder))) for p in files]
    fused = None
    classes = ids = None
    info = []
    for k, mem in enumerate(members):
        model, data, cfg = load_member(mem.path)
        model.to(device)
        if classes is None:
            classes, ids = list(data["classes"]), list(data["category_ids"])
        elif list(data["classes"]) != classes or list(data["category_ids"]) != ids:
            raise UserError(f"{mem.path}: its classes/category ids {data['classes']}/{data['category_ids']} differ "
                            f"from the first member's {classes}/{ids}; fuse only models of one label set")
        ds = ClsDataset(samples, cfg, False, int(data["img_size"]), data["mean"], data["std"])
        temp = float(data.get("temperature") or 1.0) if calibrate else 1.0
        out = []
        with torch.no_grad():
            for i in range(0, len(ds), batch_size):
                x = torch.stack([ds[j]["image"] for j in range(i, min(len(ds), i + batch_size))]).to(device)
                z = torch.stack([model(v).float() for v in _views(x, scales, hflip)]).mean(0)
                out.append(torch.softmax(z / temp, dim=1).cpu().numpy())
                if progress:
                    progress(k, len(members), min(len(ds), i + batch_size), len(ds))
        p = np.concatenate(out)
        fused = p if fused is None else fused + p
        info.append({"path": str(mem.path), "fold": mem.fold, "seed": mem.seed, "epoch": mem.epoch,
                     "score": mem.score, "temperature": temp, "model": cfg.classify.model})
    return {"files": [s.id for s in samples], "probs": fused / len(members), "classes": classes,
            "category_ids": ids, "members": info}


def write_submission(result: dict, out: str | Path, confidence: bool = True) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    probs, ids = result["probs"], result["category_ids"]
    with open(out, "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["filename", "category_id", "confidence"] if confidence else ["filename", "category_id"])
        for f, p in zip(result["files"], probs):
            k = int(p.argmax())
            wr.writerow([f, ids[k], f"{p[k]:.6f}"] if confidence else [f, ids[k]])
    return out
