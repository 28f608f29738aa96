"""Export a trained segmentation model for deployment: ONNX (FP32, FP16, INT8) and TorchScript (FP32, FP16).

What is exported is :class:`DeployGraph`: images ``[B,3,H,W]`` (normalised as the sidecar says, ``H`` and ``W``
multiples of ``input_multiple``) -> segmentation logits ``[B,C,H,W]``. Batch, height and width are dynamic axes.
The boundary head, distillation features and any other training-only output are left out of the graph. The
padding to the output stride is left to the caller (:class:`mapsage.export.runtime.ExportedModel` and the
workbench's inference path pad at the bottom/right with zeros, as :mod:`mapsage.infer` does), so the graph has no
shape-dependent branch for a tracer to freeze.

Beside every file a sidecar ``<file>.json`` (:func:`write_sidecar`) holds what a user needs to run it without the
workbench: the normalisation, the class table and palette, the input layout and multiple, the output, the source
checkpoint (run, file, epoch, raw or EMA weights, content hash) and the versions that made it.

* ONNX FP32: ``torch.onnx.export`` (the TorchScript-based exporter by default, ``export.onnx_exporter: dynamo``
  for the newer one), checked with ``onnx.checker`` and against the eager model on a second input shape.
* ONNX FP16: the FP32 graph converted with onnxruntime's ``convert_float_to_float16`` (inputs and outputs stay
  float32, so callers feed the same arrays); meant for GPUs.
* ONNX INT8: onnxruntime's quantisation: static (QDQ, calibrated on ``export.calib_tiles`` training tiles) or
  dynamic (weights only, MatMul/Gemm) where static does not apply (``export.int8_mode``).
* TorchScript: ``torch.jit.trace`` (or ``script``), checked against the eager model on a second input shape; a
  mismatch means the model has input-dependent control flow that tracing froze (:class:`TracingFrozen`)."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import get_normalization
from ..infer.core import seg_logits
from ..models.factory import unwrap
from .errors import ExportError, TracingFrozen, UnsupportedOperator, require_onnx

SIDECAR_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "images", "logits"
FORMATS = ("onnx", "torchscript")
PRECISIONS = ("fp32", "fp16", "int8")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


# ----------------------------------------------------------------------------------------------------------------
# the deployable graph


def _describe(model: nn.Module) -> str:
    arch = getattr(model, "arch", None)
    enc = getattr(model, "encoder_name", None)
    if arch and enc:
        return f"{arch}/{enc}"
    return type(model).__name__


class DeployGraph(nn.Module):
    """Segmentation logits only, at the input's resolution; no padding, no boundary head, no features.

    A workbench :class:`~mapsage.models.factory.SegModel` is run through its network's parts (encoder, decoder,
    segmentation head); any other module is called and its segmentation logits taken (``out["seg"]`` of a dict)."""

    def __init__(self, model: nn.Module):
        super().__init__()

        self.model = unwrap(model)
        self.name = _describe(self.model)
        self.output_stride = int(getattr(self.model, "output_stride", 32) or 32)
        self.num_classes = getattr(self.model, "num_classes", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        net = getattr(m, "net", None)
        if net is not None and hasattr(net, "segmentation_head") and hasattr(m, "arch"):
            if m.arch == "dpt":
                features, prefix = net.encoder(x)
                decoded = net.decoder(features, prefix)
            else:
                decoded = net.decoder(net.encoder(x))
            logits = net.segmentation_head(decoded)
        else:
            logits = seg_logits(m(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def example_input(image: Optional[torch.Tensor], size: Sequence[int], multiple: int, batch: int = 1,
                  seed: int = 0) -> torch.Tensor:
    """A ``[batch,3,h,w]`` input: a crop of ``image`` (normalised ``[3,H,W]``, zero-padded where it is smaller),
    else seeded noise; ``h``/``w`` rounded up to ``multiple``."""
    h, w = (int(v) for v in size)
    h, w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    if image is None:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch, 3, h, w, generator=g)
    img = image[:, :h, :w]
    out = torch.zeros(3, h, w, dtype=torch.float32)
    out[:, :img.shape[1], :img.shape[2]] = img
    return out.unsqueeze(0).repeat(batch, 1, 1, 1)


# ----------------------------------------------------------------------------------------------------------------
# sidecar


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sidecar_path(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.name + ".json")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("onnx", "onnxruntime"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            pass
    return out


def build_sidecar(cfg, *, fmt: str, precision: str, multiple: int, source: dict, extra: Optional[dict] = None
                  ) -> dict[str, Any]:
    """The sidecar of an exported file (see module doc); ``cfg`` is the checkpoint's config."""
    mean, std = get_normalization(cfg)
    ds = cfg.dataset
    return {
        "mapsage_export": SIDECAR_VERSION,
        "format": fmt, "precision": precision,
        "model": {"arch": cfg.model.arch, "encoder": cfg.model.encoder, "num_classes": ds.num_classes},
        "classes": list(ds.classes),
        "palette": list(ds.palette),
        "ignore_index": int(ds.ignore_index),
        "dataset": ds.name,
        "normalization": {"mean": [float(v) for v in mean], "std": [float(v) for v in std],
                          "scale": "RGB uint8 / 255, then (x - mean) / std, channel order RGB"},
        "input": {"name": INPUT_NAME, "layout": "NCHW", "dtype": "float32",
                  "dynamic_axes": ["batch", "height", "width"], "multiple_of": int(multiple),
                  "padding": "pad height/width at the bottom/right with zeros to a multiple of multiple_of, then "
                             "crop the logits back"},
        "output": {"name": OUTPUT_NAME, "layout": "NCHW", "dtype": "float32", "meaning": "class logits at the "
                   "input resolution; argmax over C gives the class id (index into classes)"},
        "inference": {"mode": cfg.eval.mode, "tile": list(cfg.eval.tile), "stride": list(cfg.eval.stride)},
        "source": source,
        "versions": _versions(),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }


