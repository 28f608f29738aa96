"""Tags and notes on runs: stored (and kept by a rebuild), searchable, one-line errors; the CLI commands."""
from __future__ import annotations

import pytest

from mapsage.errors import UserError


@pytest.fixture()
def ws(tmp_path, monkeypatch):
    """A workspace with two real (demo_job) run folders ingested."""
    import store
    from mapsage.config import config_hash, load_config, save_resolved
    from mapsage.events import EventWriter
    from mapsage.workspace import run_dir

    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(tmp_path / "ws"))
    cfg = load_config("configs/stage1_baselines/demo_segformer_mit-b0_dubai.yaml")
    ids = []
    for name in ("run_a_20260101-000000_aaaa", "run_b_20260101-000000_bbbb"):
        d = run_dir(name)
        d.mkdir(parents=True)
        save_resolved(cfg, d)
        ev = EventWriter(d)
        ev.status("queued")
        ev.emit("run_info", name=name, kind="train", config_hash=config_hash(cfg), dataset="dubai")
        ev.status("succeeded")
        ids.append(name)
    store.ingest_all()
    return ids


def test_tags_and_notes_round_trip_and_survive_rebuild(ws):
    import store
    from store import tags as ann

    a, b = ws
    assert ann.set_tags(a, add=["Baseline", "lr:8e-4"]) == ["baseline", "lr:8e-4"]
    assert ann.set_tags(a, add=["baseline"], remove=["lr:8e-4"]) == ["baseline"]
    ann.set_tags(b, add=["dice-sweep"])
    ann.set_note(b, "Dice 2.0 overfits the water class after epoch 30")
    df = ann.annotations().set_index("run_id")
    assert df.loc[a, "tags"] == ["baseline"] and df.loc[b, "note"].startswith("Dice 2.0")
    assert ann.search("WATER") == [b] and ann.search("base") == [a]
    assert ann.all_tags() == ["baseline", "dice-sweep"]
    store.rebuild()
    assert ann.tags_of(a) == ["baseline"] and ann.note_of(b).startswith("Dice 2.0")
    assert ann.replace_tags(a, ["x", "y"]) == ["x", "y"]
    ann.set_note(b, "")
    assert ann.note_of(b) == ""


def test_bad_input_is_one_line(ws):
    from store import tags as ann

    with pytest.raises(UserError, match="tag 'has space'"):
        ann.set_tags(ws[0], add=["has space"])
    with pytest.raises(UserError, match="no run 'nope'"):
        ann.set_note("nope", "x")


def test_cli(ws, capsys):
    from runners.cli import main

    assert main(["tag", ws[0], "--add", "keep", "--add", "paper"]) == 0
    assert capsys.readouterr().out.strip() == "keep, paper"
    assert main(["note", ws[0], "best so far on val"]) == 0
    assert main(["tag", "--find", "so far"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == ws[0]
    assert main(["tag", ws[0], "--add", "bad tag"]) == 2
