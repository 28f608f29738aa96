"""Helpers for the store tests: real evaluation events (the metrics engine on real LoveDA masks against a
misregistered copy of themselves, the kind of error a real model makes along boundaries) and run folders written
the way the runner writes them."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from mapsage.config import load_config, save_resolved
from mapsage.events import EventWriter
from mapsage.workspace import run_dir

ROOT = Path(__file__).resolve().parents[2]
LOVEDA = ROOT / "tests" / "data" / "loveda"
LOVEDA_CONFIG = ROOT / "configs" / "stage1_baselines" / "segformer_mit-b2_loveda.yaml"
LOVEDA_CLASSES = ["background", "building", "road", "water", "barren", "forest", "agriculture"]


@lru_cache(maxsize=None)
def loveda_masks() -> tuple[tuple[str, str, np.ndarray], ...]:
    """(tile id, domain, class ids 0..6 / 255) of the three real LoveDA masks."""
    out = []
    for path in sorted(LOVEDA.glob("*/*/masks_png/*.png")):
        raw = np.array(Image.open(path)).astype(np.int16)
        ids = raw - 1
        ids[raw == 0] = 255
        out.append((f"{path.parent.parent.parent.name}/{path.parent.parent.name}/{path.stem}",
                    path.parent.parent.name, ids.astype(np.uint8)))
    return tuple(out)


def shifted_prediction(label: np.ndarray, shift: int) -> np.ndarray:
    """The label moved ``shift`` px right and down with roads thinned by 2 px (their edges taken for background),
    no-data pixels predicted as background (class 0): the errors of a real model along boundaries."""
    pred = np.roll(np.roll(label, shift, axis=1), shift // 2, axis=0).copy()
    road = pred == 2
    pred[road & ~ndimage.binary_erosion(road, iterations=2)] = 0
    pred[pred == 255] = 0
    return pred


@lru_cache(maxsize=None)
def loveda_metrics(shift: int):
    """SegMetrics over the three real masks with a prediction shifted by ``shift`` px."""
    from mapsage.metrics import SegMetrics

    m = SegMetrics(7, ignore_index=255, class_names=LOVEDA_CLASSES, boundary_px=3, keep_tiles=True)
    for tile, domain, label in loveda_masks():
        m.update(shifted_prediction(label, shift), label, tags={"domain": domain}, tile=tile)
    return m


def make_run(run_id: str, cfg_path: Path = LOVEDA_CONFIG, overrides: list[str] | None = None) -> EventWriter:
    """A run folder with a resolved config snapshot, as the runner creates it."""
    cfg = load_config(cfg_path, overrides or [])
    d = run_dir(run_id)
    save_resolved(cfg, d)
    return EventWriter(d)


def write_training(ev: EventWriter, shifts=(48, 24, 8), split: str = "val", with_final: bool = True) -> None:
    """A short training run's events: statuses, heartbeats with progress, scalars per epoch, a validation
    metrics + tiles record per epoch (prediction improving as the shift shrinks), an artifact, a final eval."""
    ev.status("queued")
    ev.emit("run_info", kind="train", plan_stage=1, gpus=["0"])
    ev.status("running")
    epochs = len(shifts)
    for epoch, shift in enumerate(shifts):
        m = loveda_metrics(shift)
        ev.scalars({"loss": 1.0 / (epoch + 1), "lr": 6e-5 * (epoch + 1) / epochs, "grad_norm": 0.5 + epoch},
                   epoch=epoch, step=(epoch + 1) * 10, split="train")
        m.write_events(ev, split=split, variant="ema", epoch=epoch)
        ev.heartbeat(epoch=epoch + 1, epochs=epochs, phase="val")
    ev.artifact("checkpoint", ev.run_dir / "checkpoints" / "last.pth", role="last")
    if with_final:
        m = loveda_metrics(shifts[-1])
        m.write_events(ev, split=split, variant="ema", epoch=None)
    ev.status("succeeded")
