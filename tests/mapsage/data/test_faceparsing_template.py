"""The face-parsing template on part masks (CelebAMask-HQ layout, written from real Dubai masks): it trains for one
tiny epoch, selects its best checkpoint by the foreground mean F-score, and runs rank by it in the store."""
from __future__ import annotations

import json

import pytest

from tests.support.app import run_in_process
from tests.support.formats import dubai_part_layout, part_config

TINY = ["train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2", "train.num_workers=0",
        "augment.crop_size=[128, 128]", "eval.save_predictions=false", "runtime.threads=1", "runtime.device=cpu",
        "train.warmup_epochs=0"]


@pytest.mark.slow          # two tiny training runs: about a minute on 2 shared CPU cores
def test_face_parsing_template_trains_and_ranks_by_mean_fscore(tmp_path, tmp_workspace, one_thread):
    import store

    root = tmp_path / "parts"
    dubai_part_layout(root)
    cfg_path = part_config(root)
    runs = [run_in_process(str(cfg_path), TINY + [f"train.seed={seed}", f"stage.name=faceparsing-seed{seed}"])
            for seed in (1, 2)]
    fg = {}
    for rid in runs:
        ev = _events(rid)
        metrics = [e for e in ev if e["type"] == "metrics" and e.get("domain") == "all" and e["split"] == "val"]
        assert metrics, rid
        summary = metrics[-1]["summary"]
        # the foreground mean F-score: the per-class F-score (Dice) averaged over the 5 non-background classes
        f1 = [c["f1"] for c in metrics[-1]["classes"] if c["name"] != "background" and c["f1"] is not None]
        assert summary["mfscore_fg"] == pytest.approx(sum(f1) / len(f1), abs=1e-12)
        ckpts = [e for e in ev if e["type"] == "artifact" and e.get("kind") == "checkpoint"
                 and e.get("variant") == "best"]
        raw = [e["summary"]["mfscore_fg"] for e in metrics if e.get("variant") == "raw" and e.get("epoch") == 0]
        assert ckpts and raw and ckpts[-1]["meta"]["mfscore_fg"] == pytest.approx(raw[-1], abs=1e-9)
        statuses = [e for e in ev if e["type"] == "status"]
        assert statuses[-1]["status"] == "succeeded"
        fg[rid] = max(e["summary"]["mfscore_fg"] for e in metrics)       # the run's best evaluation
    store.ingest_all(wait=True)
    board = store.leaderboard(split="val", metric="mfscore_fg", per_class=False)
    board = board[board.run_id.isin(runs)]
    assert list(board.run_id) == sorted(runs, key=lambda r: -fg[r])      # ranked by the mean F-score
    assert board.mfscore_fg.tolist() == pytest.approx(sorted(fg.values(), reverse=True), abs=1e-12)


def _events(run_id):
    from mapsage.workspace import run_dir
    return [json.loads(line) for line in (run_dir(run_id) / "events.jsonl").read_text().splitlines() if line]
