"""Export for deployment (ONNX FP32/FP16/INT8, TorchScript) and the runtime that runs an exported file.

* :func:`load_exported` (``runtime``): ``path -> ExportedModel``, a callable ``images [B,3,H,W] -> logits`` that the
  workbench's inference and evaluation code runs like any model; ``read_sidecar`` for the normalisation and classes.
* :func:`export_targets` (``build``): export a model as ``"<format>:<precision>"`` targets with sidecars.
* Stage kind ``export``: :func:`mapsage.export.stage.run` (parity, speed and keep/drop ``ab`` rows).

Importing this package does not import onnx or onnxruntime; the functions that need them raise
:class:`OnnxRuntimeMissing` with the install command."""
from .errors import ExportError, OnnxRuntimeMissing, TracingFrozen, UnsupportedOperator
from .runtime import ExportedModel, load_exported, read_sidecar

__all__ = ["ExportError", "OnnxRuntimeMissing", "TracingFrozen", "UnsupportedOperator", "ExportedModel",
           "load_exported", "read_sidecar", "export_targets"]


def export_targets(*args, **kwargs):
    """See :func:`mapsage.export.build.export_targets`."""
    from .build import export_targets as _export_targets
    return _export_targets(*args, **kwargs)
