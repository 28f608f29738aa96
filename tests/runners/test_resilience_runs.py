"""Run ids stay inside workspace/runs (CLI, API, app query parameters), cancel signals only process groups the
scheduler started, two writers of one event file never share a sequence number, and a killed job is marked
``died`` by its supervisor with nobody reading."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mapsage.events import EVENTS_FILE, EventWriter, read_events
from mapsage.runids import RunIdError
from runners import api, cli, procs, scheduler

ROOT = Path(__file__).resolve().parents[2]
DUBAI_BASE = ROOT / "configs" / "_base_" / "datasets" / "dubai.yaml"


def _demo_cfg(tmp_path, steps: int = 1, seconds: float = 0.05) -> Path:
    path = tmp_path / "demo_job.yaml"
    path.write_text(f"_base_: ['{DUBAI_BASE}']\n"
                    f"stage: {{kind: demo_job, plan_stage: 0, title: demo, name: demo, demo_steps: {steps}, "
                    f"demo_step_seconds: {seconds}}}\nruntime: {{gpus: 0}}\n")
    return path


def _one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture
def sleeper():
    """A process in its own session that the scheduler never started (what a crafted job file points at)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    yield p
    p.kill()
    p.wait()


def _crafted_run(ws: Path, name: str, sleeper) -> Path:
    rdir = ws / "runs" / name
    rdir.mkdir(parents=True)
    (rdir / "config.yaml").write_text("stage: {kind: demo_job}\n")
    EventWriter(rdir).status("running", message="crafted")
    (rdir / "job.json").write_text(json.dumps({"pid": sleeper.pid, "pgid": sleeper.pid, "host": procs.HOST,
                                               "ticks": procs.start_ticks(sleeper.pid)}))
    return rdir


