"""train.max_time: a training run over its wall-clock budget stops at the next step with a resumable last.pth and
ends succeeded, saying why in its log."""
from __future__ import annotations

import pytest

from tests.support.app import DEMO, QUICK, run_in_process


@pytest.mark.slow
def test_max_time_stops_gracefully_with_a_checkpoint(tmp_path, monkeypatch):
    import torch

    import store
    from mapsage.train.checkpoint import load_checkpoint
    from mapsage.workspace import run_dir

    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(tmp_path / "ws"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rid = run_in_process(DEMO, QUICK + ["train.epochs=500", "train.max_time=0.0025"])   # 9 s
    finally:
        torch.set_num_threads(threads)
    assert store.run(rid)["status"] == "succeeded"
    logs = store.logs(rid)
    msg = [m for m in logs["message"] if m.startswith("train.max_time reached")]
    assert msg and "checkpoints/last.pth" in msg[0]
    ck = load_checkpoint(run_dir(rid) / "checkpoints" / "last.pth")
    assert ck["epoch"] < 499
