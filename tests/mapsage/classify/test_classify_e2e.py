"""A classification fold group end to end (slow): two folds through the job worker, the store's leaderboard and
group board by top-1 / macro F1, the fused submission of both folds validated, temperature scaling written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.app import run_in_process

TEMPLATE = "configs/stage1_classification/cls_test-byobnet_dubai-scenes_cpu.yaml"
QUICK = ["train.epochs=1", "classify.img_size=32", "classify.max_images=160", "classify.gradcam_images=2",
         "classify.errors_top_k=6", "runtime.threads=1"]

pytestmark = pytest.mark.slow


def test_fold_group_leaderboard_and_fused_submission(tmp_workspace, tmp_path):
    import store
    from mapsage.classify.predict import predict_folder, write_submission
    from mapsage.classify.submission import check_submission
    from mapsage.workspace import run_dir
    from store.groups import group_board
    from store.ranked import ranking

    rids = [run_in_process(TEMPLATE, QUICK + ["dataset.split.folds=5", f"dataset.split.fold={f}",
                                              "cv.group=grp_test", "cv.repeat=0"], name=f"cls-test-f{f}")
            for f in (0, 1)]
    store.ingest_all(wait=True)
    board = ranking(split="val", metric="top1", run_ids=rids)
    assert len(board) == 2 and board["top1"].between(0, 1).all() and board["macro_f1"].between(0, 1).all()
    grp = group_board(split="val", metric="macro_f1")
    row = grp[grp["group"] == "grp_test"].iloc[0]
    assert row["runs"] == 2 and row["folds"] == 5 and row["sd"] == row["sd"]
    for rid in rids:
        split = json.loads((run_dir(rid) / "split.json").read_text())
        assert not set(split["train_groups"]) & set(split["val_groups"])
        cal = json.loads((run_dir(rid) / "calibration.json").read_text())
        assert cal["ece_after"] <= cal["ece_before"] + 1e-9
        errs = json.loads((run_dir(rid) / "predictions" / "errors.json").read_text())
        assert errs["rows"] and (run_dir(rid) / errs["rows"][0]["gradcam_pred"]).is_file()
    folder = tmp_path / "test"
    folder.mkdir()
    from mapsage.config import resolve_path

    images = sorted(resolve_path("data/demo/dubai-scenes/test_dataset").glob("*.jpg"))[:20]
    for p in images:
        (folder / p.name).write_bytes(p.read_bytes())
    res = predict_folder(["grp_test"], folder, hflip=True)
    assert len(res["members"]) == 2 and res["category_ids"] == [1, 2, 3, 4, 5]
    out = write_submission(res, tmp_path / "submission.csv")
    assert check_submission(out, [p.name for p in images], [1, 2, 3, 4, 5]) == []
    (folder / images[0].name).unlink()
    assert "not a test image" in check_submission(out, [p.name for p in images[1:]], [1, 2, 3, 4, 5])[0]


def test_run_detail_and_plan_show_the_classification_track(tmp_workspace):
    from streamlit.testing.v1 import AppTest

    import store

    rid = run_in_process(TEMPLATE, QUICK + ["dataset.split.folds=5", "dataset.split.fold=2"], name="cls-detail")
    store.ingest_all(wait=True)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[3] / "app" / "main.py"), default_timeout=180)
    at.run()
    at.query_params["run"] = rid
    at.switch_page("views/run_detail.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    labels = [m.label for m in at.metric]
    assert labels[:4] == ["Top-1 (val)", "Macro F1", "Top-5", "ECE"]
    assert [t.label for t in at.tabs] == ["Curves", "Per class", "Confusion", "Errors", "Grad-CAM", "Calibration",
                                          "Health", "Config", "Log"]
    text = " ".join(m.value for m in at.markdown)
    assert "validation images are misclassified" in text and "Temperature **T =" in text
    assert "Image" in [s.label for s in at.selectbox]          # the Grad-CAM image picker
    at.switch_page("views/home.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    home = " ".join(m.value for m in at.markdown)
    assert "Best image classification so far" in home and "nan" not in home
    at.switch_page("views/plan.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert "timm model" in {w.label for w in at.text_input}
    assert "Folds (0: one run)" in {w.label for w in at.number_input}
    assert "LR (reference, x B/256)" in {w.label for w in at.number_input}
