"""Faults on real (tiny) training runs through the job system: a SIGKILL at a random step loses no more than the
checkpoint interval and resumes; a run killed before any checkpoint restarts under its own run id; a workspace on
a disk too small for a checkpoint ends the run ``failed`` naming the disk, leaves no temporary file, and every read
command keeps working."""
from __future__ import annotations

import errno
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from mapsage.events import EVENTS_FILE, read_events
from runners import api, cli, jobs

ROOT = Path(__file__).resolve().parents[2]
LOVEDA = ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_loveda-samples.yaml"
TINY = ["train.batch_size=2", "train.num_workers=0", "train.log_every=1", "augment.crop_size=[64,64]",
        "augment.scale_range=[0.25,0.5]", "eval.mode=slide", "eval.tile=[512,512]", "eval.stride=[512,512]",
        "runtime.device=cpu", "train.early_stop.patience=0", "runtime.gpus=0"]

pytestmark = pytest.mark.slow


def _events(rid: str) -> list[dict]:
    from mapsage.workspace import run_dir

    return read_events(run_dir(rid) / EVENTS_FILE)[0]


def _worker_pid(rid: str, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [r["pid"] for r in _events(rid) if r["type"] == "run_info" and r.get("pid")]
        if pids:
            return pids[-1]
        time.sleep(0.05)
    raise AssertionError(f"run {rid} never started: {jobs.log_tail(rid, 30)}")


def _last_step(rid: str) -> int:
    steps = [r["step"] for r in _events(rid) if r["type"] == "scalars" and r.get("split") == "train"]
    return max(steps) if steps else 0


def _final_after(rid: str, since: float, timeout: float) -> tuple[dict | None, float]:
    """Poll the event file only (no scheduler, no store: nobody 'reads' the run) for a final status."""
    while time.monotonic() - since < timeout:
        finals = [r for r in _events(rid) if r["type"] == "status"
                  and r["status"] in ("succeeded", "failed", "cancelled", "died")]
        if finals:
            return finals[-1], time.monotonic() - since
        time.sleep(0.02)
    return None, time.monotonic() - since


def test_sigkill_at_a_random_step_loses_at_most_the_interval_and_resumes(tmp_workspace, capsys):
    interval, steps, epochs = 3, 6, 3
    # a different step on every run of the test, after the first mid-epoch checkpoint (a kill before it is the
    # restart case below)
    kill_at = random.Random().randint(interval + 1, epochs * steps - 2)
    rid = api.launch(LOVEDA, [*TINY, f"train.epochs={epochs}", f"train.steps_per_epoch={steps}",
                              f"train.checkpoint_every_steps={interval}", "train.checkpoint_every_min=0",
                              f"train.val_every={epochs}"])
    pid = _worker_pid(rid)
    deadline = time.monotonic() + 300
    while _last_step(rid) < kill_at and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    done = _last_step(rid)                           # steps finished when the kill landed (scalars are fsync'ed)
    status, delay = _final_after(rid, killed, 30)
    assert status is not None and status["status"] == "died", status
    from mapsage.workspace import run_dir

    ckpt = torch.load(run_dir(rid) / "checkpoints" / "last.pth", map_location="cpu", weights_only=True)
    lost = done - ckpt["global_step"]
    with capsys.disabled():
        print(f"\nSIGKILL after global step {done} (target {kill_at}) of {epochs * steps}; last.pth at step "
              f"{ckpt['global_step']} (epoch {ckpt['epochs_done']} + {ckpt['step_in_epoch']} steps): {lost} "
              f"step(s) lost, interval {interval}; died recorded {delay:.2f} s after the kill with no reader")
    assert 0 <= lost <= interval
    assert delay < 30 and "SIGKILL" in status["message"]
    assert not list((run_dir(rid) / "checkpoints").glob(".*.tmp*"))
    # resume from the mid-epoch checkpoint, to the end
    capsys.readouterr()
    assert cli.main(["runs", "resume", rid, "--wait"]) == 0, jobs.log_tail(rid, 40)
    new = capsys.readouterr().out.strip().splitlines()[0]
    steps_new = [r["step"] for r in _events(new) if r["type"] == "scalars" and r.get("split") == "train"]
    assert steps_new[0] == ckpt["global_step"] + 1 and steps_new[-1] == epochs * steps
    final = torch.load(run_dir(new) / "checkpoints" / "last.pth", map_location="cpu", weights_only=True)
    assert final["epochs_done"] == epochs and final["global_step"] == epochs * steps


def test_run_killed_before_any_checkpoint_restarts_under_its_run_id(tmp_workspace):
    rid = api.launch(LOVEDA, [*TINY, "train.epochs=1", "train.steps_per_epoch=3", "train.checkpoint_every_steps=0",
                              "train.checkpoint_every_min=0"])
    pid = _worker_pid(rid)
    deadline = time.monotonic() + 300
    while _last_step(rid) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    status, _ = _final_after(rid, time.monotonic(), 30)
    assert status["status"] == "died"
    from mapsage.workspace import run_dir

    assert not list((run_dir(rid) / "checkpoints").glob("*.pth"))
    assert api.resume(rid) == rid                       # no new run: the same id, queued again
    assert api.wait(rid, timeout=300) == "succeeded", jobs.log_tail(rid, 40)
    statuses = [r["status"] for r in _events(rid) if r["type"] == "status"]
    assert statuses[-4:] == ["died", "queued", "running", "succeeded"]
    assert (run_dir(rid) / "checkpoints" / "last.pth").is_file()


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` to the last byte."""
    filler = folder / "filler.bin"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    try:
        with open(filler, "ab") as fh:
            while True:
                fh.write(b"\0")
                fh.flush()
    except OSError:
        pass
    return filler


def test_disk_full_fails_the_run_naming_the_disk_and_reads_keep_working(small_disk, monkeypatch, capsys):
    ws = small_disk / "workspace"
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(ws))
    # the model's checkpoint (weights, EMA, optimiser: about 45 MB) cannot fit on the 20 MB disk
    rid = api.launch(LOVEDA, [*TINY, "train.epochs=1", "train.steps_per_epoch=3", "train.checkpoint_every_steps=1"])
    status = api.wait(rid, timeout=300)
    st = api.status(rid)
    with capsys.disabled():
        print(f"\nfinal status {status}: {st['message']}")
    assert status == "failed", jobs.log_tail(rid, 40)
    m = re.search(r"disk full in (\S+): ([\d.]+) MB free, ([\d.]+) MB needed", st["message"])
    assert m and m.group(1) == str(ws / "runs" / rid / "checkpoints"), st["message"]
    assert float(m.group(2)) < float(m.group(3))
    leftovers = [p for p in (ws / "runs" / rid).rglob("*") if ".tmp" in p.name]
    assert leftovers == []
    # now the disk is full to the last byte: every read command still answers
    filler = _fill(small_disk)
    capsys.readouterr()
    assert cli.main(["runs", "list"]) == 0
    out = capsys.readouterr().out
    assert rid in out and "failed" in out
    assert cli.main(["runs", "show", rid]) == 0
    assert "disk full in" in capsys.readouterr().out
    assert cli.main(["runs", "show", rid, "--json"]) == 0
    capsys.readouterr()
    assert cli.main(["runs", "wait", rid]) == 1
    err = capsys.readouterr().err
    assert "disk full in" in err and "Traceback" not in err
    code = cli.main(["runs", "ingest"])
    captured = capsys.readouterr()
    with capsys.disabled():
        print(f"\n`mapsage runs ingest` on the full disk: exit {code}: {captured.out.strip()} {captured.err.strip()}")
    assert "Traceback" not in captured.err
    # a launch on the full disk fails at once, in one line that names the disk
    code = cli.main(["run", str(LOVEDA), *sum((["--set", o] for o in TINY), [])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "disk full in" in err, err
    filler.unlink()
    # with space again, the store is created cleanly (no half-made file from the full-disk attempts) and holds the run
    capsys.readouterr()
    assert cli.main(["runs", "list"]) == 0
    out = capsys.readouterr().out
    assert rid in out and "failed" in out
