"""Predictions for unlabelled inputs and their manifest.

Images (a split's tiles, a folder) go through :func:`mapsage.infer.infer_probs` with the predictor's adopted
settings (whole/slide, TTA), then the adopted post-processing; each writes ``<id>.png`` (class ids),
``<id>_color.png`` (the dataset palette) and, on request, ``<id>_prob.npz`` (``probs`` ``[C,H,W]``: float16, or
uint8 with ``scale`` = 1/255). Rasters go through :mod:`mapsage.deliver.geo` (bounded memory, COG + polygons).

The manifest (``manifest.json`` beside the predictions) lists every input with its SHA-256, the checkpoint's
SHA-256, the config hash and the evaluation identity, so a prediction can be traced to exactly what made it."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..data import load_image
from ..errors import DataError
from ..infer import infer_probs
from ..infer.predictions import PredictionWriter
from .model_source import Predictor, sha256_file
from .sources import Source


def eta_text(done: int, total: int, elapsed: float) -> str:
    if done <= 0 or total <= done:
        return ""
    left = elapsed / done * (total - done)
    return f", ETA {int(left // 60)}m{int(left % 60):02d}s" if left >= 60 else f", ETA {left:.0f}s"


def _normalise(rgb: np.ndarray, mean, std) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((x - m) / s).unsqueeze(0)


def write_probabilities(path: Path, probs: np.ndarray, mode: str) -> None:
    if mode == "uint8":
        q = np.clip(np.rint(probs * 255.0), 0, 255).astype(np.uint8)
        np.savez_compressed(path, probs=q, scale=np.float32(1.0 / 255.0))
    else:
        np.savez_compressed(path, probs=probs.astype(np.float16))


def predict_images(predictor: Predictor, inputs, out_dir: Path, *, device, probabilities: str = "off",
                   color: bool = True, events=None, split: Optional[str] = None,
                   progress: Optional[Callable[..., None]] = None, should_stop: Optional[Callable[[], bool]] = None,
                   show_bar: bool = True, window_batch: Optional[int] = None) -> list[dict]:
    """Predict image inputs; returns one output record per input (paths, size, class histogram)."""
    import copy

    from tqdm import tqdm

    mean, std = predictor.normalization()
    eval_cfg = copy.deepcopy(predictor.eval_cfg)
    if window_batch:
        eval_cfg.window_batch = int(window_batch)
    writer = PredictionWriter(out_dir, "", list(predictor.cfg.dataset.palette), predictor.num_classes,
                              events=events, split=split, save_probabilities=False, save_color=color)
    writer.root = Path(out_dir)
    writer.variant = predictor.variant
    model = predictor.model.to(device).eval()
    records = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(inputs), desc="predict", unit="image", leave=False, disable=not show_bar)
    for i, item in enumerate(inputs):
        if should_stop is not None and should_stop():
            break
        rgb = load_image(item.path)
        probs = infer_probs(model, _normalise(rgb, mean, std), eval_cfg, predictor.num_classes)[0]
        pred = probs.argmax(dim=0).to(torch.uint8).cpu().numpy()
        if predictor.post is not None:
            pred = predictor.post(pred)
        out = writer.write(item.id, pred)
        if events is not None:                 # the input, so that Review can draw the prediction over it
            events.artifact("image", item.path, tile=item.id, variant="input", split=split)
        rec = {"id": item.id, "height": int(pred.shape[0]), "width": int(pred.shape[1]),
               "pred": str(out["pred"]), "class_pixels": np.bincount(pred.ravel(), minlength=predictor.num_classes
                                                                     )[:predictor.num_classes].tolist()}
        if "pred_color" in out:
            rec["color"] = str(out["pred_color"])
        if probabilities != "off":
            ppath = out["pred"].with_name(out["pred"].stem + "_prob.npz")
            write_probabilities(ppath, probs.cpu().numpy(), probabilities)
            rec["prob"] = str(ppath)
            if events is not None:
                events.artifact("prob", ppath, tile=item.id, variant=predictor.variant, split=split)
        records.append(rec)
        bar.update(1)
        if progress is not None:
            n = i + 1
            progress(step=n, steps=len(inputs), frac=n / len(inputs), phase="predict",
                     message=f"{n}/{len(inputs)} images{eta_text(n, len(inputs), time.perf_counter() - t0)}")
    bar.close()
    return records


def build_manifest(predictor: Predictor, source: Source, outputs: list[dict], *, config_hash: str,
                   run_id: Optional[str], wall_s: float, device: str, complete: bool) -> dict:
    inputs = []
    for item in source.inputs:
        st = item.path.stat()
        inputs.append({"id": item.id, "path": str(item.path), "kind": item.kind, "bytes": st.st_size,
                       "sha256": sha256_file(item.path)})
    return {"format": "mapsage-predictions/1", "run_id": run_id, "created_at": time.time(),
            "source": {"kind": source.kind, "name": source.name, "split": source.split,
                       "count": len(source.inputs)},
            "inputs": inputs, "outputs": outputs, "checkpoint": predictor.checkpoint,
            "config_hash": config_hash, "identity": predictor.identity(), "identity_short": predictor.short(),
            "classes": predictor.classes, "palette": list(predictor.cfg.dataset.palette),
            "device": device, "wall_s": wall_s, "complete": complete}


def write_manifest(manifest: dict, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, indent=1, default=str)
    path.write_text(text, encoding="utf-8")
    return sha256_file(path)


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the prediction manifest ({exc}); re-run mapsage predict") from exc