def write_sidecar(model_path: str | Path, sidecar: dict) -> Path:
    p = sidecar_path(model_path)
    data = dict(sidecar)
    data["file"] = Path(model_path).name
    data["file_bytes"] = Path(model_path).stat().st_size
    data["sha256"] = file_sha256(model_path)
    p.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return p


# ----------------------------------------------------------------------------------------------------------------
# ONNX


def ort_session(path: str | Path, threads: Optional[int] = None, providers: Optional[list] = None):
    _, ort = require_onnx("running an ONNX model")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # no busy-waiting between runs: spinning pool threads would take the cores from whatever runs next (PyTorch
    # beside it in the same process, the next tile's data loading) and skew every side-by-side timing
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])


def export_onnx_fp32(graph: DeployGraph, example: torch.Tensor, out_path: str | Path, *, opset: int = 17,
                     exporter: str = "torchscript") -> Path:
    """``graph`` -> an FP32 ONNX file with dynamic batch/height/width; UnsupportedOperator naming the model."""
    onnx, _ = require_onnx(f"exporting {graph.name} to ONNX")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    graph = graph.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                b = torch.export.Dim("batch", min=1, max=1024)
                h = torch.export.Dim("h", min=1, max=4096)
                w = torch.export.Dim("w", min=1, max=4096)
                m = graph.output_stride
                torch.onnx.export(graph, (example,), str(out_path), dynamo=True, input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME], opset_version=max(opset, 18),
                                  dynamic_shapes={"x": {0: b, 2: m * h, 3: m * w}}, external_data=False)
            else:
                torch.onnx.export(graph, (example,), str(out_path), dynamo=False, input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME], opset_version=opset, do_constant_folding=True,
                                  dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                                                OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}})
    except Exception as exc:  # noqa: BLE001 - every exporter failure becomes one message naming the model
        text = f"{type(exc).__name__}: {exc}".splitlines()[0][:400]
        unsupported = "Unsupported" in type(exc).__name__ or "not supported" in text or "unsupported" in text
        hint = ("an operator of the model has no ONNX translation at this opset; raise export.opset, try "
                "export.onnx_exporter=" + ("torchscript" if exporter == "dynamo" else "dynamo")
                + ", or export with --format torchscript")
        cls = UnsupportedOperator if unsupported else ExportError
        raise cls(f"ONNX export of {graph.name} failed ({text}); {hint}") from exc
    model = onnx.load(str(out_path))
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{out_path}: the ONNX file of {graph.name} does not pass onnx.checker ({exc}); "
                          "try another export.opset") from exc
    return out_path


