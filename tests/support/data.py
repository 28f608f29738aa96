"""Shared helpers of the data and config tests (imported by tests/test_data_*.py; not a pytest conftest)."""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DUBAI_CONFIG = ROOT / "configs/stage1_baselines/demo_segformer_mit-b0_dubai.yaml"
LOVEDA_CONFIG = ROOT / "configs/stage1_baselines/demo_segformer_mit-b0_loveda-samples.yaml"
DUBAI_ROOT = ROOT / "data/demo/dubai-aerial/Semantic segmentation dataset"
LOVEDA_ROOT = ROOT / "tests/data/loveda"

# ../shared/data/README.md: share of all mask pixels, in percent, for the 72 Dubai pairs
DUBAI_README_SHARES = {"land": 52.4, "water": 13.6, "building": 13.3, "vegetation": 10.3, "road": 9.4}
DUBAI_README_IGNORED = {"#9B9B9B": 0.5, "#000000": 0.6}
DUBAI_COLOURS = {"#E2A929": "water", "#8429F6": "land", "#6EC1E4": "road", "#3C1098": "building",
                 "#FEDD3A": "vegetation"}
LOVEDA_CLASSES = ["background", "building", "road", "water", "barren", "forest", "agriculture"]


def dubai_cfg(*overrides: str):
    from mapsage.config import load_config
    return load_config(DUBAI_CONFIG, list(overrides))


def loveda_cfg(*overrides: str):
    from mapsage.config import load_config
    return load_config(LOVEDA_CONFIG, list(overrides))


@functools.lru_cache(maxsize=1)
def dubai_full_scan():
    """Scan all 72 Dubai pairs once per test session: (dataset over every tile, list of SampleScan)."""
    from mapsage.data import build_dataset, scan_dataset
    cfg = dubai_cfg("dataset.split.ratios={all: 1.0}")
    ds = build_dataset(cfg, "all", cache_mb=0)
    return ds, scan_dataset(ds, verify_images=False)


def copy_dubai_tiles(dst: Path, tiles=("Tile 2",), parts=None) -> Path:
    """Copy some real Dubai tiles (all parts, or the given part numbers) into ``dst`` keeping the layout."""
    root = dst / "Semantic segmentation dataset"
    for tile in tiles:
        for sub, ext in (("images", ".jpg"), ("masks", ".png")):
            (root / tile / sub).mkdir(parents=True, exist_ok=True)
            for f in sorted((DUBAI_ROOT / tile / sub).glob(f"*{ext}")):
                if parts is None or int(f.stem.rsplit("_", 1)[1]) in parts:
                    shutil.copy2(f, root / tile / sub / f.name)
    return root


def copy_loveda(dst: Path) -> Path:
    root = dst / "loveda"
    shutil.copytree(LOVEDA_ROOT, root)
    return root


def boundary_band(mask: np.ndarray, px: int) -> np.ndarray:
    """Pixels within ``px`` of a label change (any 8-neighbour with a different value)."""
    import cv2
    k = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    hi = cv2.dilate(mask, k)
    lo = cv2.erode(mask, k)
    return hi != lo
