"""Stage 3 inference: whole-image and sliding-window inference, TTA, evaluation, post-processing, ensembles,
large-raster (GeoTIFF) prediction, speed, and the stage entry points (:mod:`mapsage.infer.stage`).

``infer_probs`` and ``evaluate`` are the one inference path of training-time validation and final evaluation.

Modules: ``core`` (windows, padding, TTA, ``infer_probs``), ``evaluate`` (``evaluate``, ``evaluate_variants``,
speed), ``predictions`` (id / colour PNGs, fp16 probabilities, artifact events), ``post`` (small-object filter,
road width), ``ensemble`` (weighted probability / logit average), ``large`` (bounded-memory GeoTIFF prediction),
``ab`` (the keep/drop rule and ``ab`` rows), ``checkpoints`` (``stage.checkpoint`` references), ``stage``
(``run_evaluate``, ``run_tta_ab``, ``run_ensemble``). Importing this package does not import rasterio or cv2."""
from .core import (
                   InferenceError,
                   View,
                   forward_padded,
                   infer_logits,
                   infer_probs,
                   model_output_stride,
                   seg_logits,
                   single_view_logits,
                   slide_logits,
                   slide_windows,
                   tta_views,
                   whole_logits,
                   window_grid,
)
from .evaluate import (
                   EvalOutcome,
                   device_name,
                   evaluate,
                   evaluate_outcome,
                   evaluate_variants,
                   predict_dataset,
                   resolve_device,
)
from .predictions import PredictionWriter, colorize, palette_array

__all__ = ["infer_probs", "infer_logits", "evaluate", "evaluate_outcome", "evaluate_variants", "EvalOutcome",
           "predict_dataset", "InferenceError", "View", "forward_padded", "model_output_stride", "seg_logits",
           "single_view_logits", "slide_logits", "slide_windows", "tta_views", "whole_logits", "window_grid",
           "device_name", "resolve_device", "PredictionWriter", "colorize", "palette_array"]
