"""One progress model (mapsage.progress): monotonic fraction, phase, rate, ETA; the same figure for every reader,
100 % once a run succeeded."""
from __future__ import annotations

from mapsage.progress import Tracker, view


def test_tracker_keeps_the_fraction_monotonic_and_adds_eta_and_rate():
    t = [0.0]
    tr = Tracker(clock=lambda: t[0])
    seen = []
    # the TTA case: per-variant counts that restart (17 % -> 83 % -> 33 %) never move the bar back
    for now, frac, phase, step in ((10, 0.17, "eval", 1), (20, 0.83, "eval", 5), (30, 0.33, "writing", 2)):
        t[0] = now
        seen.append(tr.update({"frac": frac, "phase": phase, "step": step, "steps": 6}))
    assert [s["frac"] for s in seen] == [0.17, 0.83, 0.83]
    assert seen[0]["phase"] == "evaluating" and seen[2]["phase"] == "writing"
    assert abs(seen[1]["eta_s"] - 20 * (1 - 0.83) / 0.83) < 1e-9
    assert abs(seen[1]["rate"] - 4 / 10) < 1e-9


def test_view_is_100_percent_when_succeeded_and_reads_alike():
    p = {"frac": 0.72, "phase": "val", "epoch": 2, "epochs": 3, "eta_s": 30.0}
    running = view(p, "running")
    assert running["frac"] == 0.72 and running["text"] == "72 % · validating · epoch 3/3 · ETA 30s"
    done = view(p, "succeeded")
    assert done["frac"] == 1.0 and done["text"].startswith("100 % · succeeded") and "ETA" not in done["text"]
    assert view(None, "succeeded")["frac"] == 1.0 and view(None, "running")["frac"] is None


def test_cli_list_and_show_agree_with_the_app_on_a_finished_run(tmp_path, monkeypatch, capsys):
    import store
    from app.widgets.common import progress_fraction
    from mapsage.events import EventWriter

    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(tmp_path))
    ev = EventWriter(tmp_path / "runs" / "r-done")
    ev.status("queued")
    ev.emit("run_info", name="r-done", kind="train", plan_stage=1)
    ev.status("running")
    ev.heartbeat(frac=0.72, phase="validating", epoch=1, epochs=2)
    ev.status("succeeded")
    store.ingest_all()
    assert store.list_runs().iloc[0]["progress_frac"] == 1.0
    from runners.cli import main

    assert main(["runs", "list"]) == 0
    out = capsys.readouterr().out
    assert "100%" in out.splitlines()[1] and "72%" not in out
    assert main(["runs", "show", "r-done"]) == 0
    assert "100 % · succeeded" in capsys.readouterr().out
    assert progress_fraction({"frac": 0.72}, "succeeded") == 1.0

