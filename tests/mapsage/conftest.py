"""Fixtures of the library's tests: torch on one thread, and a real LoveDA label crop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mapsage.data import load_mask
from tests.support.paths import LOVEDA_ROOT
from tests.support.train import tiny_cfg


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine run fastest (and steadiest) on one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def loveda_mask_crop() -> torch.Tensor:
    """A real LoveDA label crop [2,128,128] (class ids 0..6 and 255), from the bundled sample tiles."""
    cfg = tiny_cfg()
    root = LOVEDA_ROOT / "Train" / "Rural" / "masks_png"
    crops = []
    for name in ("0.png", "1.png"):
        m = np.asarray(load_mask(root / name, cfg.dataset))
        crops.append(torch.from_numpy(m[:512:4, :512:4].astype(np.int64)))   # 128x128, nearest
    return torch.stack(crops)
