"""Typed event records and the one fold of a run's live state (``mapsage.event_records``): the live status, the
scheduler and the store read the same state from an event file; parsing is tolerant; folding in pieces equals
folding at once."""
from __future__ import annotations

import json

import pytest

import store
from mapsage.event_records import Event, Heartbeat, RunInfo, RunState, Status, fold_events, parse, progress_frac
from mapsage.events import EVENTS_FILE, EventWriter
from mapsage.workspace import run_dir
from runners import jobs, scheduler
from store import schema as store_schema

PROGRESS = {"epoch": 1, "epochs": 4, "step": 10, "steps": 40, "phase": "train", "message": "epoch 1"}


@pytest.fixture
def ws(tmp_workspace):
    store_schema.forget_checked()
    jobs._live_cache.clear()
    return tmp_workspace


def _first_half(ev: EventWriter) -> None:
    ev.status("queued")
    ev.status("running")
    ev.heartbeat(**PROGRESS)
    ev.heartbeat()                       # no progress: the last progress stays


def _second_half(ev: EventWriter) -> None:
    ev.emit("run_info", pid=4242, host="node-7", gpus=[0, 1], name="r1", kind="train", parent_run="p0",
            resume_from="p0/last.pth", stage=3, note="free-form")
    ev.emit("scalars", epoch=1, step=10, split="train", values={"loss": 0.5})
    ev.status("failed", message="boom", traceback="Traceback (most recent call last): ...")


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_live_status_scheduler_and_store_read_the_same_state(ws):
    rid = "fold-agree"
    ev = EventWriter(run_dir(rid))
    _first_half(ev)
    store.ingest_run(rid)                # the store folds incrementally too: half now, half later
    mid = store.run(rid)
    assert mid["status"] == "running" and mid["ended_at"] is None and mid["progress"] == PROGRESS
    _second_half(ev)
    store.ingest_run(rid)

    recs = _records(run_dir(rid) / EVENTS_FILE)
    by_status = {r["status"]: r for r in recs if r["type"] == "status"}
    failed, running = by_status["failed"], by_status["running"]

    live = jobs.live_status(rid)
    status, record = scheduler.last_status(rid)
    row = store.run(rid)

    assert live["status"] == status == row["status"] == "failed"
    assert record == failed
    assert live["message"] == record["message"] == row["status_message"] == "boom"
    assert live["traceback"] == row["traceback"] == failed["traceback"]
    assert live["pid"] == row["pid"] == 4242
    assert live["host"] == row["host"] == "node-7"
    assert live["progress"] == row["progress"] == PROGRESS
    assert row["progress_frac"] == pytest.approx(0.25) and row["progress_epoch"] == 1
    assert live["status_ts"] == failed["ts"]
    assert row["ended_at"].timestamp() == pytest.approx(failed["ts"], abs=1e-3)
    assert row["started_at"].timestamp() == pytest.approx(running["ts"], abs=1e-3)
    assert live["final"] is True and live["queue_position"] is None
    assert live["gpus"] == [0, 1] and row["gpus"] == "0,1"
    assert live["name"] == row["name"] == "r1" and live["kind"] == row["kind"] == "train"
    assert live["parent_run"] == row["parent_run"] == "p0"
    assert live["resume_from"] == row["resume_from"] == "p0/last.pth"
    assert row["plan_stage"] == 3 and row["info"]["note"] == "free-form"
    assert live["n_events"] == len(recs) == row["n_events"]
    beats = [r for r in recs if r["type"] == "heartbeat"]
    assert live["last_heartbeat"] == beats[-1]["ts"]
    assert row["last_heartbeat"].timestamp() == pytest.approx(beats[-1]["ts"], abs=1e-3)
    assert scheduler._last_heartbeat_ts(rid) == failed["ts"]      # a status counts as a beat for the scheduler


