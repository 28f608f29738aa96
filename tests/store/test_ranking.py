"""The evaluation is the unit of every ranked number (store.ranking): a run that decides between variants is
ranked by the variant it adopted, a re-score of its parent's checkpoint is lineage, subsets and runs in progress
are marked and left out of "best", and Runs, Home and Plan all follow the one rule."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from mapsage.evalid import tile_hash
from tests.support.apptest import open_app

CLASSES = ["water", "land", "road", "building", "vegetation"]
TILES = [f"Tile 3 part {i}" for i in range(1, 19)]


def _metrics(ev, split, variant, miou, mbiou, epoch=None, tiles=TILES, split_size=18, **ident):
    classes = [{"id": i, "name": n, "iou": miou, "acc": miou, "precision": miou, "f1": miou, "biou": mbiou}
               for i, n in enumerate(CLASSES)]
    ev.emit("metrics", split=split, domain="all", variant=variant, epoch=epoch,
            summary={"miou": miou, "macc": miou + 0.1, "aacc": 0.8, "mf1": miou + 0.05, "mbiou": mbiou},
            classes=classes, excluded_classes=[], n_images=len(tiles), boundary_px=3,
            identity={"dataset": "dubai", "tile_count": len(tiles), "tile_hash": tile_hash(tiles),
                      "split_size": split_size, "device": "cpu", **ident})


def _run(ws: Path, rid: str, kind: str, stage: int, status: str = "succeeded", parent: str | None = None):
    from mapsage.events import EventWriter

    ev = EventWriter(ws / "runs" / rid)
    ev.status("queued")
    ev.emit("run_info", name=rid, kind=kind, plan_stage=stage, dataset="dubai", created_at=time.time(),
            parent_run=parent, parent_relation="checkpoint" if parent else None)
    ev.status("running")
    return ev


def _build(ws: Path) -> None:
    """parent (train, 30.00) <- refine (raw re-score 34.46, adopted crf 33.33); a subset run (40.00 on 6 of 18
    tiles); a run in progress (41.00); a TTA run still deciding (its tta=off 35.00)."""
    ev = _run(ws, "parent-train", "train", 1)
    _metrics(ev, "val", "raw", 0.2800, 0.050, epoch=0)
    _metrics(ev, "val", "ema", 0.3000, 0.052, epoch=1)
    ev.status("succeeded")
    ev = _run(ws, "refine-crf", "refine", 4, parent="parent-train")
    ck = {"checkpoint": "/ws/runs/parent-train/checkpoints/best_ema.pth", "ckpt_run": "parent-train",
          "ckpt_epoch": 1, "ckpt_hash": "0123456789abcdef", "weights": "ema"}
    _metrics(ev, "val", "refine=raw", 0.3446, 0.0700, **ck)
    _metrics(ev, "val", "refine=crf", 0.3333, 0.0639, **ck)
    for variant, miou, mbiou, gain, decision in (("refine=raw", 0.3446, 0.07, 0.0, "baseline"),
                                                 ("refine=crf", 0.3333, 0.0639, 1.2, "keep")):
        ev.emit("ab", ab_kind="refine", variant=variant, baseline="refine=raw", split="val",
                summary={"miou": miou, "mbiou": mbiou}, baseline_summary={"miou": 0.3446, "mbiou": 0.07},
                gain=gain, criterion="mbiou", threshold=1.0, decision=decision)
    ev.status("succeeded")
    ev = _run(ws, "subset-eval", "evaluate", 3, parent="parent-train")
    _metrics(ev, "val", "raw", 0.4000, 0.080, tiles=TILES[:6], **ck)
    ev.status("succeeded")
    ev = _run(ws, "running-train", "train", 1)
    _metrics(ev, "val", "raw", 0.4100, 0.090, epoch=0)
    ev = _run(ws, "tta-deciding", "tta_ab", 3, parent="parent-train")
    _metrics(ev, "val", "tta=off", 0.3500, 0.060, **ck)


@pytest.fixture
def ranked_ws(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(tmp_path))
    _build(tmp_path)
    import store

    store.ingest_all()
    return tmp_path


def test_the_ranking_rule_roles_completeness_and_progress(ranked_ws):
    import store

    board = store.ranking(split="val", metric="miou").set_index("run_id")
    ref = board.loc["refine-crf"]
    assert ref["variant"] == "refine=crf" and ref["role"] == "adopted" and ref["miou"] == pytest.approx(0.3333)
    assert ref["rank"] == 1 and ref["rankable"]
    assert board.loc["parent-train", "rank"] == 2 and board.loc["parent-train", "variant"] == "ema"
    # shown, never ranked: a subset, a run in progress, a deciding run whose only figure is its parent re-scored
    assert board.loc["subset-eval", "completeness"] == "subset" and board[["rank"]].loc["subset-eval"].isna().all()
    assert board.loc["running-train", "in_progress"] and board[["rank"]].loc["running-train"].isna().all()
    assert board.loc["tta-deciding", "role"] == "pending" and board[["rank"]].loc["tta-deciding"].isna().all()
    # asked for: subsets and runs in progress rank too
    both = store.ranking(split="val", include_subsets=True, include_in_progress=True).set_index("run_id")
    assert both.loc["running-train", "rank"] == 1 and both.loc["subset-eval", "rank"] == 1   # own tile set: own group
    assert both.loc["refine-crf", "rank"] == 2
    # the refine run's lineage row is kept, with its role
    ev = store.evaluations_with_roles("refine-crf").set_index("variant")
    assert ev.loc["refine=raw", "role"] == "lineage" and ev.loc["refine=crf", "role"] == "adopted"
    assert ev.loc["refine=crf", "identity"] == "val · 18/18 tiles · EMA ep 2 of parent-train · refine=crf"
    assert store.short_identity(store.evaluations_with_roles("parent-train").iloc[-1]) == \
        "val · 18/18 tiles · EMA ep 2 · tta=off"
    assert "subset" in store.evaluations_with_roles("subset-eval").iloc[0]["identity"]
    # the runs' best figures come from ONE evaluation, by the same rule
    runs = store.list_runs().set_index("run_id")
    assert runs.loc["refine-crf", "best_val_miou"] == pytest.approx(0.3333)
    assert runs.loc["refine-crf", "best_val_mbiou"] == pytest.approx(0.0639)      # the same evaluation's bIoU
    assert runs.loc["refine-crf", "best_variant"] == "refine=crf"
    assert pd.isna(runs.loc["tta-deciding", "best_val_miou"]) and runs.loc["tta-deciding", "best_role"] == "pending"
    assert runs.loc["subset-eval", "best_role"] == "subset"          # its own figure, marked as a subset


def _texts(at) -> str:
    return "\n".join(str(e.value) for e in [*at.markdown, *at.caption])


def test_refinement_run_ranks_by_its_adopted_variant_on_runs_home_and_plan(ranked_ws):
    """The case that ranked a refinement run first on its parent's re-score (refine=raw 34.46) while it adopted
    crf (33.33): Runs, Home and Plan all rank it by crf, and show the re-score nowhere as its result."""
    at = open_app("views/runs.py")
    table = at.dataframe[0].value.set_index("run_id")
    assert table.loc["refine-crf", "Rank"] == 1
    assert table.loc["refine-crf", "mIoU (val)"] == pytest.approx(33.33)
    assert table.loc["refine-crf", "Boundary IoU (val)"] == pytest.approx(6.39)
    assert table.loc["refine-crf", "Variant"] == "refine=crf" and table.loc["refine-crf", "Tiles"] == "18/18 tiles"
    assert table.loc["refine-crf", "Weights"] == "EMA ep 2 of parent-train"
    assert table.loc["refine-crf", "Ranked as"] == "adopted variant"
    assert table.loc["subset-eval", "Tiles"] == "6/18 tiles" and "subset" in table.loc["subset-eval", "Ranked as"]
    assert table.loc["tta-deciding", "Ranked as"] == "decision pending, in progress"
    assert table[["Rank"]].loc[["subset-eval", "running-train", "tta-deciding"]].isna().all().all()
    assert 34.46 not in set(table["mIoU (val)"].round(2))

    text = _texts(open_app())
    assert "- `dubai`: **33.33** (split `val`) — `refine-crf`" in text and "34.46" not in text

    at = open_app("views/plan.py")
    text = _texts(at)
    assert "Best so far: **mIoU (val) 33.33**, bIoU 6.39  \n`refine-crf`" in text
    assert "val · 18/18 tiles · EMA ep 2 of parent-train · refine=crf" in text
    assert "34.46" not in text


def test_run_detail_headline_shows_one_evaluation_with_a_selector(ranked_ws):
    at = open_app("views/run_detail.py", run="refine-crf")
    box = at.selectbox(key="detail_headline")
    assert box.format_func(box.value).startswith("★ val · 18/18 tiles · EMA ep 2 of parent-train · refine=crf")
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["mIoU"], metrics["Boundary IoU"], metrics["mAcc"], metrics["mF1"]) == \
        ("33.33", "6.39", "43.33", "38.33")
    lineage = [i for i, o in enumerate(box.options) if "refine=raw" in o][0]
    assert "lineage (parent's checkpoint re-scored)" in box.options[lineage]
    box.select_index(lineage).run()
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["mIoU"], metrics["Boundary IoU"]) == ("34.46", "7.00")
    assert any("lineage" in c.value for c in at.caption)


def test_migration_2_keeps_an_existing_workspace_and_derives_identity(ranked_ws):
    """A store written before the identity columns (schema version 1): migration 2 adds them, fills the tile
    sets from the tiles rows, re-derives the runs' best figures by the ranking rule, and drops no run."""
    import store
    from store.schema import forget_checked

    before = len(store.list_runs())
    with store.write_connection() as con:
        _back_to_v1(con)
    forget_checked()
    runs = store.list_runs().set_index("run_id")
    assert len(runs) == before
    assert runs.loc["refine-crf", "best_val_miou"] == pytest.approx(0.3333)
    ev = store.evaluations_with_roles("refine-crf").set_index("variant")
    assert ev.loc["refine=crf", "tile_hash"] == tile_hash(TILES) and ev.loc["refine=crf", "tile_count"] == 18
    from store.schema import latest_version

    assert store.latest_version() == latest_version() >= 2


