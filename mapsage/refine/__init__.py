"""Stage 4 refinement: SAM prompted by the predicted components, DenseCRF on the softmax, and their chains.

Public API::

    refine_tile(image, probs, chain, cfg, predictor=None) -> label map    # chain: raw | crf | sam | sam+crf
    Refiner(cfg, predictor=None, device="cpu").run(image, probs, chains) -> {chain: ChainResult}
    crf_probs(image, probs, crf_cfg) / crf_refine(...)                    # pydensecrf
    sam_refine(image, label_map, predictor, sam_cfg, num_classes)         # prompt -> predict -> merge
    component_prompts(label_map, num_classes, sam_cfg)                    # the prompts SAM gets
    build_predictor(sam_cfg, device) / register_predictor(model_type, factory)
    SamUnavailable                                                        # UserError naming refine.sam.checkpoint

The A/B stage is :func:`mapsage.refine.stage.run` (stage kind ``refine``).
"""
from .chains import CHAINS, SAM_CHAINS, ChainResult, Refiner, refine_tile, validate_chains
from .crf import crf_probs, crf_refine, labels_to_probs
from .prompts import ComponentPrompt, component_prompts, iter_component_prompts, negative_points, positive_points
from .sam import (
                  EfficientSamPredictor,
                  MaskMerger,
                  MaskPredictor,
                  SamReport,
                  SamUnavailable,
                  SegmentAnythingPredictor,
                  build_predictor,
                  known_model_types,
                  merge_masks,
                  register_predictor,
                  sam_refine,
                  sam_unavailable_reason,
)

__all__ = [
    "CHAINS", "SAM_CHAINS", "ChainResult", "Refiner", "refine_tile", "validate_chains",
    "crf_probs", "crf_refine", "labels_to_probs",
    "ComponentPrompt", "component_prompts", "iter_component_prompts", "negative_points", "positive_points",
    "EfficientSamPredictor", "MaskMerger", "MaskPredictor", "SamReport", "SamUnavailable",
    "SegmentAnythingPredictor", "build_predictor", "known_model_types", "merge_masks", "register_predictor",
    "sam_refine", "sam_unavailable_reason",
]
