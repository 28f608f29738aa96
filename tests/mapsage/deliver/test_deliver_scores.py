"""External (benchmark) scores: recorded with `mapsage runs score`, kept by a rebuild, shown as the val→test gap
in the run list (Runs page) and in the report (HTML and Markdown)."""
from __future__ import annotations

import pytest

from tests.support.store import make_run, write_training


@pytest.fixture
def scored_run(tmp_workspace):
    import store

    ev = make_run("train_scored")
    write_training(ev)
    store.ingest_all(wait=True)
    return "train_scored"


def test_runs_score_records_a_test_score_and_the_gap(scored_run, capsys):
    import store
    from runners.cli import main

    best_val = store.run(scored_run)["best_val_miou"]
    assert 0 < best_val < 1
    assert main(["runs", "score", scored_run, "--split", "test", "--value", "52.4", "--source", "codalab"]) == 0
    out = capsys.readouterr().out
    assert "recorded miou test = 52.40 (codalab)" in out and f"val {100 * best_val:.2f}" in out
    gaps = store.val_test_gaps(scored_run)
    assert len(gaps) == 1
    row = gaps.iloc[0]
    assert row["external_value"] == pytest.approx(0.524) and row["gap"] == pytest.approx(0.524 - best_val)
    runs = store.list_runs()
    r = runs.set_index("run_id").loc[scored_run]
    assert r["external_miou"] == pytest.approx(0.524) and r["external_source"] == "codalab"
    assert r["val_test_gap"] == pytest.approx(0.524 - best_val)
    # a later score of the same split replaces it in the list; the history stays
    assert main(["runs", "score", scored_run, "--value", "0.53", "--source", "codalab"]) == 0
    assert store.list_runs().set_index("run_id").loc[scored_run, "external_miou"] == pytest.approx(0.53)
    assert len(store.external_scores(scored_run)) == 2
    store.rebuild()
    assert len(store.external_scores(scored_run)) == 2          # written by hand: a rebuild keeps them
    # bad values are one-line errors
    assert main(["runs", "score", scored_run, "--value", "152", "--source", "codalab"]) == 2
    assert "points between 0 and 100" in capsys.readouterr().err


def test_runs_table_and_report_show_the_gap(scored_run):
    import store
    from app.widgets.tables import experiment_table
    from mapsage.report import ReportData, render_html, render_markdown
    from store.report_queries import report_frames

    best_val = store.run(scored_run)["best_val_miou"]
    store.add_external_score(scored_run, "test", 72.0, "codalab")
    table = experiment_table(store.list_runs(), store.leaderboard("val"), "val")
    row = table.set_index("run_id").loc[scored_run]
    assert row["External mIoU"] == pytest.approx(72.0)
    assert row["Val→test gap"] == pytest.approx(72.0 - 100 * best_val)
    data = ReportData.from_mapping(report_frames([scored_run]), n_boot=50)
    gap = f"{72.0 - 100 * best_val:+.2f}"
    html = render_html(data)
    assert "val→test gap" in html and gap in html and "72.00 (test · codalab)" in html
    md = render_markdown(data)
    assert "## External scores" in md and gap in md
