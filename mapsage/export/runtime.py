"""Run an exported model (ONNX or TorchScript) as the workbench runs a PyTorch one.

``load_exported(path) -> ExportedModel``: a callable ``images [B,3,H,W] (normalised, float32) -> logits
[B,C,H,W]`` that is also an ``nn.Module`` with ``output_stride``, ``num_classes``, ``.to(device)`` and ``.eval()``,
so :func:`mapsage.infer.infer_probs`, :func:`mapsage.infer.evaluate` and the sliding-window path run it unchanged.
The sidecar beside the file (``<file>.json``, see :mod:`mapsage.export.core`) gives the normalisation and the
class table (``model.sidecar``, ``model.classes``, ``model.normalization``). Inputs of any size are padded at the
bottom/right with zeros to the sidecar's ``input.multiple_of`` and the logits cropped back.

ONNX runs on onnxruntime: the CPU execution provider, or CUDA's when the model is moved to a CUDA device and the
installed onnxruntime has it (else :class:`ExportError` says so). TorchScript runs on torch alone."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ExportError, require_onnx


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar of an exported file (``<file>.json``); ExportError naming the file when missing or bad."""
    p = Path(path)
    side = p.with_name(p.name + ".json")
    if not side.is_file():
        raise ExportError(f"{p}: no sidecar {side.name} beside the model (it holds the normalisation and the class "
                          "table); export the model with 'mapsage export RUN' or copy the .json with it")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{side}: not a readable sidecar ({exc}); export the model again") from exc
    if not isinstance(data, dict) or "mapsage_export" not in data:
        raise ExportError(f"{side}: not a MapSage export sidecar (no 'mapsage_export' key); export the model again")
    return data


def onnx_providers() -> list[str]:
    """onnxruntime's available execution providers ([] without onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


class ExportedModel(nn.Module):
    """An exported segmentation model behind the interface of a workbench model (see module doc)."""

    def __init__(self, path: str | Path, sidecar: dict, threads: Optional[int] = None):
        super().__init__()
        self.path = Path(path)
        self.sidecar = sidecar
        self.fmt = sidecar.get("format") or ("onnx" if self.path.suffix == ".onnx" else "torchscript")
        self.precision = sidecar.get("precision", "fp32")
        self.output_stride = int(sidecar.get("input", {}).get("multiple_of", 32))
        self.num_classes = int(sidecar.get("model", {}).get("num_classes") or len(sidecar.get("classes", [])))
        self.classes = list(sidecar.get("classes", []))
        self.normalization = sidecar.get("normalization", {})
        self.threads = threads
        self.weights_variant = f"export={self.fmt}-{self.precision}"
        # a buffer so .to(device) moves "the model" and the workbench finds its device
        self.register_buffer("_device_marker", torch.zeros(1), persistent=False)
        self._session = None
        self._session_device: Optional[str] = None
        self._script: list = []          # a list, so the ScriptModule is not a registered submodule
        if self.fmt == "torchscript":
            try:
                self._script = [torch.jit.load(str(self.path), map_location="cpu").eval()]
            except Exception as exc:  # noqa: BLE001
                raise ExportError(f"{self.path}: cannot load the TorchScript file ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:200]}); export it again") from exc
            self._script_device = torch.device("cpu")
        elif self.fmt == "onnx":
            require_onnx(f"running {self.path.name}")
        else:
            raise ExportError(f"{self.path}: unknown export format {self.fmt!r} in its sidecar")

    # ------------------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device_marker.device

    @property
    def input_dtype(self) -> torch.dtype:
        return torch.float16 if (self.fmt == "torchscript" and self.precision == "fp16") else torch.float32

    def providers(self) -> list[str]:
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in onnx_providers():
                raise ExportError(f"{self.path.name}: the model is on a CUDA device but this onnxruntime has no "
                                  f"CUDAExecutionProvider (available: {onnx_providers()}); install "
                                  "onnxruntime-gpu or run the ONNX model on the CPU")
            return [("CUDAExecutionProvider", {"device_id": self.device.index or 0}), "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def session(self):
        key = str(self.device)
        if self._session is None or self._session_device != key:
            from .core import ort_session
            try:
                self._session = ort_session(self.path, self.threads, self.providers())
            except ExportError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise ExportError(f"{self.path}: onnxruntime cannot load it ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:300]}); export it again (a newer export.opset "
                                  "may need a newer onnxruntime)") from exc
            self._session_device = key
        return self._session

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.fmt == "torchscript":
            if self._script_device != self.device:
                self._script = [self._script[0].to(self.device)]
                self._script_device = self.device
            with torch.inference_mode():
                return self._script[0](x.to(self.device, self.input_dtype)).float()
        from .core import run_onnx
        sess = self.session()
        out = run_onnx(sess, x.detach().to("cpu", torch.float32).contiguous().numpy())
        return torch.from_numpy(out).to(self.device)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ExportError(f"{self.path.name}: expects images [B,3,H,W], got {list(images.shape)}")
        h, w = images.shape[-2:]
        s = self.output_stride
        ph, pw = (-h) % s, (-w) % s
        x = F.pad(images, (0, pw, 0, ph), value=0.0) if (ph or pw) else images
        logits = self._run(x)
        return logits[..., :h, :w] if (ph or pw) else logits

    def extra_repr(self) -> str:
        return f"{self.path.name}, {self.fmt}, {self.precision}, {self.num_classes} classes"


def load_exported(path: str | Path, device: str | torch.device = "cpu", threads: Optional[int] = None
                  ) -> ExportedModel:
    """Load an exported ``.onnx`` / ``.pt`` file with its sidecar -> :class:`ExportedModel` on ``device``.

    ``threads`` sets onnxruntime's intra-op threads (None: onnxruntime's default)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ExportError(f"{p}: exported model not found; give the .onnx or .pt file written by "
                          "'mapsage export' (workspace/runs/<run_id>/export/)")
    model = ExportedModel(p, read_sidecar(p), threads=threads)
    return model.to(device).eval()


def normalize_rgb(rgb: np.ndarray, sidecar: dict) -> torch.Tensor:
    """``uint8 [H,W,3]`` RGB -> normalised float32 ``[3,H,W]`` as the sidecar says (for callers without the
    workbench's dataset code)."""
    norm = sidecar["normalization"]
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(norm["mean"], dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(norm["std"], dtype=torch.float32).view(3, 1, 1)
    return (x - mean) / std
