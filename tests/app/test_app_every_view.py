"""Every page × every tab × every stage kind, rendered under Streamlit's AppTest on a workspace holding a real run
of each kind (``tests/support/allkinds.py``: health, train, distill, evaluate, tta_ab, post, ensemble, refine).
A page that raises on any of them fails here: what a user can click, a test has rendered."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")
KINDS = ["health", "train", "distill", "evaluate", "tta_ab", "post", "ensemble", "refine"]
# the other stage kinds: their Run detail has tabs of its own (read from the page)
OTHER_KINDS = ["lr_find", "reliability", "export", "predict", "classify"]
DETAIL_TABS = ["Curves", "Per class", "Confusion", "Domains", "Health", "A/B", "Config", "Log", "Reliability"]


@pytest.fixture
def ws(allkinds_store, monkeypatch):
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(allkinds_store["workspace"]))
    import store

    store.ingest_all()          # nothing to do unless the store was removed (a kept workspace, code changes)
    return allkinds_store


def _ok(at: AppTest, where: str) -> AppTest:
    assert not at.exception, f"{where}: " + " | ".join(e.message for e in at.exception)
    _no_none_cells(at, where)
    return at


def _no_none_cells(at: AppTest, where: str) -> None:
    """Empty cells read "–", never "None": every table draws missing values with the "–" placeholder, and no
    text cell holds the word None (or nan) itself."""
    for d in at.dataframe:
        cols = list(d.value.columns)[:4]
        assert d.proto.placeholder == "–", f"{where}: table {cols} draws empty cells as 'None'"
        v = d.value
        for c in v.columns:
            if v[c].dtype == object:
                bad = v[c].map(lambda x: isinstance(x, str) and x.strip() in ("None", "nan", "NaN"))
                assert not bad.any(), f"{where}: table {cols}, column {c!r} shows {v[c][bad].iloc[0]!r}"


def _open(page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=180)
    _ok(at.run(), "home")
    if page:
        for k, v in query.items():
            at.query_params[k] = v
        at.switch_page(page)
        _ok(at.run(), f"{page} {query}")
    return at


def test_the_workspace_holds_every_stage_kind(ws):
    import store

    runs = store.list_runs()
    kinds = dict(zip(runs["run_id"], runs["kind"]))
    assert {role: kinds[rid] for role, rid in ws["runs"].items()} == {k: "evaluate" if k == "post" else k
                                                                      for k in KINDS + OTHER_KINDS}
    from typing import get_args

    from mapsage.config.schema import StageKind
    assert set(get_args(StageKind)) - {"demo_job"} == set(kinds[rid] for rid in ws["runs"].values())
    assert set(runs["status"]) == {"succeeded"}
    assert "post" in set(store.ab_rows(ws["runs"]["post"])["ab_kind"])     # post: an evaluate run with post.enabled
    with store.read_connection() as con:     # every evaluation says what it measured: split size and checkpoint
        unknown = con.execute("SELECT DISTINCT run_id FROM evaluations WHERE split_size IS NULL").fetchall()
    assert not unknown, f"evaluations without split_size (a subset would be ranked as a whole split): {unknown}"


@pytest.mark.parametrize("kind", KINDS)
def test_run_detail_every_tab_and_every_evaluation(ws, kind):
    rid = ws["runs"][kind]
    at = _open("views/run_detail.py", run=rid)
    assert [t.label for t in at.tabs] == DETAIL_TABS
    heads = [s for s in at.selectbox if s.key == "detail_headline"]
    for i in range(len(heads[0].options) if heads else 0):      # every evaluation as the headline
        [s for s in at.selectbox if s.key == "detail_headline"][0].select_index(i)
        _ok(at.run(), f"{kind} run, headline {i}")
    for tab in DETAIL_TABS:
        at.query_params["tab"] = tab
        _ok(at.run(), f"{kind} run, tab {tab}")
        if tab in ("Per class", "Confusion", "Domains"):
            picker = [s for s in at.selectbox if s.key == "detail_eval"]
            for option in (picker[0].options if picker else []):
                picker[0].set_value(option)
                _ok(at.run(), f"{kind} run, tab {tab}, evaluation {option}")
                picker = [s for s in at.selectbox if s.key == "detail_eval"]


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_run_detail_every_tab_of_the_other_kinds(ws, kind):
    at = _open("views/run_detail.py", run=ws["runs"][kind])
    tabs = [t.label for t in at.tabs]
    assert tabs and "Config" in tabs and "Log" in tabs
    for tab in tabs:
        at.query_params["tab"] = tab
        _ok(at.run(), f"{kind} run, tab {tab}")


def test_home_runs_plan_and_ab_pages(ws):
    _open()
    at = _open("views/runs.py")
    for split in at.selectbox(key="runs_split").options:
        at.selectbox(key="runs_split").set_value(split)
        for rank in at.selectbox(key="runs_rank").options:
            at.selectbox(key="runs_rank").set_value(rank)
            _ok(at.run(), f"runs split {split} rank {rank}")
    at = _open("views/plan.py")
    for tab in [t.label for t in at.tabs]:
        at.session_state["plan_stage_tab"] = tab
        _ok(at.run(), f"plan tab {tab}")
    _open("views/tta_ab.py")


def test_compare_every_kind_against_the_baseline(ws):
    base = ws["runs"]["train"]
    for kind in KINDS:
        if kind == "train":
            continue
        at = _open("views/compare.py", runs=f"{base},{ws['runs'][kind]}")
        for key in ("compare_split",):
            boxes = [s for s in at.selectbox if s.key == key]
            for option in (boxes[0].options if boxes else []):
                boxes[0].set_value(option)
                _ok(at.run(), f"compare baseline with {kind}, {key}={option}")
                boxes = [s for s in at.selectbox if s.key == key]
    _open("views/compare.py", runs=",".join(ws["runs"][k] for k in KINDS))


@pytest.mark.parametrize("kind", ["evaluate", "refine", "tta_ab", "post", "ensemble", "train"])
def test_review_every_run_with_masks(ws, kind):
    _open("views/review.py", run=ws["runs"][kind])
