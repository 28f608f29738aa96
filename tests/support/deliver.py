"""Helpers for the delivery tests (predict, submissions, GeoTIFF/COG, polygons; not a conftest plugin).

``checkpoint_run`` writes a run folder as a training run leaves it (``config.yaml``, ``events.jsonl`` ending
``succeeded``, ``checkpoints/best.pth``) holding a random-init SegFormer-B0 of the LoveDA sample config, so
``predict`` has a real workbench checkpoint to load. ``loveda_test_layout`` copies the three bundled LoveDA tiles
into LoveDA's official Test layout (``Test/{Urban,Rural}/images_png``, no masks). ``georeferenced_tile`` writes a
bundled LoveDA tile as a GeoTIFF with a made-up georeference, documented here:

* CRS EPSG:32633 (WGS 84 / UTM zone 33N), pixel size 0.3 m (LoveDA's ground sampling distance), north up,
  upper-left corner at easting 500000 m, northing 5000000 m. The place is invented: the tile's real location is
  not published."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOVEDA = PROJECT_ROOT / "tests" / "data" / "loveda"
LOVEDA_CONFIG = PROJECT_ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_loveda-samples.yaml"
LOVEDA_TILES = [LOVEDA / "Train" / "Rural" / "images_png" / "0.png", LOVEDA / "Train" / "Rural" / "images_png" / "1.png",
                LOVEDA / "Val" / "Rural" / "images_png" / "2.png"]
MADE_UP_CRS = "EPSG:32633"
MADE_UP_ORIGIN = (500000.0, 5000000.0)
MADE_UP_PIXEL_M = 0.3


def checkpoint_run(run_id: str = "train_loveda-samples_fixture", overrides: list[str] | None = None,
                   seed: int = 0) -> str:
    """A succeeded 'training' run in the current workspace with ``checkpoints/best.pth`` (random init)."""
    import torch

    from mapsage.config import load_config, save_resolved, to_dict
    from mapsage.events import EventWriter
    from mapsage.models import build_model
    from mapsage.train.checkpoint import save_checkpoint
    from mapsage.workspace import run_dir

    cfg = load_config(LOVEDA_CONFIG, list(overrides or []))
    torch.manual_seed(seed)
    model = build_model(cfg, load_pretrained=False)
    rdir = run_dir(run_id)
    save_resolved(cfg, rdir)
    save_checkpoint(rdir / "checkpoints" / "best.pth",
                    {"model": model.state_dict(), "ema": None, "epoch": 0, "global_step": 1,
                     "best": {"raw": 0.1}, "config": to_dict(cfg)})
    ev = EventWriter(rdir)
    ev.emit("run_info", name=run_id, kind="train", plan_stage=1, dataset=cfg.dataset.name, created_at=time.time())
    ev.status("succeeded")
    return run_id


def loveda_test_layout(root: Path) -> Path:
    """A LoveDA root with the bundled tiles as ``Test/Urban/images_png/4191.png`` and
    ``Test/Rural/images_png/{5167,5168}.png`` (ids as LoveDA's Test ids look; no masks) plus the labelled
    Train/Val folders, returned as the dataset root."""
    root = Path(root)
    for split in ("Train", "Val"):
        shutil.copytree(LOVEDA / split, root / split)
    names = [("Urban", "4191"), ("Rural", "5167"), ("Rural", "5168")]
    for src, (domain, stem) in zip(LOVEDA_TILES, names):
        dst = root / "Test" / domain / "images_png" / f"{stem}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    return root


def georeferenced_tile(path: Path, tile: Path = LOVEDA_TILES[0], crs: str | None = MADE_UP_CRS,
                       dtype: str = "uint8", scale: float = 1.0, nodata=None) -> Path:
    """A bundled LoveDA tile as a GeoTIFF with the made-up georeference of the module doc."""
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin

    with Image.open(tile) as im:
        rgb = np.asarray(im.convert("RGB"))
    data = (np.moveaxis(rgb, -1, 0).astype(np.float64) * scale).astype(dtype)
    profile = {"driver": "GTiff", "height": rgb.shape[0], "width": rgb.shape[1], "count": 3, "dtype": dtype,
               "transform": from_origin(*MADE_UP_ORIGIN, MADE_UP_PIXEL_M, MADE_UP_PIXEL_M)}
    if crs:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path
