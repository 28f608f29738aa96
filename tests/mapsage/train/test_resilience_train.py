"""Checkpoints that load without unpickling, mid-epoch checkpoints resumed exactly, stale temporary files."""
from __future__ import annotations

import os

import pytest
import torch

from mapsage.events import EventWriter, read_events
from mapsage.train import Trainer
from mapsage.train import checkpoint as ck
from tests.support.train import tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def test_checkpoint_loads_with_weights_only_and_mid_epoch_resume_is_exact(tmp_path):
    steps = "train.steps_per_epoch=4"
    cfg = tiny_cfg("train.epochs=2", steps, "train.checkpoint_every_steps=3", "train.ema.enabled=true")
    full = tmp_path / "full"
    Trainer(cfg, run_dir=full, events=EventWriter(full), validate=False, show_bar=False).fit()
    # every checkpoint the engine writes opens with weights_only=True (no numpy or other pickled objects)
    last = torch.load(full / "checkpoints" / "last.pth", map_location="cpu", weights_only=True)
    assert last["format"] == ck.FORMAT and last["epochs_done"] == 2 and last["global_step"] == 8
    arts = [r for r in read_events(full / "events.jsonl")[0] if r["type"] == "artifact"]
    mids = [a["meta"].get("step_in_epoch") for a in arts if a["meta"] and a["meta"].get("step_in_epoch")]
    assert mids == [3, 2]            # global steps 3 and 6: epoch 0 step 3, epoch 1 step 2

    # the same run stopped right after the mid-epoch checkpoint of global step 6, then resumed from it
    part = tmp_path / "part"
    calls = {"n": 0}
    trainer = Trainer(cfg, run_dir=part, events=EventWriter(part), validate=False, show_bar=False)
    orig = trainer._save

    def save_then_die(name, state, **meta):
        path = orig(name, state, **meta)
        if meta.get("step_in_epoch") == 2:
            calls["n"] += 1
            raise KeyboardInterrupt        # a kill right after the checkpoint
        return path

    trainer._save = save_then_die
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    mid = ck.load_checkpoint(part / "checkpoints" / "last.pth")
    assert (mid["epochs_done"], mid["step_in_epoch"], mid["global_step"]) == (1, 2, 6)
    resumed = Trainer(cfg, run_dir=part, events=EventWriter(part), validate=False, show_bar=False)
    out = resumed.fit(resume_from=part / "checkpoints" / "last.pth")
    assert out["global_step"] == 8
    a = torch.load(full / "checkpoints" / "last.pth", weights_only=True)
    b = torch.load(part / "checkpoints" / "last.pth", weights_only=True)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k       # bit-identical to the uninterrupted run
    for k, v in a["ema"].items():
        assert torch.equal(v, b["ema"][k]), k


def test_stale_temp_checkpoints_are_removed(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    dead = 2 ** 22 + 12345                     # above pid_max defaults: no such process
    stale = folder / f".last.pth.tmp{dead}"
    stale.write_bytes(b"x" * 1000)
    mine = folder / f".best.pth.tmp{os.getpid()}"
    mine.write_bytes(b"y")
    ck.save_checkpoint(folder / "last.pth", {"model": {"w": torch.zeros(2)}})
    assert not stale.exists() and mine.exists()
    assert sorted(p.name for p in folder.iterdir()) == [mine.name, "last.pth"]


def test_checkpoint_write_that_runs_out_of_space_leaves_no_temp_file(tmp_path, monkeypatch):
    """The free-space pre-check fooled (another writer fills the disk meanwhile): torch.save fails mid-write, the
    half-written temporary file is removed and the error names the disk."""
    import subprocess

    from mapsage import diskspace
    from mapsage.errors import DiskFullError

    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs (needs root)")
    try:
        real = diskspace.free_mb
        calls = {"n": 0}

        def fooled(path):
            calls["n"] += 1
            return 1e6 if calls["n"] == 1 else real(path)

        monkeypatch.setattr(diskspace, "free_mb", fooled)
        with pytest.raises(DiskFullError, match=r"disk full in .*disk/checkpoints: [\d.]+ MB free, 8\.0 MB needed"):
            ck.save_checkpoint(mnt / "checkpoints" / "last.pth", {"model": {"w": torch.zeros(2 * 2**20)}})
        assert list((mnt / "checkpoints").iterdir()) == []          # no temp file, no last.pth
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
