"""Models: ``build_model(cfg)`` over segmentation-models-pytorch and timm encoders, local pretrained weights,
encoder freezing. See :mod:`mapsage.models.factory` for the forward contract."""
from .factory import ARCHS, BoundaryHead, SegModel, build_model, enable_grad_checkpointing, unwrap
from .freeze import FreezeSchedule, encoder_groups, encoder_units
from .pretrained import check_pretrained_value, load_pretrained, summarize_report

__all__ = ["ARCHS", "BoundaryHead", "SegModel", "build_model", "enable_grad_checkpointing", "unwrap",
           "FreezeSchedule", "encoder_groups", "encoder_units", "check_pretrained_value", "load_pretrained",
           "summarize_report"]
