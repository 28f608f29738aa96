"""The metric settings of a config, in one place: every stage that builds a :class:`SegMetrics` from a config
passes the same Boundary IoU band, strip rule and foreground classes."""
from __future__ import annotations

from typing import Any

from ..errors import UserError


def metric_kwargs(cfg) -> dict[str, Any]:
    """Keyword arguments of :class:`~mapsage.metrics.SegMetrics` from a config's ``dataset`` and ``eval``."""
    classes = list(cfg.dataset.classes)
    bg = cfg.eval.background_classes
    if bg is not None:
        unknown = [c for c in bg if c not in classes]
        if unknown:
            raise UserError(f"eval.background_classes names {unknown}, which are not in dataset.classes {classes}")
    if int(cfg.eval.boundary_strip_px) < 0:
        raise UserError(f"eval.boundary_strip_px must be >= 0 (0: off), got {cfg.eval.boundary_strip_px}")
    return {"ignore_index": cfg.dataset.ignore_index, "class_names": classes,
            "boundary_px": cfg.eval.boundary_px, "boundary_strip_px": int(cfg.eval.boundary_strip_px),
            "background_classes": None if bg is None else list(bg)}
