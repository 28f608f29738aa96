"""Helpers for the inference tests (imported by tests/test_infer*.py; not a conftest plugin).

Real images come from the bundled Dubai demo set, normalised with ImageNet statistics (the mean/std mit_b0 was
pretrained with); the models are small random-init SegFormers or hand-written modules with known outputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DUBAI_ROOT = PROJECT_ROOT / "data" / "demo" / "dubai-aerial" / "Semantic segmentation dataset"
DUBAI_CONFIG = PROJECT_ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def dubai_image_path(tile: int = 1, part: int = 1) -> Path:
    return DUBAI_ROOT / f"Tile {tile}" / "images" / f"image_part_{part:03d}.jpg"


def dubai_rgb(tile: int = 1, part: int = 1) -> np.ndarray:
    with Image.open(dubai_image_path(tile, part)) as im:
        return np.asarray(im.convert("RGB"))


def normalise(rgb: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (x - mean) / std


def dubai_tensor(tile: int = 1, part: int = 1, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A real Dubai image as a normalised [1,3,H,W] tensor, optionally cropped to ``size`` (top-left)."""
    rgb = dubai_rgb(tile, part)
    if size is not None:
        rgb = rgb[:size[0], :size[1]]
    return normalise(rgb).unsqueeze(0)


def tiny_segformer(num_classes: int = 5, seed: int = 0) -> nn.Module:
    import segmentation_models_pytorch as smp

    torch.manual_seed(seed)
    return smp.Segformer("mit_b0", encoder_weights=None, classes=num_classes).eval()


class PointwiseModel(nn.Module):
    """logits[c] = a_c · x + b_c per pixel (a 1×1 conv): translation- and flip-equivariant, no context."""

    output_stride = 1

    def __init__(self, num_classes: int = 5, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, num_classes, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=g))

    def forward(self, x):
        return self.conv(x)


class SymmetricConvModel(nn.Module):
    """A 3-layer conv net whose kernels are symmetric left-right and top-bottom: exactly flip-equivariant
    (with zero padding) up to floating-point summation order."""

    output_stride = 1

    def __init__(self, num_classes: int = 5, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.c1 = nn.Conv2d(3, 8, 5, padding=2)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, num_classes, 3, padding=1)
        with torch.no_grad():
            for conv in (self.c1, self.c2, self.c3):
                w = torch.randn(conv.weight.shape, generator=g)
                w = (w + w.flip(-1)) / 2
                w = (w + w.flip(-2)) / 2
                conv.weight.copy_(w)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))

    def forward(self, x):
        return self.c3(torch.relu(self.c2(torch.relu(self.c1(x)))))


class WindowMeanModel(nn.Module):
    """Known output that depends on the window's content: every pixel of a window gets, per class c,
    ``mean(window channel c % 3) + c`` — so overlapping windows disagree and the averaging can be checked."""

    output_stride = 1

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.num_classes = num_classes
        self.calls: list[tuple] = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        b, _, h, w = x.shape
        means = x.mean(dim=(2, 3))  # [B,3]
        out = torch.stack([means[:, c % 3] + c for c in range(self.num_classes)], dim=1)  # [B,C]
        return out[:, :, None, None].expand(b, self.num_classes, h, w).contiguous()


class LowResModel(nn.Module):
    """Returns logits at 1/4 of the input resolution (average-pooled pointwise logits), as a dict."""

    output_stride = 4

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.inner = PointwiseModel(num_classes)

    def forward(self, x):
        return {"seg": nn.functional.avg_pool2d(self.inner(x), 4)}


def eval_cfg(**kw):
    """An EvalCfg from the schema with overrides (tta as a dict is accepted)."""
    from mapsage.config.schema import EvalCfg, TTACfg

    tta = kw.pop("tta", None)
    cfg = EvalCfg(**kw)
    if tta is not None:
        cfg.tta = TTACfg(**tta) if isinstance(tta, dict) else tta
    return cfg


def write_checkpoint(cfg, path: Path, seed: int = 0, best: dict | None = None, ema_seed: int | None = None) -> Path:
    """A workbench checkpoint (docs/INTERFACES.md format) of a randomly initialised model of ``cfg``, written
    with the training engine's own writer, so mapsage.train.checkpoint.load_for_inference reads it."""
    from mapsage.config import to_dict
    from mapsage.models import build_model
    from mapsage.train.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = build_model(cfg, load_pretrained=False)
    ema = None
    if ema_seed is not None:
        torch.manual_seed(ema_seed)
        ema = build_model(cfg, load_pretrained=False).state_dict()
    return save_checkpoint(path, {"model": model.state_dict(), "ema": ema, "optimizer": None, "scheduler": None,
                                  "scaler": None, "epoch": 0, "global_step": 0, "best": best or {},
                                  "config": to_dict(cfg), "rng": None,
                                  "kind": "best_ema" if "ema" in Path(path).stem else "best"})


def fake_finished_run(workspace: Path, run_id: str, cfg, source: str, status: str = "succeeded",
                      ts: float | None = None) -> Path:
    """A run folder as the runner leaves it (config.yaml with its template source, a final status) — the
    checkpoints are added by the caller with write_checkpoint."""
    import json
    import time

    import yaml

    from mapsage.config import to_dict

    folder = workspace / "runs" / run_id
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    data = to_dict(cfg)
    data["meta"] = {"source": source}
    (folder / "config.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    rec = {"seq": 0, "ts": ts if ts is not None else time.time(), "type": "status", "status": status,
           "message": "", "traceback": None}
    (folder / "events.jsonl").write_text(json.dumps(rec) + "\n", encoding="utf-8")
    return folder