def test_live_status_keys_are_unchanged(ws):
    rid = "fold-keys"
    ev = EventWriter(run_dir(rid))
    ev.heartbeat()
    base = {"run_id", "status", "message", "traceback", "progress", "last_heartbeat", "pid", "host", "n_events",
            "final", "queue_position"}
    assert set(jobs.live_status(rid)) == base                     # no status, no run_info yet
    ev.status("running")
    ev.emit("run_info", name="n", gpus=None)
    assert set(jobs.live_status(rid)) == base | {"status_ts", "name"}


def test_parse_is_tolerant():
    assert parse({"type": "status"}) == Status()
    assert parse({"type": "heartbeat", "seq": "x", "ts": "nan", "pid": "abc", "progress": [1, 2]}) == Heartbeat()
    assert parse({"type": "heartbeat", "progress": {}}).progress is None
    info = parse({"type": "run_info", "seq": 4, "stage": "refine", "gpus": "0", "epochs": "12", "extra": {"a": 1}})
    assert isinstance(info, RunInfo)
    assert (info.seq, info.plan_stage, info.gpus, info.epochs) == (4, None, "0", 12)
    assert info.payload == {"stage": "refine", "gpus": "0", "epochs": "12", "extra": {"a": 1}}
    assert parse({"type": "mystery", "seq": 3, "ts": 1.5, "x": 1}) == Event("mystery", 3, 1.5, {"x": 1})
    assert parse({"seq": 1}) == Event(None, 1, None, {})
    assert parse("not a record") == Event() and parse(None) == Event()
    assert progress_frac({"frac": 0.3, "step": 1, "steps": 2}) == 0.3
    assert progress_frac({"epoch": 2, "epochs": 0, "step": None}) is None
    assert progress_frac(None) is None

    state = RunState()
    for r in ({"type": "status"}, {"type": "mystery"}, ["a", "list"], {"type": ["unhashable"]},
              {"type": "heartbeat", "pid": 7}, {"type": "run_info", "pid": None, "host": "h"}):
        state.apply(r)
    assert state.n_events == 6 and state.has_status and state.status is None
    assert (state.pid, state.host, state.progress, state.ended_at) == (7, "h", None, None)


def test_readers_tolerate_odd_records_in_the_file(ws):
    rid = "fold-odd"
    ev = EventWriter(run_dir(rid))
    ev.status("running")
    ev.emit("mystery", anything=[1, 2])
    ev.emit("heartbeat")                  # no pid, host or progress
    with open(run_dir(rid) / EVENTS_FILE, "a") as fh:
        fh.write('[1, 2]\n{"seq": 99, "type": "status"}\n')
    live = jobs.live_status(rid)
    assert live["status"] is None and live["n_events"] == 5 and live["pid"] is None
    assert scheduler.last_status(rid) == (None, {"seq": 99, "type": "status"})
    assert scheduler._last_heartbeat_ts(rid) is None


def test_incremental_fold_equals_one_full_read(ws):
    rid = "fold-incremental"
    ev = EventWriter(run_dir(rid))
    path = run_dir(rid) / EVENTS_FILE
    _first_half(ev)
    part, offset = fold_events(path)
    first_live = jobs.live_status(rid)
    snapshot = dict(first_live)
    assert part.status == "running" and part.progress == PROGRESS and not part.final
    _second_half(ev)
    part, offset2 = fold_events(path, offset, part.copy())
    whole, full_offset = fold_events(path)
    assert part == whole and offset2 == full_offset == path.stat().st_size
    assert whole.final and whole.ended_at == whole.status_ts and whole.info["note"] == "free-form"

    incremental = jobs.live_status(rid)             # from the cached fold and offset
    assert first_live == snapshot                   # an earlier answer is not changed by a later read
    jobs._live_cache.clear()
    assert jobs.live_status(rid) == incremental     # a fresh full read gives the same answer

    ev.status("queued")                             # a restart: no longer final, no end time
    again, _ = fold_events(path, offset2, whole.copy())
    assert again.status == "queued" and again.ended_at is None and again.started_at == whole.started_at
    assert whole.status == "failed"                 # the copy was folded, not the original
