"""The process-level allocator tuning every stage process applies (mapsage/runtime.py)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mapsage.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, env_extra: dict | None = None) -> str:
    env = {**os.environ, **(env_extra or {})}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_tune_allocator_applies_once_and_keeps_results_identical():
    # a fresh process: glibc takes the settings; a second call reports the same; inference output is unchanged
    out = _run("""
        import torch
        from mapsage.runtime import tune_allocator
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(3, 7, 3, padding=1).eval()
        x = torch.randn(2, 3, 256, 256)
        with torch.inference_mode():
            before = conv(x)
        first = tune_allocator(True)
        with torch.inference_mode():
            after = conv(x)
        print(first == tune_allocator(True), torch.equal(before, after))
        print(first)
    """)
    same, line = out.splitlines()
    assert same == "True True"
    if sys.platform.startswith("linux"):
        assert line.startswith("allocator: glibc heap for blocks up to") and "MiB" in line


def test_tune_allocator_off_and_environment_respected():
    assert _run("from mapsage.runtime import tune_allocator; print(tune_allocator(False))") == \
        "allocator: glibc defaults (runtime.keep_freed_memory: false)"
    if sys.platform.startswith("linux"):
        out = _run("from mapsage.runtime import tune_allocator; print(tune_allocator(True))",
                   {"MALLOC_MMAP_THRESHOLD_": "65536"})
        assert "set in the environment" in out


def test_config_key_validated():
    cfg = load_config(ROOT / "configs/stage1_baselines/demo_segformer_mit-b0_dubai.yaml",
                      ["runtime.keep_freed_memory=false"])
    assert cfg.runtime.keep_freed_memory is False
    with pytest.raises(ConfigError, match="keep_freed_memory"):
        load_config(ROOT / "configs/stage1_baselines/demo_segformer_mit-b0_dubai.yaml",
                    ["runtime.keep_freed_memry=false"])
