"""model.max_params refuses a launch before anything is written, naming both counts; FLOPs at the crop size."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "configs/stage1_baselines/demo_segformer_mit-b0_dubai.yaml"


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_max_params_refuses_the_launch_with_both_counts(tmp_path, monkeypatch):
    from mapsage.models.budget import ModelTooLarge
    from runners import jobs

    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(tmp_path / "ws"))
    with pytest.raises(ModelTooLarge) as err:
        jobs.launch(DEMO, ["model.max_params=1.82e6"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("model.max_params:")
    assert "1,820,000 (1.82 M)" in msg
    import re

    n = int(re.search(r"has ([0-9,]+) parameters", msg).group(1).replace(",", ""))
    assert n > 1_820_000
    assert not (tmp_path / "ws" / "runs").exists() or not any((tmp_path / "ws" / "runs").iterdir())
    # under the limit: the checks pass (nothing refused)
    jobs.check_launch(DEMO, [f"model.max_params={n}"])


def test_flops_at_crop_size_scale_with_pixels():
    from mapsage.config import load_config
    from mapsage.models.budget import model_facts

    small = model_facts(load_config(DEMO, ["augment.crop_size=[64, 64]"]))
    big = model_facts(load_config(DEMO, ["augment.crop_size=[128, 128]"]))
    assert small["model_params"] == big["model_params"] > 1e6
    assert small["flops_at"] == [64, 64]
    ratio = big["flops"] / small["flops"]
    assert 3.5 < ratio < 4.5, ratio          # 4x the pixels, about 4x the FLOPs
