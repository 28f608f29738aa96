"""Shared helpers for the refinement tests (imported by tests/test_refine_*.py; not a pytest conftest)."""
from __future__ import annotations

from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
LOVEDA = ROOT / "tests" / "data" / "loveda"
LOVEDA_TILES = {
    "train0": ("Train", "0"),
    "train1": ("Train", "1"),
    "val2": ("Val", "2"),
}
LOVEDA_CLASSES = ["background", "building", "road", "water", "barren", "forest", "agriculture"]
LOVEDA_PALETTE = ["#FFFFFF", "#FF0000", "#FFFF00", "#0000FF", "#9F81B7", "#00FF00", "#FFC380"]
DUBAI_CONFIG = ROOT / "configs" / "_base_" / "datasets" / "dubai.yaml"


@lru_cache(maxsize=None)
def loveda_tile(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [H,W,3], label uint8 [H,W] with classes 0..6 and 255 for LoveDA's no-data 0)."""
    split, stem = LOVEDA_TILES[name]
    image = np.array(Image.open(LOVEDA / split / "Rural" / "images_png" / f"{stem}.png").convert("RGB"))
    raw = np.array(Image.open(LOVEDA / split / "Rural" / "masks_png" / f"{stem}.png"))
    label = np.where(raw == 0, 255, raw.astype(np.int32) - 1).astype(np.uint8)
    return image, label


@lru_cache(maxsize=None)
def dubai_pair(index: int, split: str = "val") -> tuple[str, np.ndarray, np.ndarray]:
    """(tile id, image, label) of one bundled Dubai pair, decoded by mapsage.data (colour masks -> class ids)."""
    from mapsage.config import load_config
    from mapsage.data import build_dataset

    cfg = load_config(DUBAI_CONFIG)
    ds = build_dataset(cfg, split)
    image, label = ds.load_pair(index)
    return ds.samples[index].id, image, label


def tiny_sam(img_size: int = 256, dim: int = 32, seed: int = 0):
    """A segment_anything ``Sam`` with random weights and a tiny ViT: fast on CPU, real prompt/decoder code."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    emb = img_size // 16
    return Sam(
        image_encoder=ImageEncoderViT(depth=2, embed_dim=64, img_size=img_size, mlp_ratio=2.0,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=2, patch_size=16,
                                      qkv_bias=True, use_rel_pos=True, global_attn_indexes=[1], window_size=4,
                                      out_chans=dim),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(emb, emb),
                                     input_image_size=(img_size, img_size), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
                                 transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=32),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def blurred_probs(label: np.ndarray, num_classes: int, sigma: float) -> np.ndarray:
    """A blurred softmax map from a label: Gaussian-blurred one-hot (ignored pixels uniform), renormalised."""
    import cv2

    valid = label != 255
    onehot = np.stack([(label == c).astype(np.float32) for c in range(num_classes)])
    onehot[:, ~valid] = 1.0 / num_classes
    blurred = np.stack([cv2.GaussianBlur(o, (0, 0), sigma) for o in onehot])
    return blurred / blurred.sum(0, keepdims=True)