def _back_to_v1(con) -> None:
    """A version-1 store: no identity columns, the old "best = max over every variant" figure."""
    from store.schema import _BEST_COLUMNS, _IDENTITY_COLUMNS

    for c, _ in _IDENTITY_COLUMNS:
        con.execute(f'ALTER TABLE evaluations DROP COLUMN "{c}"')
    for c, _ in _BEST_COLUMNS:
        con.execute(f'ALTER TABLE runs DROP COLUMN "{c}"')
    con.execute("UPDATE runs SET best_val_miou = 0.3446 WHERE run_id = 'refine-crf'")
    con.execute("INSERT INTO tiles (run_id, seq, split, variant, tile) SELECT 'refine-crf', 1000, 'val', "
                "'refine=crf', 'Tile 3 part ' || i FROM range(1, 19) t(i)")
    con.execute("DROP TABLE IF EXISTS external_scores")
    con.execute("DROP SEQUENCE IF EXISTS external_score_ids")
    con.execute("DELETE FROM schema_version WHERE version >= 2")


def test_ab_page_says_pending_while_a_deciding_run_is_in_progress(ranked_ws):
    at = open_app("views/tta_ab.py")
    assert any("Decision pending" in w.value for w in at.warning)
    assert "**tta-deciding**" in _texts(at)
    pending = at.dataframe[0].value
    assert list(pending["variant"]) == ["tta=off"] and "3" not in pending.columns
    assert not any("keep the baseline" in i.value for i in at.info)      # no decision announced for it
