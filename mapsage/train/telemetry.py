"""Training telemetry the engine logs beside its losses: pixel accuracy, iteration timing and GPU sampling.

* :func:`pixel_hits` -- correct and labelled pixel counts of one batch (the training pixel accuracy mmsegmentation
  logs as ``decode.acc_seg``; here stored as a fraction under ``acc_seg``), as two tensors so the engine fetches them
  with the loss in its one device-to-host copy per micro-step.
* :class:`IterWindow` -- per-iteration wall time and data-loading time averaged over the steps between two sampled
  step records (mmseg's ``time`` / ``data_time``), and the accuracy over the same steps.
* :class:`GpuSampler` -- GPU utilisation (%) and device memory in use (MB) sampled through NVML (the
  ``nvidia-ml-py`` package, ``import pynvml``) by a background thread while training runs. Optional: without the
  package, without a CUDA device, or where NVML refuses (some containers, MIG slices for utilisation), it reports
  why once and records nothing.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Optional

import torch


def pixel_hits(logits: torch.Tensor, mask: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, labelled) pixel counts of a batch: ``logits`` [B,C,H,W], ``mask`` [B,H,W] with ``ignore_index``.

    Logits at another resolution than the mask are compared after nearest resizing of the prediction."""
    with torch.no_grad():
        pred = logits.detach().argmax(1)
        if pred.shape[-2:] != mask.shape[-2:]:
            pred = torch.nn.functional.interpolate(pred[:, None].float(), size=mask.shape[-2:],
                                                   mode="nearest")[:, 0].long()
        valid = mask != ignore_index
        correct = ((pred == mask) & valid).sum()
        return correct.float(), valid.sum().float()


class IterWindow:
    """Running sums between two sampled step records (and over the whole epoch)."""

    def __init__(self):
        self.reset_epoch()

    def reset_epoch(self) -> None:
        self.epoch_correct = self.epoch_valid = 0.0
        self.epoch_steps = 0
        self.epoch_iter_time = 0.0
        self._reset_window()

    def _reset_window(self) -> None:
        self.steps = 0
        self.time = self.data_time = 0.0
        self.correct = self.valid = 0.0

    def add(self, iter_time: float, data_time: float, correct: float, valid: float) -> None:
        self.steps += 1
        self.time += iter_time
        self.data_time += data_time
        self.correct += correct
        self.valid += valid
        self.epoch_steps += 1
        self.epoch_iter_time += iter_time
        self.epoch_correct += correct
        self.epoch_valid += valid

    def take(self) -> dict:
        """The window's means (``time``, ``data_time`` in s per iteration; ``acc_seg`` fraction); starts a new one."""
        out = {}
        if self.steps:
            out["time"] = self.time / self.steps
            out["data_time"] = self.data_time / self.steps
        if self.valid > 0:
            out["acc_seg"] = self.correct / self.valid
        self._reset_window()
        return out

    def epoch_values(self) -> dict:
        out = {}
        if self.epoch_valid > 0:
            out["acc_seg"] = self.epoch_correct / self.epoch_valid
        if self.epoch_steps:
            out["iter_time"] = self.epoch_iter_time / self.epoch_steps
        return out


def _nvml_index(device: torch.device) -> Optional[int | str]:
    """The NVML handle key of a torch CUDA device: its UUID when torch knows it, else the physical index read from
    ``CUDA_VISIBLE_DEVICES`` (NVML ignores that variable and counts every GPU of the machine)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        if uuid:
            return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
    except Exception:  # noqa: BLE001 - older torch: no uuid
        pass
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        parts = [p.strip() for p in visible.split(",") if p.strip()]
        if index < len(parts):
            p = parts[index]
            return int(p) if p.isdigit() else p
    return index


class GpuSampler:
    """Sample GPU utilisation and memory in use every ``interval`` seconds in a daemon thread.

    ``take()`` returns the means / maxima since the previous call (``gpu_util``, ``gpu_util_max`` in %,
    ``gpu_mem_mb`` the largest device memory in use in MB) and ``epoch_values()`` the same over the epoch;
    both are empty when nothing could be sampled. ``note`` says why sampling is off."""

    def __init__(self, device: torch.device, interval: float = 0.5):
        self.device = device
        self.interval = float(interval)
        self.note: Optional[str] = None
        self._handle = None
        self._nvml = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._win: list[tuple[Optional[float], Optional[float]]] = []
        self._epoch: list[tuple[Optional[float], Optional[float]]] = []
        self._util_ok = True
        if device.type != "cuda":
            self.note = "GPU sampling off: training on the CPU"
            return
        try:
            import pynvml  # the nvidia-ml-py package
        except ImportError:
            self.note = "GPU sampling off: the nvidia-ml-py package is not installed (pip install nvidia-ml-py)"
            return
        try:
            pynvml.nvmlInit()
            key = _nvml_index(device)
            if isinstance(key, str):
                self._handle = (pynvml.nvmlDeviceGetHandleByUUID(key) if not key.isdigit()
                                else pynvml.nvmlDeviceGetHandleByIndex(int(key)))
            else:
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(int(key))
            self._nvml = pynvml
        except Exception as exc:  # noqa: BLE001 - NVML absent or refused: training goes on without it
            self.note = f"GPU sampling off: NVML unavailable ({exc})"
            self._handle = None

    @property
    def active(self) -> bool:
        return self._handle is not None

    def sample(self) -> tuple[Optional[float], Optional[float]]:
        nv, h = self._nvml, self._handle
        util = mem = None
        if self._util_ok:
            try:
                util = float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
            except Exception:  # noqa: BLE001 - e.g. a MIG slice: no utilisation counter
                self._util_ok = False
        try:
            mem = float(nv.nvmlDeviceGetMemoryInfo(h).used) / 2 ** 20
        except Exception:  # noqa: BLE001
            pass
        return util, mem

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            s = self.sample()
            with self._lock:
                self._win.append(s)
                self._epoch.append(s)

    def start(self) -> "GpuSampler":
        if self.active and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="mapsage-gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.interval + 1)
            self._thread = None

    @staticmethod
    def _summary(samples: list) -> dict:
        utils = [u for u, _ in samples if u is not None]
        mems = [m for _, m in samples if m is not None]
        out = {}
        if utils:
            out["gpu_util"] = sum(utils) / len(utils)
            out["gpu_util_max"] = max(utils)
        if mems:
            out["gpu_mem_mb"] = max(mems)
        return out

    def take(self) -> dict:
        if not self.active:
            return {}
        with self._lock:
            samples, self._win = self._win, []
        if not samples:                       # a window shorter than one interval: sample now
            samples = [self.sample()]
        return self._summary(samples)

    def epoch_values(self) -> dict:
        if not self.active:
            return {}
        with self._lock:
            samples, self._epoch = self._epoch, []
        return self._summary(samples)


def max_memory_mb(device: torch.device) -> Optional[float]:
    """mmseg's ``memory``: the most memory tensors held on ``device`` since the last reset, MB (None on CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2 ** 20


def now() -> float:
    return time.perf_counter()
