"""The review queue on the Review page (Streamlit AppTest) on a REAL evaluation with saved probabilities
(``tests/support/queue.py``): the queue's table and order are the runner's, ``?queue=entropy`` walks the tiles in
that order, *Review the next tile* opens the first unreviewed one, a verdict sends a tile to the end."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.support.queue import QUEUE_TILES

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")
PAGE = "views/review.py"


@pytest.fixture
def queue_ws(queue_store, tmp_path, monkeypatch):
    ws = tmp_path / "workspace"
    shutil.copytree(queue_store["workspace"], ws)
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(ws))
    return {**queue_store, "workspace": ws}


def _app(**query) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.run()
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page(PAGE)
    at.run()
    _ok(at)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _queue_table(at: AppTest):
    for d in at.dataframe:
        if list(d.value.columns[:2]) == ["rank", "tile"]:
            return d.value
    raise AssertionError([list(d.value.columns)[:3] for d in at.dataframe])


def test_review_page_shows_the_queue_and_walks_it(queue_ws):
    import store
    from runners import review_queue as rq

    rid = queue_ws["probs"]
    want, info = rq.queue(rid, by="entropy")
    assert len(want) == QUEUE_TILES
    at = _app(run=rid, queue="entropy")
    shown = _queue_table(at)
    assert list(shown["tile"]) == list(want["tile"])
    col = "mean entropy (normalised)"
    assert list(shown[col].round(6)) == list(want["entropy"].round(6))
    # walking in queue order: the tile selector starts at the most uncertain tile, Next goes to the second
    assert at.selectbox(key="review_tile").value == want["tile"].iloc[0]
    assert [o.split(" · ")[0] for o in at.selectbox(key="review_tile").options] == list(want["tile"])
    assert any("in review-queue order (mean entropy (normalised)" in str(c.value) for c in at.caption)
    at.button(key="review_next").click().run()
    _ok(at)
    assert at.selectbox(key="review_tile").value == want["tile"].iloc[1]
    text = "\n".join(str(m.value) for m in at.markdown)
    assert f"Next: **{want['tile'].iloc[0]}**" in text
    assert any("Download the queue" in str(b.proto.label) for b in at.get("download_button"))

    # a verdict on the first tile: it goes last, and "Review the next tile" opens the new first one
    store.add_verdict(rid, want["tile"].iloc[0], "better", reviewer="ana", variant=info["variant"])
    at2 = _app(run=rid, queue="entropy")
    shown2 = _queue_table(at2)
    assert list(shown2["tile"]) == list(want["tile"].iloc[1:]) + [want["tile"].iloc[0]]
    assert list(shown2["reviewed"]) == [False] * (QUEUE_TILES - 1) + [True]
    at2.selectbox(key="review_tile").set_value(want["tile"].iloc[0]).run()
    at2.button(key="review_queue_next").click().run()
    _ok(at2)
    assert at2.selectbox(key="review_tile").value == want["tile"].iloc[1]
    # the score selector re-ranks: by margin (lowest first)
    at2.selectbox(key="review_queue_by").set_value("margin").run()
    _ok(at2)
    by_margin, _ = rq.queue(rid, by="margin")
    assert list(_queue_table(at2)["tile"]) == list(by_margin["tile"])


def test_a_run_without_probabilities_ranks_by_mask_disagreement(queue_ws):
    from runners import review_queue as rq

    rid = queue_ws["refine"]
    want, info = rq.queue(rid)
    assert info["by"] == "disagreement"
    at = _app(run=rid, queue="disagreement")
    shown = _queue_table(at)
    assert list(shown["tile"]) == list(want["tile"])
    assert "share of pixels where members disagree" in shown.columns
    assert at.selectbox(key="review_queue_by").options == ["share of pixels where members disagree"]
    assert [o.split(" · ")[0] for o in at.selectbox(key="review_tile").options] == list(want["tile"])


def test_unlabelled_imagery_from_a_predict_run_is_queued_and_drawn(queue_ws, tmp_path):
    """``mapsage predict --on FOLDER --probabilities``: new imagery without labels; the queue says which image to
    label first, and the Review page draws the prediction over the image (no dataset split to read a label from)."""
    import torch
    from scipy.stats import entropy

    import store
    from runners import review_queue as rq
    from runners.predict_spec import predict_spec
    from tests.support.app import run_in_process

    demo = ROOT / "data" / "demo" / "dubai-aerial" / "Semantic segmentation dataset"
    folder = tmp_path / "new-imagery"
    folder.mkdir()
    shutil.copy(demo / "Tile 1" / "images" / "image_part_001.jpg", folder / "a.jpg")
    shutil.copy(demo / "Tile 5" / "images" / "image_part_002.jpg", folder / "b.jpg")
    config, overrides = predict_spec(queue_ws["train"], str(folder), [
        "runtime.threads=1", "runtime.device=cpu", "runtime.gpus=0", "predict.probabilities=uint8"])
    threads = torch.get_num_threads()
    try:
        rid = run_in_process(str(config), overrides)
    finally:
        torch.set_num_threads(threads)
    store.ingest_all()
    q, info = rq.queue(rid)
    assert info["by"] == "entropy" and sorted(q["tile"]) == ["a", "b"]
    probs = store.artifacts(rid, kind="prob")
    want = {}
    for t, p in zip(probs["tile"], probs["abs_path"]):
        with np.load(p) as z:
            pr = z["probs"].astype(np.float64) * float(z["scale"])
        pr /= pr.sum(axis=0, keepdims=True)
        want[t] = float((entropy(pr, axis=0) / np.log(pr.shape[0])).mean())
    assert list(q["tile"]) == sorted(want, key=lambda t: -want[t])
    for t, e in zip(q["tile"], q["entropy"]):
        assert e == pytest.approx(want[t], abs=1e-6)

    at = _app(run=rid, queue="entropy")
    assert list(_queue_table(at)["tile"]) == list(q["tile"])
    frames = at.get("iframe")
    assert len(frames) == 1 and frames[0].proto.alt.startswith(f"Review map of {q['tile'].iloc[0]}:")
