"""Helpers for the health-check tests (imported by tests/test_health*.py; not a conftest plugin).

Everything runs on the real data: the bundled Dubai set (72 pairs, RGB and palette-mode colour masks) and the three
real LoveDA tiles under tests/data/loveda. Bad cases are built from that data (copied masks re-encoded, a tile
copied into another split) or injected into a HealthRun (a wrong metrics engine, a model that cannot learn, a
transform that moves only the image)."""
from __future__ import annotations

import copy
from pathlib import Path

from mapsage.config import load_config
from mapsage.health.context import HealthRun

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DUBAI_ROOT = PROJECT_ROOT / "data" / "demo" / "dubai-aerial" / "Semantic segmentation dataset"
HEALTH_DUBAI = PROJECT_ROOT / "configs" / "stage0_health" / "health_dubai.yaml"
HEALTH_LOVEDA = PROJECT_ROOT / "configs" / "stage0_health" / "health_loveda_samples.yaml"

# keep the unit tests quick: a cap on masks scanned, few alignment draws, a small quick evaluation
FAST = ["health.scan_max_masks=16", "health.alignment_trials=4", "health.quick_eval_tiles=2"]


def dubai_cfg(*overrides: str):
    return load_config(HEALTH_DUBAI, [*FAST, *overrides])


def loveda_cfg(*overrides: str):
    return load_config(HEALTH_LOVEDA, [*FAST, *overrides])


def health_run(cfg, tmp_path: Path, **inject) -> HealthRun:
    out = tmp_path / "run"
    return HealthRun(cfg=copy.deepcopy(cfg), out_dir=out / "health", run_dir=out, **inject)


