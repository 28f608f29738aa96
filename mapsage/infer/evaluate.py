"""Evaluate a model on a dataset split: the one code path of training-time validation and final evaluation.

``evaluate`` iterates full tiles of a :mod:`mapsage.data` dataset (``train=False``), runs :func:`infer_probs`
(whole or sliding window and TTA exactly as ``cfg.eval`` says), takes the argmax, optionally post-processes it,
feeds :class:`mapsage.metrics.SegMetrics` (tagged with the sample's domain, keyed by tile id), optionally writes
prediction PNGs, and writes ``metrics`` events (``domain="all"`` and one per domain) and a ``tiles`` event.

Speed is measured on the inference alone (host-to-device copy, forward passes, argmax; CUDA synchronised), after
``warmup`` tiles, and reported as images/s and Mpixel/s with the device name (:class:`EvalOutcome`)."""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from ..errors import DataError, UserError
from ..evalid import tile_facts
from ..metrics import SegMetrics
from ..metrics.settings import metric_kwargs
from .core import infer_probs
from .predictions import PredictionWriter


def device_name(device: torch.device | str) -> str:
    """A human name for the device: the GPU's name, or the CPU model with its thread count."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {cpu or platform.machine()} ({torch.get_num_threads()} threads)"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` (or None): CUDA when available, else CPU. ``cuda`` without a GPU is a user error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("runtime.device is 'cuda' but no CUDA device is available; set runtime.device: auto or cpu")
    return device


@dataclass
class EvalOutcome:
    """What one evaluation measured: the metrics plus speed and timing."""
    result: Any                          # mapsage.metrics.MetricResult
    metrics: Any                         # the SegMetrics accumulator (tile rows, by-tag breakdown)
    split: str
    variant: str
    n_images: int
    wall_s: float                        # whole evaluation, data loading and metrics included
    infer_s: float                       # inference time of the timed (post-warm-up) tiles
    timed_images: int
    timed_mpixels: float
    device: str
    domains: dict[str, Any] = field(default_factory=dict)   # domain -> MetricResult
    predictions: list[str] = field(default_factory=list)
    complete: bool = True                # False when should_stop() ended it early (no events were written)
    tile_seconds: list[float] = field(default_factory=list)   # one warm timing per timed tile (repeats)

    @property
    def images_per_s(self) -> float:
        return self.timed_images / self.infer_s if self.infer_s > 0 else float("nan")

    @property
    def mpix_per_s(self) -> float:
        return self.timed_mpixels / self.infer_s if self.infer_s > 0 else float("nan")

    def throughput(self) -> Optional[dict]:
        """images/s over the warm, repeated per-tile timings: median, IQR, min–max, n, device, threads."""
        from .throughput import spread

        return spread(self.tile_seconds, device=self.device)

    def speed(self) -> dict:
        return {"images_per_s": self.images_per_s, "mpix_per_s": self.mpix_per_s, "device": self.device,
                "timed_images": self.timed_images, "infer_s": self.infer_s, "wall_s": self.wall_s}


def _first(batch):
    return batch[0]


def pick_indices(n: int, max_tiles: Optional[int]) -> list[int]:
    """All indices, or ``max_tiles`` of them spread evenly over the split (deterministic)."""
    if max_tiles is None or max_tiles >= n:
        return list(range(n))
    if max_tiles <= 0:
        raise UserError(f"eval.max_tiles must be positive, got {max_tiles}")
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, max_tiles)})


def make_metrics(cfg, keep_tiles: bool = True):
    return SegMetrics(cfg.dataset.num_classes, keep_tiles=keep_tiles, **metric_kwargs(cfg))


def domain_results(metrics) -> dict[str, Any]:
    """Per-domain MetricResults from the same accumulation (empty when no sample had a domain)."""
    try:
        out = metrics.by_tag("domain")
    except TypeError:
        out = metrics.by_tag()
    return dict(out or {})


def emit_metrics(events, outcome: "EvalOutcome", epoch: Optional[int]) -> None:
    """``metrics`` events (overall and per domain) and the ``tiles`` event of one evaluation."""
    if events is None:
        return

    rows = outcome.metrics.tile_rows() if getattr(outcome.metrics, "keep_tiles", True) else []
    payload = outcome.result.to_event(outcome.split, "all", outcome.variant, epoch)
    # speed of this evaluation beside its numbers (the experiment table's FPS column)
    payload.update(images_per_s=outcome.images_per_s, mpix_per_s=outcome.mpix_per_s, device=outcome.device,
                   throughput=outcome.throughput(),
                   identity={"device": outcome.device, **tile_facts(r["tile"] for r in rows)})
    events.emit("metrics", **payload)
    for warning in outcome.result.boundary_warnings:     # also in the payload; a log line makes it seen
        events.log(f"{outcome.split}/{outcome.variant}: {warning}", level="warning")
    for domain, res in sorted(outcome.domains.items()):
        events.emit("metrics", **res.to_event(outcome.split, domain, outcome.variant, epoch), identity={
            "device": outcome.device, **tile_facts(r["tile"] for r in rows if r.get("domain") == domain)})
    if rows:
        events.emit("tiles", split=outcome.split, variant=outcome.variant, epoch=epoch, rows=rows)


PostFn = Optional[Callable[[np.ndarray], np.ndarray]]


def evaluate_variants(model: nn.Module, dataset, cfg, *, split: str, variants: dict[str, PostFn], device,
                      events=None, epoch: Optional[int] = None, save_dir: str | Path | None = None,
                      max_tiles: Optional[int] = None, eval_cfg=None, save_probabilities: Optional[bool] = None,
                      progress: Optional[Callable[..., None]] = None, num_workers: Optional[int] = None,
                      warmup: int = 1, show_bar: bool = True, min_timings: int = 0,
                      should_stop: Optional[Callable[[], bool]] = None,
                      on_probs: Optional[Callable[[torch.Tensor, dict], None]] = None) -> dict[str, EvalOutcome]:
    """One inference pass scored as several variants that differ only in post-processing.

    ``variants`` maps a variant name to a function id-mask ``[H,W]`` -> id-mask (or None for the raw argmax).
    Each variant has its own metrics, events and prediction files; the inference time is shared and each
    variant's post-processing time is added to its own. ``eval_cfg`` replaces ``cfg.eval`` (the TTA A/B stage
    passes variants); ``progress(step=, steps=, frac=, phase=, message=)`` is called per tile (a stage passes
    ``ctx.progress``); ``should_stop()`` is checked between tiles: a cancelled evaluation stops early, returns
    outcomes with ``complete=False`` and writes no ``metrics`` / ``tiles`` events. ``min_timings``: at least this
    many warm timings behind images/s (a stage that reports speed asks for them): a split with fewer timed tiles
    times its last tile again until there are, so the throughput comes with a spread. ``on_probs(probs [1,C,H,W],
    sample)`` sees each tile's probabilities (the training engine's validation loss)."""
    from tqdm import tqdm

    if not variants:
        raise ValueError("evaluate_variants needs at least one variant")
    eval_cfg = eval_cfg or cfg.eval
    num_classes = cfg.dataset.num_classes
    device = resolve_device(device)
    indices = pick_indices(len(dataset), max_tiles)
    subset = torch.utils.data.Subset(dataset, indices) if len(indices) != len(dataset) else dataset
    if num_workers is None:
        num_workers = min(int(getattr(cfg.train, "num_workers", 0) or 0), 2)
    loader = torch.utils.data.DataLoader(subset, batch_size=1, shuffle=False, num_workers=num_workers,
                                         collate_fn=_first, pin_memory=False)
    if save_probabilities is None:
        save_probabilities = bool(getattr(eval_cfg, "save_probabilities", False))
    names = list(variants)
    writers = {name: PredictionWriter(save_dir, name, list(cfg.dataset.palette), num_classes, events=events,
                                      split=split, save_probabilities=save_probabilities)
               for name in names} if save_dir is not None else {}
    metrics = {name: make_metrics(cfg) for name in names}
    post_s = {name: 0.0 for name in names}
    # the raw argmax stays on the device (no host copy per tile) unless something needs it on the host
    need_host = bool(writers) or any(fn is not None for fn in variants.values())
    was_training = model.training
    model.to(device)
    model.eval()
    infer_s = 0.0
    timed = 0
    timed_mpix = 0.0
    n = 0
    stopped = False          # should_stop() ended the loop (a partial, possibly empty, evaluation)
    dt, hw = 0.0, 0
    tile_s: list[float] = []
    post_tile: dict[str, list[float]] = {name: [] for name in names}
    t_start = time.perf_counter()
    label_desc = names[0] if len(names) == 1 else "+".join(names)
    bar = tqdm(total=len(indices), desc=f"eval {split} {label_desc}", unit="tile", leave=False,
               disable=not show_bar)
    try:
        for sample in loader:
            if should_stop is not None and should_stop():
                stopped = True
                break
            tile_id = str(sample.get("id", n))
            if "mask" not in sample or sample["mask"] is None:
                raise DataError(f"{sample.get('path', tile_id)}: split '{split}' has no masks, so it "
                                "cannot be scored; evaluate a split with labels (eval.split) or use "
                                "mapsage.infer.predict_dataset to write predictions only")
            image = sample["image"]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            probs = infer_probs(model, image.unsqueeze(0), eval_cfg, num_classes)
            pred_t = probs.argmax(dim=1)[0]
            if need_host:
                pred_t = pred_t.to(torch.uint8).cpu() if num_classes <= 255 else pred_t.cpu()
            elif device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            hw = pred_t.shape[-2] * pred_t.shape[-1]
            if n >= warmup:
                infer_s += dt
                tile_s.append(dt)
                timed += 1
                timed_mpix += hw / 1e6
            if on_probs is not None:                   # outside the timed inference
                on_probs(probs, sample)
            label = sample["mask"]
            if tuple(label.shape) != tuple(pred_t.shape):
                raise DataError(f"{sample.get('path', tile_id)}: mask {tuple(label.shape)} and prediction "
                                f"{tuple(pred_t.shape)} differ in size")
            domain = sample.get("domain")
            tags = {"domain": str(domain)} if domain else None
            raw_np = pred_t.numpy() if need_host else None
            prob_np = probs[0].cpu().numpy() if writers and save_probabilities else None
            for name, fn in variants.items():
                if fn is None:
                    pred = raw_np if need_host else pred_t
                else:
                    tp = time.perf_counter()
                    pred = fn(raw_np)
                    if n >= warmup:
                        post_s[name] += time.perf_counter() - tp
                        post_tile[name].append(time.perf_counter() - tp)
                lab = label if need_host or not isinstance(label, torch.Tensor) else label.to(pred_t.device)
                metrics[name].update(pred, lab, tags=tags, tile=tile_id)
                if name in writers:
                    writers[name].write(tile_id, pred, prob_np)
            n += 1
            bar.update(1)
            if progress is not None:
                progress(step=n, steps=len(indices), frac=n / max(1, len(indices)), phase=f"eval {label_desc}",
                         message=f"{split}: {n}/{len(indices)} tiles")
    finally:
        bar.close()
        if was_training:
            model.train()
    if n == 0 and not stopped:
        raise DataError(f"split '{split}' has no samples to evaluate; check dataset.root and the split settings")
    if timed == 0 and n:  # a single tile: report its time, warm-up included
        infer_s, timed, timed_mpix = dt, 1, hw / 1e6
        tile_s = [dt]
    complete = n == len(indices)
    if complete and len(tile_s) < int(min_timings):
        # warm repeats of the last tile: the timings of a short split get their spread from the same work
        with torch.no_grad():
            while len(tile_s) < int(min_timings):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                pred_t = infer_probs(model, image.unsqueeze(0), eval_cfg, num_classes).argmax(dim=1)[0]
                if need_host:
                    pred_t = pred_t.cpu()
                elif device.type == "cuda":
                    torch.cuda.synchronize(device)
                tile_s.append(time.perf_counter() - t0)
        for name in names:
            if post_tile[name]:
                post_tile[name] += [float(np.mean(post_tile[name]))] * (len(tile_s) - len(post_tile[name]))
    wall = time.perf_counter() - t_start
    dev_name = device_name(device)
    outcomes: dict[str, EvalOutcome] = {}
    for name in names:
        m = metrics[name]
        outcomes[name] = EvalOutcome(
            result=m.result(), metrics=m, split=split, variant=name, n_images=n, wall_s=wall,
            infer_s=infer_s + post_s[name], timed_images=timed, timed_mpixels=timed_mpix, device=dev_name,
            domains=domain_results(m),
            tile_seconds=[t + (post_tile[name][i] if i < len(post_tile[name]) else 0.0)
                          for i, t in enumerate(tile_s)],
            predictions=[str(p) for p in (writers[name].written if name in writers else [])], complete=complete)
        if complete:  # a stopped evaluation's partial numbers never reach the store as if they were final
            emit_metrics(events, outcomes[name], epoch)
    return outcomes


def evaluate_outcome(model: nn.Module, dataset, cfg, *, split: str, variant: str, device,
                     events=None, epoch: Optional[int] = None, save_dir: str | Path | None = None,
                     max_tiles: Optional[int] = None, postprocess: PostFn = None, **kwargs) -> EvalOutcome:
    """:func:`evaluate` returning the full :class:`EvalOutcome` (metrics, speed, domains, files written).
    ``postprocess`` maps the argmax id mask to the scored one; other keywords as :func:`evaluate_variants`."""
    return evaluate_variants(model, dataset, cfg, split=split, variants={variant: postprocess}, device=device,
                             events=events, epoch=epoch, save_dir=save_dir, max_tiles=max_tiles, **kwargs)[variant]


def evaluate(model: nn.Module, dataset, cfg, *, split: str, variant: str, device, events=None,
             epoch: Optional[int] = None, save_dir: str | Path | None = None, max_tiles: Optional[int] = None,
             **kwargs) -> Any:
    """Score ``model`` on ``dataset`` (full tiles) with ``cfg.eval``'s inference settings -> MetricResult.

    Writes ``metrics`` events (overall and per domain) and a ``tiles`` event when ``events`` is given, prediction
    PNGs under ``save_dir/<variant>/`` when ``save_dir`` is given. ``max_tiles`` evaluates that many tiles spread
    evenly over the split. Extra keyword arguments go to :func:`evaluate_outcome`."""
    return evaluate_outcome(model, dataset, cfg, split=split, variant=variant, device=device, events=events,
                            epoch=epoch, save_dir=save_dir, max_tiles=max_tiles, **kwargs).result


def predict_dataset(model: nn.Module, dataset, cfg, *, save_dir: str | Path, variant: str = "pred", device="auto",
                    events=None, split: str = "test", eval_cfg=None, save_probabilities: bool = False,
                    progress=None) -> list[str]:
    """Write predictions for every sample of a (possibly unlabelled) split; returns the written paths."""
    from tqdm import tqdm

    eval_cfg = eval_cfg or cfg.eval
    device = resolve_device(device)
    writer = PredictionWriter(save_dir, variant, list(cfg.dataset.palette), cfg.dataset.num_classes,
                              events=events, split=split, save_probabilities=save_probabilities)
    was_training = model.training
    model.to(device).eval()
    try:
        for i in tqdm(range(len(dataset)), desc=f"predict {split}", unit="tile", leave=False):
            sample = dataset[i]
            probs = infer_probs(model, sample["image"].unsqueeze(0), eval_cfg, cfg.dataset.num_classes)
            pred = probs.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
            writer.write(str(sample.get("id", i)), pred,
                         probs[0].cpu().numpy() if save_probabilities else None)
            if progress is not None:
                progress(step=i + 1, steps=len(dataset), frac=(i + 1) / len(dataset), phase="predict")
    finally:
        if was_training:
            model.train()
    return [str(p) for p in writer.written]


__all__ = ["evaluate", "evaluate_outcome", "evaluate_variants", "EvalOutcome", "predict_dataset", "device_name", "resolve_device",
           "pick_indices", "make_metrics", "emit_metrics", "domain_results"]