def run_onnx(session, x: np.ndarray) -> np.ndarray:
    inp = session.get_inputs()[0]
    if "float16" in inp.type:
        x = x.astype(np.float16)
    return np.asarray(session.run(None, {inp.name: x})[0], dtype=np.float32)


def check_against_eager(name: str, eager: Callable[[torch.Tensor], torch.Tensor],
                        exported: Callable[[torch.Tensor], torch.Tensor], inputs: Iterable[torch.Tensor],
                        atol: float, *, kind: str) -> float:
    """Max |Δ logit| between the eager model and the export over ``inputs`` (shapes unlike the example's);
    :class:`TracingFrozen` (TorchScript) or :class:`ExportError` (ONNX) above ``atol`` relative to the logit
    range, or when the export cannot run a shape."""
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            ref = eager(x).float()
        try:
            out = exported(x).float()
        except Exception as exc:  # noqa: BLE001
            raise (TracingFrozen if kind == "torchscript" else ExportError)(
                f"the {kind} export of {name} fails on input {list(x.shape)} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}): the export froze a shape; "
                + ("use --format onnx or export.torchscript_method=script" if kind == "torchscript"
                   else "export with export.onnx_exporter=dynamo or --format torchscript")) from exc
        if tuple(out.shape) != tuple(ref.shape):
            raise (TracingFrozen if kind == "torchscript" else ExportError)(
                f"the {kind} export of {name} returns {list(out.shape)} for input {list(x.shape)} where the model "
                f"returns {list(ref.shape)}: the export froze a shape; "
                + ("use --format onnx or export.torchscript_method=script" if kind == "torchscript"
                   else "use --format torchscript"))
        diff = float((out - ref).abs().max())
        scale = max(1.0, float(ref.abs().max()))
        worst = max(worst, diff)
        if diff > atol * scale:
            raise (TracingFrozen if kind == "torchscript" else ExportError)(
                f"the {kind} export of {name} differs from the model by {diff:.3g} (max |Δ logit|) on input "
                f"{list(x.shape)}: "
                + ("the model has control flow that depends on the input, and tracing froze it for the example "
                   "shape; use --format onnx or export.torchscript_method=script" if kind == "torchscript"
                   else "the exporter changed the computation; try export.onnx_exporter=dynamo or "
                        "--format torchscript"))
    return worst


def convert_onnx_fp16(src: str | Path, dst: str | Path) -> Path:
    """FP32 ONNX -> FP16 weights and compute, float32 inputs/outputs (Resize's scales stay float32)."""
    onnx, _ = require_onnx("FP16 ONNX conversion")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(model, keep_io_types=True, op_block_list=["Resize", "Range", "Shape"])
    onnx.save(half, str(dst))
    return Path(dst)


class _Calibration:
    """onnxruntime ``CalibrationDataReader`` over normalised training crops."""

    def __init__(self, input_name: str, crops: list[np.ndarray]):
        self.input_name = input_name
        self.crops = crops
        self._it = iter(crops)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {self.input_name: x[None]}

    def rewind(self):
        self._it = iter(self.crops)


def _has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            text = fh.read(200_000)
    except OSError:
        return False
    return "vnni" in text