def test_traversal_through_cli_api_and_app_is_refused(tmp_workspace, tmp_path, capsys, sleeper):
    rid = api.launch(_demo_cfg(tmp_path))
    assert api.wait(rid, timeout=60) == "succeeded"
    other = tmp_path / "other" / "runs" / "foreign_run"
    other.mkdir(parents=True)
    EventWriter(other).status("succeeded", message="another workspace's run")
    (other / "config.yaml").write_text("stage: {kind: demo_job}\n")
    (tmp_workspace / "runs" / "link").symlink_to(other)          # a symlink out of the workspace

    # CLI: every command that takes a run id
    for argv in (["runs", "show", "../../other/runs/foreign_run"], ["runs", "logs", "../" + rid],
                 ["runs", "cancel", "../../evil"], ["runs", "resume", str(other)], ["runs", "wait", ".."]):
        _one_line_error(capsys, cli.main(argv), "is not a run id")
    _one_line_error(capsys, cli.main(["runs", "show", "link"]), "leads outside", "refused")
    assert cli.main(["runs", "show", rid]) == 0
    capsys.readouterr()

    # API
    for bad in ("../x", "/etc", "..", "a/b", "link", "", "run*"):
        for call in (api.status, api.logs, api.cancel, api.resume, api.run, api.scalars, api.find_checkpoint):
            with pytest.raises(RunIdError):
                call(bad)
    # the store never ingests the symlinked folder
    import store

    store.ingest_all()
    assert set(store.list_runs()["run_id"]) == {rid}

    # cancel of a crafted run folder: the recorded process is not one the scheduler started -> nothing signalled
    _crafted_run(tmp_workspace, "evil_job", sleeper)
    _one_line_error(capsys, cli.main(["runs", "cancel", "evil_job", "--grace", "0.5"]), "not a job the scheduler",
                    "nothing was signalled")
    state = scheduler.load_state()
    state["active"]["evil_state"] = {"pid": sleeper.pid, "pgid": sleeper.pid, "host": procs.HOST,
                                     "ticks": procs.start_ticks(sleeper.pid), "gpus": [], "started_at": time.time()}
    _crafted_run(tmp_workspace, "evil_state", sleeper)
    with scheduler.scheduler_lock():
        scheduler.save_state(state)
    _one_line_error(capsys, cli.main(["runs", "cancel", "evil_state", "--grace", "0.5"]), "not the job the "
                    "scheduler started")
    time.sleep(0.3)
    assert sleeper.poll() is None                  # still running: no SIGTERM, no SIGKILL reached it

    # app: ?run= / ?runs= values that are not run ids are dropped with a warning, never used as paths
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=120)
    at.run()
    at.query_params["run"] = "../../other/runs/foreign_run"
    at.switch_page("views/run_detail.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    warnings = " ".join(w.value for w in at.warning)
    assert "not run ids" in warnings and "../../other/runs/foreign_run" in warnings
    assert at.selectbox[0].value in {rid, "evil_job", "evil_state"}     # a run of this workspace


def _writer(path: str, n: int, tag: str) -> None:
    w = EventWriter(path, fsync=False)
    for i in range(n):
        w.emit("log", message=f"{tag}{i}")


def test_two_writers_of_one_event_file_never_share_a_sequence_number(tmp_path):
    EventWriter(tmp_path).status("running")
    ctx = mp.get_context("fork")
    procs_ = [ctx.Process(target=_writer, args=(str(tmp_path), 300, tag)) for tag in ("job-", "supervisor-")]
    for p in procs_:
        p.start()
    w = EventWriter(tmp_path, fsync=False)          # and a third writer in this process, created before they end
    for i in range(100):
        w.emit("log", message=f"main{i}")
    for p in procs_:
        p.join(60)
        assert p.exitcode == 0
    records, _ = read_events(tmp_path / EVENTS_FILE)
    seqs = [r["seq"] for r in records]
    assert len(records) == 1 + 300 + 300 + 100
    assert sorted(seqs) == list(range(len(records)))       # unique and gap-free
    assert seqs == sorted(seqs)                             # in file order


def test_killed_job_is_marked_died_within_seconds_with_no_reader(tmp_workspace, tmp_path):
    rid = api.launch(_demo_cfg(tmp_path, steps=400, seconds=0.05))
    path = tmp_workspace / "runs" / rid / EVENTS_FILE
    deadline = time.monotonic() + 60
    worker = None
    while time.monotonic() < deadline and worker is None:     # read the file only: no scheduler, no store
        for r in read_events(path)[0]:
            if r["type"] == "run_info" and r.get("pid"):
                worker = r["pid"]
        time.sleep(0.05)
    assert worker, "the worker never started"
    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    status = None
    while time.monotonic() - killed < 30 and status is None:
        finals = [r for r in read_events(path)[0] if r["type"] == "status" and r["status"] not in ("queued",
                                                                                                     "running")]
        status = finals[-1] if finals else None
        time.sleep(0.02)
    delay = time.monotonic() - killed
    print(f"died recorded {delay:.2f} s after SIGKILL, with no reader")
    assert status is not None and status["status"] == "died", status
    assert "SIGKILL" in status["message"] and f"pid {worker}" in status["message"]
    assert delay < 30
    # the supervisor also freed the slot: the scheduler's table no longer holds the job
    deadline = time.monotonic() + 20
    while rid in scheduler.load_state()["active"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rid not in scheduler.load_state()["active"]


def test_resume_from_a_chosen_checkpoint(tmp_workspace, tmp_path, capsys):
    from mapsage.workspace import run_dir

    rid = api.launch(_demo_cfg(tmp_path, steps=3))
    assert api.wait(rid, timeout=60) == "succeeded"
    ckpt = run_dir(rid) / "checkpoints" / "last.json"
    assert ckpt.is_file()
    # a damaged last.pth cannot be chosen: refused now, naming the file, before any run is made
    broken = run_dir(rid) / "checkpoints" / "last.pth"
    broken.write_bytes(b"PK\x03\x04 truncated")
    n_runs = len(list((tmp_workspace / "runs").iterdir()))
    _one_line_error(capsys, cli.main(["runs", "resume", rid, "--checkpoint", str(broken)]), str(broken),
                    "truncated")
    _one_line_error(capsys, cli.main(["runs", "resume", rid, "--checkpoint", str(tmp_path / "nope.pth")]),
                    "--checkpoint", "not found")
    assert len(list((tmp_workspace / "runs").iterdir())) == n_runs
    assert cli.main(["runs", "resume", rid, "--checkpoint", str(ckpt), "--wait"]) == 0
    new = capsys.readouterr().out.strip().splitlines()[0]
    assert new != rid and scheduler.read_job(new)["resume_from"] == str(ckpt)
