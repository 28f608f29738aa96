"""Fixtures of the training-engine tests (models, losses, train). Imported by tests/test_models*.py,
tests/test_losses*.py and tests/test_train*.py."""
from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
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


