"""8 writer processes x 1,000 events each, each ingesting now and then, while a reader queries in a loop: every event
ends up in the store exactly once and no lock error ever reaches the reader."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import store
from store import schema as store_schema

sys.path.insert(0, str(Path(__file__).parent))
from conftest_store import ROOT, loveda_metrics  # noqa: E402

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


@pytest.mark.slow   # about 15 s on 2 idle cores (8 Python processes); longer on a shared machine
def test_eight_writers_one_reader_every_event_exactly_once(tmp_workspace, tmp_path):
    store_schema.forget_checked()
    payload = loveda_metrics(16).result().to_event("val", "all", "ema", None)
    pfile = tmp_path / "metrics.json"
    pfile.write_text(json.dumps(payload))
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    store.ensure_schema()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), f"writer-{i}", str(EVENTS), str(pfile)], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(WRITERS)]
    errors, totals, queries = [], [], 0
    start = time.monotonic()
    while any(p.poll() is None for p in procs):
        try:
            runs = store.list_runs()
            counts = store.event_counts()
            store.leaderboard()
            totals.append(int(counts["n"].sum()) if not counts.empty else 0)
            assert len(runs) <= WRITERS
            queries += 1
        except Exception as exc:  # noqa: BLE001 - any error reaching the reader fails the test
            errors.append(repr(exc))
        assert time.monotonic() - start < 600, "writers did not finish"
    outputs = [p.stdout.read().decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert errors == []
    store.ingest_all()
    counts = store.event_counts().set_index("run_id")
    assert sorted(counts.index) == [f"writer-{i}" for i in range(WRITERS)]
    assert (counts["n"] == EVENTS).all() and (counts["n_distinct"] == EVENTS).all()
    assert (counts["min_seq"] == 0).all() and (counts["max_seq"] == EVENTS - 1).all()
    tc = store.table_counts()
    n_metrics = len([k for k in range(1, EVENTS - 1) if k % 10 == 9])
    n_scalars = len([k for k in range(1, EVENTS - 1) if k % 10 not in (8, 9)])
    assert tc["evaluations"] == WRITERS * n_metrics
    assert tc["class_metrics"] == WRITERS * n_metrics * 7
    assert tc["scalars"] == WRITERS * n_scalars * 2
    runs = store.list_runs()
    assert runs["status"].eq("succeeded").all() and runs["n_events"].eq(EVENTS).all()
    # the reader kept working while the writers ingested, and never saw a half-written batch go backwards
    assert queries >= 5
    assert totals == sorted(totals)
    assert any(0 < t < WRITERS * EVENTS for t in totals), totals[:20]
    print(f"\n{queries} reader loops while writing; totals seen {totals[:3]} ... {totals[-3:]}")


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q", "-s"])
