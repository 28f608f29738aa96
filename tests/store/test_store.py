"""The DuckDB store: schema and migrations, idempotent ingest of real evaluation events, every event type, the
read queries, readers that wait (bounded) for writers, verdicts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import store
from mapsage.errors import UserError
from mapsage.events import EVENTS_FILE, EventWriter
from mapsage.metrics import miou_from_tile_rows
from mapsage.workspace import db_path, run_dir
from store import schema as store_schema
from tests.support.store import LOVEDA_CLASSES, ROOT, loveda_metrics, make_run, write_training


@pytest.fixture
def ws(tmp_workspace):
    store_schema.forget_checked()
    return tmp_workspace


def test_empty_workspace_reads_empty_frames_and_creates_schema(ws):
    df = store.list_runs()
    assert df.empty and list(df.columns) == store.LIST_COLUMNS
    assert store.leaderboard().empty
    assert store.run("nope") is None
    assert db_path().exists()
    with store.read_connection() as con:
        assert store_schema.current_version(con) == store.latest_version()
    report = store.ingest_all()
    assert report.events == 0 and report.runs_seen == 0


def test_migrations_apply_once_in_order_and_newer_db_is_refused(ws, monkeypatch):
    store.ensure_schema()
    v1 = store.latest_version()
    extra = (v1 + 1, "test: a column for notes", ["ALTER TABLE runs ADD COLUMN note VARCHAR"])
    monkeypatch.setattr(store_schema, "MIGRATIONS", [*store_schema.MIGRATIONS, extra])
    store_schema.forget_checked()
    ev = make_run("r-mig")
    write_training(ev, shifts=(16,), with_final=False)
    store.ingest_all()                                   # ensure_schema migrates to v1+1 first
    with store.read_connection() as con:
        versions = [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]
        assert "note" in [r[0] for r in con.execute("DESCRIBE runs").fetchall()]
    assert versions == sorted(v for v, _, _ in store_schema.MIGRATIONS) and versions[-2:] == [v1, v1 + 1]
    with store.write_connection() as con:
        assert store.migrate(con) == []                  # nothing left to apply
    # code that knows only v1 refuses the newer database instead of misreading it
    monkeypatch.setattr(store_schema, "MIGRATIONS", store_schema.MIGRATIONS[:-1])
    store_schema.forget_checked()
    with pytest.raises(store.StoreError, match="newer"):
        store.list_runs()


def test_a_migration_below_the_highest_applied_one_is_still_applied(ws):
    """Two branches each added a migration; a store made by the one with the higher number must still get the
    other's tables (migrations are applied by set difference, not by 'above the highest')."""
    store.ensure_schema()
    with store.write_connection() as con:
        con.execute("DROP TABLE run_tags")
        con.execute("DELETE FROM schema_version WHERE version = 4")
        assert store_schema.current_version(con) == store.latest_version()
        assert store_schema.missing_versions(con) == [4]
    store_schema.forget_checked()
    store.list_runs()                                    # ensure_schema sees the gap and applies 4
    with store.read_connection() as con:
        assert store_schema.missing_versions(con) == []
        assert con.execute("SELECT count(*) FROM run_tags").fetchone()[0] == 0