def quantize_onnx_int8(src: str | Path, dst: str | Path, *, mode: str, crops: Optional[list[np.ndarray]],
                       op_types: Sequence[str], per_channel: bool, reduce_range: Optional[bool],
                       calib_method: str = "minmax", name: str = "model",
                       log: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """INT8 with onnxruntime: static QDQ calibrated on ``crops`` (``[3,h,w]`` float32 arrays) or dynamic.

    ``mode``: ``static`` | ``dynamic`` | ``auto`` (static when crops are given, dynamic when there are none or
    static quantisation fails). Returns what was done (mode, settings, why)."""
    require_onnx(f"INT8 quantisation of {name}")
    if reduce_range is None:
        reduce_range = not _has_vnni()
    info: dict[str, Any] = {"op_types": list(op_types), "per_channel": bool(per_channel),
                            "reduce_range": bool(reduce_range)}
    want_static = mode == "static" or (mode == "auto" and crops)
    # onnxruntime's recommended pre-processing (shape inference, graph optimisation) when it works on this graph
    pre = Path(str(dst) + ".pre.onnx")
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        src = pre
        info["pre_processed"] = True
    except Exception as exc:  # noqa: BLE001 - optional: quantise the graph as exported
        info["pre_processed"] = f"skipped ({type(exc).__name__})"
    try:
        return _quantize(src, dst, mode, crops, op_types, per_channel, reduce_range, calib_method, name, log, info,
                         want_static)
    finally:
        pre.unlink(missing_ok=True)


def _quantize(src, dst, mode, crops, op_types, per_channel, reduce_range, calib_method, name, log, info,
              want_static) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if mode == "static" and not crops:
        raise ExportError(f"INT8 static quantisation of {name} needs calibration tiles, and the training split "
                          "has none; set export.int8_mode=dynamic or point dataset.root at data with a train split")
    if want_static:
        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_static(str(src), str(dst), _Calibration(INPUT_NAME, crops), quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=list(op_types), per_channel=per_channel,
                                reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, calibrate_method=methods[calib_method])
            info.update(mode="static", format="QDQ", activations="uint8", weights="int8",
                        calibration={"method": calib_method, "tiles": len(crops),
                                     "size": list(crops[0].shape[-2:])})
            return info
        except Exception as exc:  # noqa: BLE001
            if mode == "static":
                raise ExportError(f"INT8 static quantisation of {name} failed ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:300]}); set export.int8_mode=dynamic") from exc
            info["static_failed"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            if log:
                log(f"INT8 static quantisation of {name} failed ({info['static_failed']}); using dynamic")
    dyn_ops = [o for o in op_types if o in ("MatMul", "Gemm")] or ["MatMul"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=dyn_ops, per_channel=per_channel,
                         reduce_range=reduce_range, weight_type=QuantType.QInt8)
    info.update(mode="dynamic", weights="int8", activations="float32 (quantised at run time)", op_types=dyn_ops,
                why=info.get("static_failed") or ("export.int8_mode=dynamic" if mode == "dynamic"
                                                  else "no calibration tiles"))
    return info


# ----------------------------------------------------------------------------------------------------------------
# TorchScript


def export_torchscript(graph: DeployGraph, example: torch.Tensor, out_path: str | Path, *, method: str = "trace",
                       precision: str = "fp32", device: torch.device | str = "cpu") -> Path:
    """``graph`` traced (or scripted) and saved; FP16 casts the weights to half (inputs are cast inside the
    runtime wrapper). Errors name the model."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    g = graph.eval().to(device)
    x = example.to(device)
    if precision == "fp16":
        g = g.half()
        x = x.half()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if method == "script":
                module = torch.jit.script(g)
            else:
                module = torch.jit.trace(g, (x,), check_trace=False)
        try:
            module = torch.jit.freeze(module.eval())
        except Exception:  # noqa: BLE001 - freezing only folds constants; the unfrozen module is as correct
            pass
    except Exception as exc:  # noqa: BLE001
        other = "trace" if method == "script" else "script"
        raise ExportError(f"TorchScript {method} of {graph.name} failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:300]}); try export.torchscript_method={other} or "
                          "--format onnx") from exc
    torch.jit.save(module, str(out_path))
    if precision == "fp16":
        graph.float()
    graph.to("cpu")
    return out_path


@dataclass
class ExportedFile:
    """One exported variant: the file, its sidecar and what the export did."""
    fmt: str
    precision: str
    path: Path
    sidecar: Path
    seconds: float
    info: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.fmt}-{self.precision}"

    @property
    def bytes(self) -> int:
        return self.path.stat().st_size
