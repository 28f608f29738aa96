"""8 writer processes x 1,000 events each, each ingesting now and then, while a reader queries in a loop: every event
ends up in the store exactly once and no lock error ever reaches the reader."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import store
from store import schema as store_schema
from tests.support.store import ROOT, loveda_metrics

WRITERS = 8
EVENTS = 1000

WRITER = r"""
import json, sys
from mapsage.events import EventWriter
from mapsage.workspace import run_dir
import store

rid, n, payload_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
payload = json.loads(open(payload_file).read())
ev = EventWriter(run_dir(rid), fsync=False)   # durability is the writer's business; this tests the store
ev.status("running")
for k in range(1, n - 1):
    if k % 10 == 9:
        ev.emit("metrics", **{**payload, "epoch": k // 10})
    elif k % 10 == 8:
        ev.heartbeat(step=k, steps=n)
    else:
        ev.scalars({"loss": 1.0 / k, "lr": 1e-4}, epoch=k // 10, step=k)
    if k % 400 == 0:
        # alternate blocking and non-blocking ingests, as workers and readers do
        store.ingest_all(wait=(k % 800 == 0))
ev.status("succeeded")
store.ingest_run(rid)
"""


def _exercise(tmp_path, rids: list[str], events: int) -> tuple[int, list[int]]:
    """One writer process per entry of ``rids`` (a run id twice: two writers of one event file), ``events`` events
    each, while this process reads in a loop. Returns (reader loops, totals seen)."""
    store_schema.forget_checked()
    payload = loveda_metrics(16).result().to_event("val", "all", "ema", None)
    pfile = tmp_path / "metrics.json"
    pfile.write_text(json.dumps(payload))
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    store.ensure_schema()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), rid, str(events), str(pfile)], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for rid in rids]
    errors, totals, queries = [], [], 0
    start = time.monotonic()
    while any(p.poll() is None for p in procs):
        try:
            runs = store.list_runs()
            counts = store.event_counts()
            store.leaderboard()
            totals.append(int(counts["n"].sum()) if not counts.empty else 0)
            assert len(runs) <= len(set(rids))
            queries += 1
        except Exception as exc:  # noqa: BLE001 - any error reaching the reader fails the test
            errors.append(repr(exc))
        assert time.monotonic() - start < 600, "writers did not finish"
    outputs = [p.stdout.read().decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert errors == []
    store.ingest_all()
    per_file = {rid: events * rids.count(rid) for rid in set(rids)}
    counts = store.event_counts().set_index("run_id")
    assert sorted(counts.index) == sorted(per_file)
    for rid, n in per_file.items():
        assert counts.at[rid, "n"] == n and counts.at[rid, "n_distinct"] == n, rid
        assert counts.at[rid, "min_seq"] == 0 and counts.at[rid, "max_seq"] == n - 1, rid
    tc = store.table_counts()
    n_metrics = len([k for k in range(1, events - 1) if k % 10 == 9])
    n_scalars = len([k for k in range(1, events - 1) if k % 10 not in (8, 9)])
    assert tc["evaluations"] == len(rids) * n_metrics
    assert tc["class_metrics"] == len(rids) * n_metrics * 7
    assert tc["scalars"] == len(rids) * n_scalars * 2
    runs = store.list_runs()
    assert runs["status"].eq("succeeded").all()
    assert totals == sorted(totals)       # the reader never saw a half-written batch go backwards
    return queries, totals


@pytest.mark.slow   # about 15 s on 2 idle cores (8 Python processes); longer on a shared machine
def test_eight_writers_one_reader_every_event_exactly_once(tmp_workspace, tmp_path):
    queries, totals = _exercise(tmp_path, [f"writer-{i}" for i in range(WRITERS)], EVENTS)
    assert store.list_runs()["n_events"].eq(EVENTS).all()
    # the reader kept working while the writers ingested
    assert queries >= 5
    assert any(0 < t < WRITERS * EVENTS for t in totals), totals[:20]
    print(f"\n{queries} reader loops while writing; totals seen {totals[:3]} ... {totals[-3:]}")


def test_three_writers_one_reader_fast(tmp_workspace, tmp_path):
    """The default suite's variant: 3 writer processes x 100 events while the reader queries."""
    queries, _ = _exercise(tmp_path, [f"writer-{i}" for i in range(3)], 100)
    assert queries >= 1


def test_two_writers_of_one_event_file(tmp_workspace, tmp_path):
    """Two processes append to the same events.jsonl (a job and its supervisor, or a scheduler): the file's
    sequence numbers stay unique and gap-free, and the store takes every record exactly once."""
    _exercise(tmp_path, ["shared-run", "shared-run"], 200)


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q", "-s"])