def test_real_evaluation_roundtrip(ws):
    ev = make_run("r-loveda")
    write_training(ev, shifts=(48, 24, 8))
    report = store.ingest_all()
    n_lines = len((run_dir("r-loveda") / EVENTS_FILE).read_text().splitlines())
    assert report.events == n_lines and report.runs_changed == 1

    best = loveda_metrics(8).result()
    runs = store.list_runs()
    row = runs.iloc[0]
    assert row["status"] == "succeeded" and row["split"] == "val"
    assert row["best_val_miou"] == pytest.approx(best.miou)
    assert row["best_val_mbiou"] == pytest.approx(best.mbiou)
    assert row["best_epoch"] == 2 and row["best_variant"] == "ema"
    # the experiment table's columns come from the resolved config
    assert (row["backbone"], row["arch"], row["size"], row["tta"], row["post"]) == \
        ("mit_b2", "segformer", "512x512", "off", "off")
    assert row["loss"] == "ce0.7+dice0.3" and row["lr_schedule"].startswith("AdamW 6e-05")
    assert row["aug"].startswith("scale0.5-2") and row["pretrain"] == "none"
    assert row["progress_frac"] == pytest.approx(1.0) and row["gpus"] == "0"

    pc = store.per_class("r-loveda")                    # latest val/all evaluation: the final one
    assert pc["epoch"].isna().all() and list(pc["class_name"]) == LOVEDA_CLASSES
    ref = {c["name"]: c for c in best.per_class}
    for r in pc.itertuples():
        for k in ("iou", "acc", "precision", "f1", "biou"):
            want = ref[r.class_name][k]
            got = getattr(r, k)
            assert (np.isnan(got) and want is None) or got == pytest.approx(want), (r.class_name, k)
    assert pc.set_index("class_name")["excluded"].to_dict()["barren"] == ("barren" in best.excluded_classes)

    m, names = store.confusion_matrix("r-loveda")
    assert names == LOVEDA_CLASSES and np.array_equal(m, best.confusion)
    curve = store.per_class("r-loveda", epoch=None)
    assert sorted(curve["epoch"].dropna().unique().tolist()) == [0, 1, 2]

    evals = store.metrics("r-loveda", domain="all")
    assert evals["eval_key"].tolist() == ["val/all/ema/e0", "val/all/ema/e1", "val/all/ema/e2", "val/all/ema/final"]
    assert evals["miou"].is_monotonic_increasing         # a smaller shift is a better prediction
    assert set(store.metrics("r-loveda")["domain"]) == {"all", "Rural"}

    # per-tile areas are exact: the bootstrap helper gives back the engine's mIoU from the stored rows
    tiles = store.tiles("r-loveda", split="val", variant="ema")
    assert len(tiles) == 3
    assert miou_from_tile_rows(tiles) == pytest.approx(best.miou)
    assert miou_from_tile_rows(tiles, metric="mbiou") == pytest.approx(best.mbiou)
    assert np.array_equal(np.sum([t.intersect for t in tiles.itertuples()], axis=0), np.diag(best.confusion))

    sc = store.scalars("r-loveda", names="loss")
    assert sc["value"].tolist() == pytest.approx([1.0, 0.5, 1 / 3]) and sc["split"].eq("train").all()
    art = store.artifacts("r-loveda", kind="checkpoint")
    assert art["abs_path"].iloc[0] == str(run_dir("r-loveda") / "checkpoints" / "last.pth")

    lb = store.leaderboard()
    assert lb.loc[0, "run_id"] == "r-loveda" and lb.loc[0, "miou"] == pytest.approx(best.miou)
    assert [c for c in lb.columns if c.startswith("iou_")] == [f"iou_{c}" for c in LOVEDA_CLASSES]
    assert lb.loc[0, "iou_road"] == pytest.approx(ref["road"]["iou"])

    info = store.run("r-loveda")
    assert info["config"]["model"]["encoder"] == "mit_b2" and info["class_names"] == LOVEDA_CLASSES
    assert info["config_hash"] == info["config"]["meta"]["config_hash"]


