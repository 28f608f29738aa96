"""Errors of the exporter and the exported-model runtime: each names the model and what to do."""
from __future__ import annotations

from ..errors import UserError


class ExportError(UserError):
    """An export the user can fix (a missing package, an operator the exporter lacks, a frozen trace...)."""


class OnnxRuntimeMissing(ExportError):
    """onnx / onnxruntime is not installed."""


class UnsupportedOperator(ExportError):
    """The ONNX exporter has no translation for an operator of the model."""


class TracingFrozen(ExportError):
    """A traced model gives other results than the eager model on a second input shape: it has control flow that
    depends on the input, which tracing recorded for the example shape only."""


def require_onnx(what: str):
    """Import onnx and onnxruntime or raise :class:`OnnxRuntimeMissing` naming ``what`` needed them."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise OnnxRuntimeMissing(f"{what} needs the packages onnx and onnxruntime, and '{exc.name}' is not "
                                 "installed; run: pip install onnx onnxruntime onnxscript (or onnxruntime-gpu "
                                 "for CUDA), or export with --format torchscript") from exc
    return onnx, onnxruntime
