"""Parity and speed of exported models against the PyTorch model they came from.

:func:`parity_pass` runs the PyTorch model and every exported variant over the same validation tiles through the
workbench's inference path (:func:`mapsage.infer.core.infer_logits`: whole image or sliding window as
``eval`` says, one view) and scores each with the one metrics engine (:class:`mapsage.metrics.SegMetrics`, via
:func:`mapsage.infer.evaluate.make_metrics`): per variant an :class:`~mapsage.infer.evaluate.EvalOutcome` (mIoU,
Boundary IoU, per-class, per-tile rows, images/s of the timed tiles) plus the logit parity against the PyTorch
logits of the same tile: max |Δ logit| and the share of pixels whose argmax agrees.

:func:`speed_compare` times the engines on one fixed input in one process, alternating engines round by round
(so a machine that slows down mid-way slows every engine alike), median of ``repeats`` passes after a warm-up:
PyTorch eager and each export on the CPU with the same thread count (stated), and on the GPU where one is present
(PyTorch FP32 and FP16 autocast, TorchScript, ONNX through onnxruntime's CUDA provider when installed)."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..infer.core import infer_logits
from ..infer.evaluate import EvalOutcome, device_name, domain_results, make_metrics, pick_indices
from .runtime import ExportedModel, onnx_providers


@dataclass
class Parity:
    """Logit parity of one variant against the reference over the scored tiles."""
    max_abs_logit: float = 0.0
    mean_abs_logit_sum: float = 0.0
    agree: int = 0
    pixels: int = 0
    tiles: int = 0
    worst_tile: Optional[str] = None
    worst_tile_agreement: float = 1.0

    def add(self, ref: torch.Tensor, out: torch.Tensor, tile: str) -> None:
        d = (out.float() - ref.float()).abs()
        self.max_abs_logit = max(self.max_abs_logit, float(d.max()))
        self.mean_abs_logit_sum += float(d.mean())
        a = int((out.argmax(dim=1) == ref.argmax(dim=1)).sum())
        n = int(ref.shape[0] * ref.shape[-2] * ref.shape[-1])
        self.agree += a
        self.pixels += n
        self.tiles += 1
        if n and a / n < self.worst_tile_agreement:
            self.worst_tile_agreement, self.worst_tile = a / n, tile

    @property
    def agreement(self) -> float:
        return self.agree / self.pixels if self.pixels else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"max_abs_logit": self.max_abs_logit, "mean_abs_logit": self.mean_abs_logit_sum / max(1, self.tiles),
                "argmax_agreement": self.agreement, "pixels": self.pixels, "tiles": self.tiles,
                "worst_tile": self.worst_tile, "worst_tile_agreement": self.worst_tile_agreement}


@dataclass
class ParityOutcome:
    outcomes: dict[str, EvalOutcome]
    parity: dict[str, Parity] = field(default_factory=dict)
    complete: bool = True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_of(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def parity_pass(models: dict[str, nn.Module], dataset, cfg, *, eval_cfg, reference: str,
                max_tiles: Optional[int] = None, split: str = "val", warmup: int = 1,
                progress: Optional[Callable[..., None]] = None,
                should_stop: Optional[Callable[[], bool]] = None) -> ParityOutcome:
    """Every model of ``models`` (name -> model, each on its own device) over the same tiles; ``reference`` names
    the model the others are compared with. See the module doc."""
    from tqdm import tqdm

    num_classes = cfg.dataset.num_classes
    indices = pick_indices(len(dataset), max_tiles)
    names = list(models)
    metrics = {n: make_metrics(cfg) for n in names}
    parity = {n: Parity() for n in names if n != reference}
    infer_s = {n: 0.0 for n in names}
    all_s = {n: 0.0 for n in names}          # warm-up tile included (the figure when only one tile is scored)
    timed, timed_mpix, n_done = 0, 0.0, 0
    devices = {n: _device_of(m) for n, m in models.items()}
    for m in models.values():
        m.eval()
    t_start = time.perf_counter()
    complete = True
    for k, idx in enumerate(tqdm(indices, desc=f"export parity {split}", unit="tile", leave=False)):
        if should_stop is not None and should_stop():
            complete = False
            break
        sample = dataset[idx]
        tile = str(sample.get("id", idx))
        image = sample["image"].unsqueeze(0)
        label = sample["mask"]
        domain = sample.get("domain")
        tags = {"domain": str(domain)} if domain else None
        ref_logits = None
        for name in [reference] + [n for n in names if n != reference]:
            dev = devices[name]
            _sync(dev)
            t0 = time.perf_counter()
            logits = infer_logits(models[name], image, eval_cfg, num_classes)
            pred = logits.argmax(dim=1)[0]
            _sync(dev)
            dt = time.perf_counter() - t0
            all_s[name] += dt
            if k >= warmup:
                infer_s[name] += dt
            logits = logits.cpu()
            if name == reference:
                ref_logits = logits
            else:
                parity[name].add(ref_logits, logits, tile)
            metrics[name].update(pred.cpu(), label, tags=tags, tile=tile)
        if k >= warmup:
            timed += 1
            timed_mpix += image.shape[-2] * image.shape[-1] / 1e6
        n_done += 1
        if progress is not None:
            progress(step=n_done, steps=len(indices), frac=n_done / max(1, len(indices)), phase="export parity",
                     message=f"{split}: {n_done}/{len(indices)} tiles x {len(names)} models")
    wall = time.perf_counter() - t_start
    if timed == 0:                            # fewer tiles than the warm-up: report them, warm-up included
        timed = n_done
        timed_mpix = sum(dataset[i]["image"].shape[-2] * dataset[i]["image"].shape[-1]
                         for i in indices[:n_done]) / 1e6
        infer_s = all_s
    outcomes = {}
    for name in names:
        m = metrics[name]
        outcomes[name] = EvalOutcome(result=m.result(), metrics=m, split=split, variant=name, n_images=n_done,
                                     wall_s=wall, infer_s=infer_s[name], timed_images=timed,
                                     timed_mpixels=timed_mpix, device=device_name(devices[name]),
                                     domains=domain_results(m), complete=complete)
    return ParityOutcome(outcomes=outcomes, parity=parity, complete=complete)


# ----------------------------------------------------------------------------------------------------------------
# speed


def time_engines(engines: dict[str, Callable[[], Any]], repeats: int, sync: Callable[[], None] = lambda: None
                 ) -> dict[str, float]:
    """Median seconds per call of each engine: one warm-up call each, then ``repeats`` rounds in which every engine
    runs once (interleaved)."""
    for fn in engines.values():
        fn()
        sync()
    times: dict[str, list[float]] = {n: [] for n in engines}
    for _ in range(max(1, repeats)):
        for name, fn in engines.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {n: statistics.median(v) for n, v in times.items()}


def speed_compare(graph: nn.Module, exported: dict[str, Any], x: torch.Tensor, *, threads: int, repeats: int = 5,
                  gpu: bool = True) -> dict[str, Any]:
    """Images/s of PyTorch eager (``graph``, FP32) and of each exported model (name -> ExportedModel) on one input
    ``x [B,3,H,W]``: CPU (``threads`` threads for torch and onnxruntime alike), and GPU where one is present."""

    batch = int(x.shape[0])
    out: dict[str, Any] = {"input": list(x.shape), "repeats": int(repeats)}
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        graph = graph.to("cpu").eval()
        engines: dict[str, Callable[[], Any]] = {}
        xc = x.to("cpu")

        def eager():
            with torch.inference_mode():
                return graph(xc)
        engines["pytorch"] = eager
        for name, m in exported.items():
            if m.fmt == "torchscript" and m.precision == "fp16":
                continue           # half-precision TorchScript is a GPU build; its CPU kernels are not the point
            cpu_m = ExportedModel(m.path, m.sidecar, threads=int(threads)).to("cpu").eval()
            engines[name] = (lambda mm: (lambda: mm(xc)))(cpu_m)
        secs = time_engines(engines, repeats)
        base = secs["pytorch"]
        out["cpu"] = {"device": device_name("cpu").split(" (")[0], "threads": int(threads),
                      "engines": {n: {"images_per_s": batch / s, "seconds": s,
                                      "speedup_vs_pytorch": base / s} for n, s in secs.items()}}
    finally:
        torch.set_num_threads(prev_threads)
    if gpu and torch.cuda.is_available():
        dev = torch.device("cuda")
        g = graph.to(dev)
        xg = x.to(dev)

        def eager_gpu():
            with torch.inference_mode():
                return g(xg)

        def eager_amp():
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
                return g(xg)
        engines = {"pytorch": eager_gpu, "pytorch-autocast-fp16": eager_amp}
        has_cuda_ep = "CUDAExecutionProvider" in onnx_providers()
        for name, m in exported.items():
            if m.fmt == "onnx" and (not has_cuda_ep or m.precision == "int8"):
                continue
            gm = ExportedModel(m.path, m.sidecar).to(dev).eval()
            engines[name] = (lambda mm: (lambda: mm(xg)))(gm)
        secs = time_engines(engines, repeats, sync=lambda: torch.cuda.synchronize(dev))
        base = secs["pytorch"]
        out["gpu"] = {"device": torch.cuda.get_device_name(dev), "onnxruntime_cuda": has_cuda_ep,
                      "engines": {n: {"images_per_s": batch / s, "seconds": s, "speedup_vs_pytorch": base / s}
                                  for n, s in secs.items()}}
        graph.to("cpu")
    return out