def test_ingest_is_idempotent_incremental_and_tolerates_torn_tail(ws):
    ev = make_run("r-idem")
    write_training(ev, shifts=(32,), with_final=False)
    first = store.ingest_all()
    counts = store.table_counts()
    again = store.ingest_all()
    assert again.events == 0 and store.table_counts() == counts
    path = run_dir("r-idem") / EVENTS_FILE
    # a writer caught mid-line: the torn tail is not ingested ...
    with open(path, "a") as fh:
        fh.write('{"seq": %d, "ts": %f, "type": "log", "level": "info", "mess' % (ev._seq, time.time()))
    assert store.ingest_all().events == 0
    # ... and counts exactly once when the line is complete
    with open(path, "a") as fh:
        fh.write('age": "finished"}\n')
    assert store.ingest_all().events == 1
    assert store.logs("r-idem")["message"].tolist() == ["finished"]
    c = store.event_counts().iloc[0]
    assert c["n"] == c["n_distinct"] == first.events + 1 == c["max_seq"] + 1
    # a record whose seq was already ingested (a duplicated line) is skipped
    with open(path) as fh:
        lines = fh.read().splitlines()
    with open(path, "a") as fh:
        fh.write(lines[3] + "\n")
    rep = store.ingest_all()
    assert rep.events == 0 and rep.skipped_records == 1
    # concurrent ingests of the same files from several threads still store each event once
    write_training(make_run("r-idem2"), shifts=(16, 8))
    threads = [threading.Thread(target=store.ingest_all) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    ec = store.event_counts().set_index("run_id")
    assert (ec["n"] == ec["n_distinct"]).all() and (ec["n"] == ec["max_seq"] + 1).all()


def test_replaced_event_file_is_read_again_from_the_start(ws):
    ev = make_run("r-replace")
    write_training(ev, shifts=(32, 16))
    store.ingest_all()
    path = run_dir("r-replace") / EVENTS_FILE
    path.unlink()
    ev2 = EventWriter(run_dir("r-replace"))
    ev2.status("queued")
    ev2.status("running")
    report = store.ingest_all()
    assert report.resets == ["r-replace"]
    assert store.event_counts()["n"].tolist() == [2]
    assert store.list_runs()["status"].tolist() == ["running"]
    assert store.metrics("r-replace").empty
    assert store.run("r-replace")["config"]["model"]["encoder"] == "mit_b2"


def test_every_event_type_lands_in_its_table(ws):
    ev = make_run("r-all", ROOT / "configs" / "stage1_baselines" / "segformer_mit-b2_loveda.yaml",
                  ["stage.kind=tta_ab", "stage.plan_stage=3"])
    ev.status("queued")
    ev.emit("run_info", name="tta-check", kind="tta_ab", plan_stage=3, code_commit="abc123", custom_fact=7)
    ev.status("running")
    ev.heartbeat(step=3, steps=12, phase="tta", message="scale 1.25")
    ev.scalars({"images_per_s": 4.25, "peak_mem_mb": 812.0}, split="val")
    raw, tta = loveda_metrics(24), loveda_metrics(8)
    raw.write_events(ev, split="val", variant="raw")
    tta.write_events(ev, split="val", variant="tta=on")
    gain = 100 * (tta.result().miou - raw.result().miou)
    ev.emit("ab", ab_kind="tta", variant="tta=on", baseline="raw", split="val", summary=tta.result().summary,
            baseline_summary=raw.result().summary, gain=gain, criterion="miou", threshold=0.8,
            decision="keep" if gain > 0.8 else "drop", images_per_s=1.7, wall_s=12.5, details={"scales": [1, 1.25]})
    ev.artifact("pred", run_dir("r-all") / "predictions" / "2.png", tile="Val/Rural/2", variant="tta=on")
    ev.emit("health", check="metric", status="pass", verdict="mIoU excludes the ignore index",
            evidence={"ignored_pixels": 12}, picture=None)
    ev.log("note", level="warning")
    ev.emit("future_type", anything=1)                   # unknown types stay in the ledger
    ev.status("succeeded")
    store.ingest_all()
    counts = store.table_counts()
    for table in ["statuses", "scalars", "evaluations", "class_metrics", "confusion", "tiles", "ab_rows",
                  "artifacts", "health", "logs"]:
        assert counts[table] > 0, table
    types = set(store.events("r-all")["type"])
    assert types == {"status", "run_info", "heartbeat", "scalars", "metrics", "tiles", "ab", "artifact", "health",
                     "log", "future_type"}
    ab = store.ab_rows("r-all").iloc[0]
    assert ab["decision"] == ("keep" if gain > 0.8 else "drop") and ab["gain"] == pytest.approx(gain)
    assert ab["miou"] == pytest.approx(tta.result().miou) and ab["baseline_miou"] == pytest.approx(raw.result().miou)
    assert json.loads(ab["details_json"]) == {"scales": [1, 1.25]}
    row = store.list_runs().iloc[0]
    assert row["kind"] == "tta_ab" and row["plan_stage"] == 3 and row["name"] == "tta-check"
    assert row["fps"] == pytest.approx(4.25)              # an images_per_s scalar wins over the A/B row
    assert row["progress_frac"] == 1.0 and row["progress_message"] == "scale 1.25"   # succeeded: 100 %
    assert row["tta"].startswith("A/B: tta(s0.75,1,1.25+h)")
    assert store.run("r-all")["info"]["custom_fact"] == 7
    assert store.health("r-all")["check_name"].tolist() == ["metric"]
    assert store.statuses("r-all")["status"].tolist() == ["queued", "running", "succeeded"]
    assert store.leaderboard(variant="tta=on")["variant"].tolist() == ["tta=on"]


def test_readers_wait_for_a_writer_and_give_up_cleanly(ws, monkeypatch):
    write_training(make_run("r-lock"), shifts=(16,), with_final=False)
    store.ingest_all()
    held = threading.Event()
    release = threading.Event()

    def writer():
        with store.write_connection() as con:
            con.execute("UPDATE runs SET title = 'written while readers wait'")
            held.set()
            release.wait(5)

    t = threading.Thread(target=writer)
    t.start()
    held.wait(5)
    threading.Timer(0.6, release.set).start()
    start = time.monotonic()
    df = store.list_runs()                               # waits for the writer, no lock error
    waited = time.monotonic() - start
    t.join()
    assert waited >= 0.4 and df["title"].tolist() == ["written while readers wait"]
    # a writer that holds on past the bounded wait gives a clear StoreBusy (a UserError), not a DuckDB error
    monkeypatch.setenv("MAPSAGE_STORE_TIMEOUT_S", "0.3")
    held.clear()
    release.clear()
    t = threading.Thread(target=writer)
    t.start()
    held.wait(5)
    try:
        with pytest.raises(store.StoreBusy, match="MAPSAGE_STORE_TIMEOUT_S") as info:
            store.list_runs()
        assert isinstance(info.value, UserError)
    finally:
        release.set()
        t.join()


def test_verdicts_are_stored_summarised_and_survive_a_rebuild(ws):
    write_training(make_run("r-rev"), shifts=(16,), with_final=False)
    store.ingest_all()
    store.add_verdict("r-rev", "Val/Rural/2", "worse", "road edges eaten", reviewer="ana", variant="crf")
    store.add_verdict("r-rev", "Val/Rural/2", "better", "second look", reviewer="ana", variant="crf")
    store.add_verdict("r-rev", "Train/Rural/0", "same", reviewer="bo", variant="crf")
    with pytest.raises(UserError, match="better"):
        store.add_verdict("r-rev", "Train/Rural/0", "great")
    assert len(store.verdicts("r-rev")) == 3
    latest = store.verdicts("r-rev", latest=True)
    assert sorted(latest["verdict"]) == ["better", "same"]
    s = store.verdict_summary("r-rev").iloc[0]
    assert (s["reviewed"], s["better"], s["worse"], s["same"]) == (2, 1, 0, 1)
    before = store.table_counts()
    report = store.rebuild()
    assert report.events == before["events"] and store.table_counts() == before


def test_store_never_imports_torch_or_streamlit(ws):
    code = ("import sys, store; store.ingest_all(); store.list_runs(); store.leaderboard(); "
            "bad = [m for m in ('torch', 'streamlit', 'app', 'runners') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stdout + out.stderr


def test_ingest_at_arbitrary_byte_boundaries_equals_one_full_ingest(ws):
    """Appending an event file in random pieces (torn lines included) with an ingest after each piece stores
    exactly what one ingest of the whole file stores."""
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    ev = make_run("ref")
    write_training(ev, shifts=(40, 20), with_final=False)
    data = (run_dir("ref") / EVENTS_FILE).read_bytes()
    store.ingest_all()

    def snapshot(rid):
        return (store.statuses(rid)["status"].tolist(),
                store.scalars(rid)[["seq", "name", "value"]].values.tolist(),
                store.metrics(rid)[["seq", "eval_key", "miou", "mbiou"]].values.tolist(),
                store.per_class(rid, epoch=None)[["seq", "class_name", "iou"]].fillna(-1).values.tolist(),
                store.tiles(rid, latest=False)[["seq", "tile"]].values.tolist(),
                store.list_runs(run_ids=[rid])[["status", "best_val_miou", "n_events"]].values.tolist())

    reference = snapshot("ref")
    counter = iter(range(10_000))

    config = (run_dir("ref") / "config.yaml").read_bytes()

    lines = data.splitlines(keepends=True)
    ends = np.cumsum([len(x) for x in lines])
    big = int(np.argmax([len(x) for x in lines]))          # a metrics record, kilobytes long
    adversarial = [int(ends[big] - len(lines[big]) // 2),   # in the middle of the longest line
                   int(ends[big]) - 1,                       # its newline not written yet
                   int(ends[big + 1])]                       # exactly at a line end

    @settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.integers(1, len(data) - 1), min_size=1, max_size=3, unique=True))
    @example(adversarial)
    def check(cuts):
        rid = f"pieces-{next(counter)}"
        run_dir(rid).mkdir(parents=True)
        (run_dir(rid) / "config.yaml").write_bytes(config)
        path = run_dir(rid) / EVENTS_FILE
        bounds = [0, *sorted(cuts), len(data)]
        for a, b in zip(bounds, bounds[1:]):
            with open(path, "ab") as fh:
                fh.write(data[a:b])
            store.ingest_run(rid)
        assert snapshot(rid) == reference

    check()
