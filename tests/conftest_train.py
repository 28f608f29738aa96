"""Fixtures of the training-engine tests (models, losses, train). Imported by tests/test_models*.py,
tests/test_losses*.py and tests/test_train*.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOVEDA_CFG = PROJECT_ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_loveda-samples.yaml"
DUBAI_CFG = PROJECT_ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml"

# A tiny but real recipe on the three LoveDA sample tiles: 64 px crops, 2 steps per epoch, validation on the one
# Val tile with 512 px windows (4 per tile).
TINY = [
    "train.batch_size=2", "train.steps_per_epoch=2", "train.num_workers=0", "train.log_every=1",
    "train.lr=6.0e-4", "train.warmup_epochs=0.5", "augment.crop_size=[64,64]", "augment.scale_range=[0.25,0.5]",
    "eval.mode=slide", "eval.tile=[512,512]", "eval.stride=[512,512]", "runtime.device=cpu",
    "train.early_stop.patience=0",
]


def tiny_cfg(*overrides: str, base: Path = LOVEDA_CFG):
    from mapsage.config import load_config
    return load_config(base, [*TINY, *overrides])


@pytest.fixture
def loveda_mask_crop() -> torch.Tensor:
    """A real LoveDA label crop [2,128,128] (class ids 0..6 and 255), from the bundled sample tiles."""
    from mapsage.data import load_mask
    cfg = tiny_cfg()
    root = PROJECT_ROOT / "tests" / "data" / "loveda" / "Train" / "Rural" / "masks_png"
    crops = []
    for name in ("0.png", "1.png"):
        m = np.asarray(load_mask(root / name, cfg.dataset))
        crops.append(torch.from_numpy(m[:512:4, :512:4].astype(np.int64)))   # 128x128, nearest
    return torch.stack(crops)


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine run fastest (and steadiest) on one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
