"""The one metrics engine of the workbench (see :mod:`mapsage.metrics.core` for the accumulator,
:mod:`mapsage.metrics.result` for the definitions, :mod:`mapsage.metrics.boundary` for Boundary IoU and
:mod:`mapsage.metrics.bootstrap` for the paired bootstrap).

    m = SegMetrics(7, ignore_index=255, class_names=names, keep_tiles=True)
    for batch in loader:
        m.update(pred_ids, batch["mask"], tags=batch["domain"], tile=batch["id"])
    m.all_reduce()                       # under torch.distributed
    res = m.result()                     # MetricResult: .miou .macc .aacc .mf1 .mbiou .per_class .confusion ...
    urban = m.by_tag("domain")["Urban"]
    events.emit("metrics", **res.to_event("val", "all", "ema", epoch))
"""
from .bootstrap import miou_from_tile_rows, paired_bootstrap, paired_bootstrap_values, tile_arrays
from .boundary import boundary_width, class_bands
from .core import MAX_CLASSES, SegMetrics, boundary_iou_per_image, hist2d_u8
from .names import CLASS_METRICS, METRICS, SELECTABLE, metric_label
from .result import MetricResult

__all__ = ["SegMetrics", "MetricResult", "miou_from_tile_rows", "paired_bootstrap", "paired_bootstrap_values",
           "tile_arrays",
           "boundary_width", "class_bands", "boundary_iou_per_image", "hist2d_u8", "MAX_CLASSES",
           "METRICS", "CLASS_METRICS", "SELECTABLE", "metric_label"]
