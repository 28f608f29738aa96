"""The review queue on the Review page (Streamlit AppTest) on a REAL evaluation with saved probabilities
(``tests/conftest_queue.py``): the queue's table and order are the runner's, ``?queue=entropy`` walks the tiles in
that order, *Review the next tile* opens the first unreviewed one, a verdict sends a tile to the end."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest_queue import QUEUE_TILES, queue_store  # noqa: F401  (session fixture)
from tests.conftest_review import review_store  # noqa: F401  (session fixture under queue_store)

ROOT = Path(__file__).resolve().parents[1]
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
