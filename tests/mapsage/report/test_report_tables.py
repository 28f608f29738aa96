"""Report tables, thumbnails, escaping and exports on runs written the way the stages write them: the metrics
engine on the three real LoveDA masks (12 quadrant tiles) against predictions carrying a real model's boundary
errors, ingested into a store. Fast (no training); the end-to-end tests on trained runs are in test_report.py."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import store
from mapsage.errors import UserError
from mapsage.metrics import paired_bootstrap
from mapsage.report import (
    ReportData,
    build_tables,
    csv_safe,
    md_escape,
    render_html,
    tile_scores,
    tile_thumbnails,
    write_report,
)
from runners import cli
from store import schema as store_schema
from store.report_queries import UnknownRuns, report_frames
from tests.support.report import write_lab_run

XSS_NAME = "<img src=x onerror=alert(2)>"
XSS_CLASS = "<i>road</i>"
COMMENT = '=HYPERLINK("http://example.invalid","click") <b>looks wrong</b> | pipe'


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    ws = tmp_path_factory.mktemp("report-lab-ws")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAPSAGE_WORKSPACE", str(ws))
        store_schema.forget_checked()
        ids = {
            "alpha": write_lab_run("alpha", [{"variant": "raw", "shift": 12, "epoch": 0},
                                             {"variant": "raw", "shift": 6, "epoch": 1}]),
            "beta": write_lab_run("beta", [{"variant": "raw", "shift": 8, "epoch": 0},
                                           {"variant": "raw", "shift": 2, "epoch": 1}],
                                  run_info={"name": XSS_NAME}, overrides=["train.lr=1e-4"]),
            "gamma": write_lab_run(
                "gamma", [{"variant": "refine=raw", "shift": 6}, {"variant": "refine=crf", "shift": 3, "thin": 0}],
                overrides=["stage.kind=refine", "stage.plan_stage=4",
                           "dataset.classes=[background, building, '<i>road</i>', water, barren, forest, "
                           "agriculture]"],
                ab=[{"ab_kind": "refine", "variant": "refine=raw", "baseline": "refine=raw", "threshold": 1.0,
                     "criterion": "mbiou"},
                    {"ab_kind": "refine", "variant": "refine=crf", "baseline": "refine=raw", "threshold": 1.0,
                     "criterion": "mbiou", "images_per_s": 3.5}],
                artifacts=True),
            "delta": write_lab_run("delta", [{"variant": "raw", "shift": 4, "epoch": 0}], tiles_subset=slice(0, 8)),
        }
        store.ingest_all()
        tiles = store.tiles(ids["gamma"])
        store.add_verdict(ids["gamma"], tiles["tile"].iloc[0], "better", comment=COMMENT, reviewer="ana",
                          variant="refine=crf", baseline="refine=raw")
        yield {"ws": ws, "ids": ids}
    store_schema.forget_checked()


@pytest.fixture
def in_lab(lab, monkeypatch):
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(lab["ws"]))
    store_schema.forget_checked()
    return lab["ids"]


def data_of(*ids, **kw) -> ReportData:
    return ReportData.from_mapping(report_frames(list(ids)), **kw)


def test_experiment_table_is_the_latest_stored_evaluation(in_lab):
    d = data_of(in_lab["alpha"], in_lab["beta"], in_lab["gamma"])
    t = build_tables(d)
    m = store.metrics(list(in_lab.values()))
    m = m[m["domain"] == "all"]
    assert list(t.experiments["run_id"]) == [in_lab["alpha"], in_lab["beta"], in_lab["gamma"], in_lab["gamma"]]
    for _, e in t.experiments.iterrows():
        rows = m[(m["run_id"] == e["run_id"]) & (m["variant"] == e["variant"]) & (m["split"] == e["split"])]
        latest = rows.sort_values("seq").iloc[-1]
        assert e["eval_seq"] == latest["seq"]
        for c in ("miou", "mbiou", "macc", "mf1", "aacc"):
            assert e[c] == latest[c]
    alpha = t.experiments[t.experiments["run_id"] == in_lab["alpha"]].iloc[0]
    assert alpha["epoch"] == 1 and alpha["split"] == "val"
    # the A/B row's speed stands in where the evaluation has none; the baseline row wrote none
    crf = t.experiments[t.experiments["variant"] == "refine=crf"].iloc[0]
    assert crf["images_per_s"] == 3.5
    assert pd.isna(t.experiments[t.experiments["variant"] == "refine=raw"].iloc[0]["images_per_s"])


def test_bootstrap_of_runs_is_the_metrics_bootstrap_on_store_tiles(in_lab):
    d = data_of(in_lab["alpha"], in_lab["beta"], in_lab["delta"], n_boot=500, seed=3)
    t = build_tables(d)
    row = t.differences[t.differences["run_id_b"] == in_lab["beta"]].iloc[0]
    ref = paired_bootstrap(store.tiles(in_lab["alpha"], split="val", variant="raw"),
                           store.tiles(in_lab["beta"], split="val", variant="raw"), n=500, seed=3)
    assert (row["delta_miou"], row["ci_low_miou"], row["ci_high_miou"]) == (ref["delta"], ref["ci_low"],
                                                                            ref["ci_high"])
    assert (row["delta_mbiou"], row["ci_low_mbiou"], row["ci_high_mbiou"]) == (
        ref["mbiou"]["delta"], ref["mbiou"]["ci_low"], ref["mbiou"]["ci_high"])
    assert row["n_tiles"] == 12 and row["n_boot"] == 500 and row["seed"] == 3
    # dataset-level mIoU recomputed from the stored tile areas is the stored evaluation's mIoU
    m = store.metrics(in_lab["beta"], split="val", variant="raw", domain="all")
    assert row["miou_b"] == pytest.approx(float(m.sort_values("seq").iloc[-1]["miou"]), abs=1e-12)
    # the model with the smaller misregistration is better, well outside the noise
    assert row["delta_miou"] > 0 and row["ci_low_miou"] > 0 and bool(row["significant_miou"])
    # a run scored on other tiles is not compared; the reason says why
    (problem,) = [p for p in t.bootstrap_problems if p["run_id_b"] == in_lab["delta"]]
    assert "different tiles" in problem["reason"]


def test_ab_rows_interval_and_changed_tiles(in_lab):
    d = data_of(in_lab["gamma"], thumb_tiles=3)
    t = build_tables(d)
    ab = store.ab_rows(in_lab["gamma"])
    assert list(t.ab["decision"]) == list(ab["decision"])
    assert list(t.ab["gain"]) == list(ab["gain"])
    crf = t.ab[t.ab["variant"] == "refine=crf"].iloc[0]
    assert crf["criterion"] == "mbiou" and crf["decision"] == ab.iloc[1]["decision"]
    ref = paired_bootstrap(store.tiles(in_lab["gamma"], variant="refine=raw"),
                           store.tiles(in_lab["gamma"], variant="refine=crf"), n=2000, seed=0)
    assert (crf["ci_low"], crf["ci_high"]) == (ref["mbiou"]["ci_low"], ref["mbiou"]["ci_high"])
    assert crf["gain"] == pytest.approx(100 * ref["mbiou"]["delta"], abs=1e-5)
    # changed tiles: the largest per-tile Boundary IoU changes, computed from the stored areas
    sb = tile_scores(store.tiles(in_lab["gamma"], variant="refine=raw"), "mbiou")
    sv = tile_scores(store.tiles(in_lab["gamma"], variant="refine=crf"), "mbiou")
    delta = (sv - sb).dropna()
    top = delta.abs().sort_values(ascending=False, kind="stable")
    assert len(t.changed_tiles) == 3
    assert list(t.changed_tiles["delta"].abs()) == pytest.approx(list(top.iloc[:3]))
    assert set(t.changed_tiles["tile"]) <= set(delta.index)
    assert int(crf["tiles_better"]) + int(crf["tiles_worse"]) + int(crf["tiles_same"]) == 12
    assert int(crf["tiles_better"]) == int((delta > 1e-9).sum())


def test_thumbnails_from_artifacts_and_change_map(in_lab):
    d = data_of(in_lab["gamma"], thumb_tiles=2, thumb_px=128)
    t = build_tables(d)
    thumbs = tile_thumbnails(d, t.changed_tiles)
    assert len(thumbs) == 2
    art = store.artifacts(in_lab["gamma"])
    for th in thumbs:
        assert [p.caption for p in th.panels] == ["image", "label", "baseline: refine=raw", "variant: refine=crf",
                                                  "change"]
        for p in th.panels:
            assert p.uri and p.uri.startswith("data:image/")
            img = Image.open(io.BytesIO(base64.b64decode(p.uri.split(",", 1)[1])))
            assert img.size == (128, 128)
        paths = {v: art[(art["tile"] == th.tile) & (art["variant"] == v)]["abs_path"].iloc[0]
                 for v in ("refine=raw", "refine=crf", "label")}
        base, var, label = (np.asarray(Image.open(paths[v])) for v in ("refine=raw", "refine=crf", "label"))
        changed = int((base != var).sum())
        note = th.panels[-1].note
        assert note.startswith(f"{changed:,} px changed")
        fixed = int(((base != var) & (label != 255) & (var == label)).sum())
        assert f"{fixed:,} fixed" in note


def test_missing_prediction_file_is_said_not_hidden(in_lab, tmp_path):
    d = data_of(in_lab["gamma"], thumb_tiles=1)
    t = build_tables(d)
    tile = t.changed_tiles.iloc[0]["tile"]
    art = d.artifacts
    art.loc[(art["tile"] == tile) & (art["variant"] == "refine=crf"), "abs_path"] = str(tmp_path / "gone.png")
    (th,) = tile_thumbnails(d, t.changed_tiles)
    panel = next(p for p in th.panels if p.caption == "variant: refine=crf")
    assert panel.uri is None and "missing" in panel.note and "gone.png" in panel.note
    assert [p.caption for p in th.panels][-1] == "variant: refine=crf"   # no change map without both masks


def test_user_text_is_escaped_everywhere(in_lab, tmp_path):
    d = data_of(in_lab["alpha"], in_lab["beta"], in_lab["gamma"])
    files = write_report(d, tmp_path / "r.html", csv_dir=tmp_path / "csv", md_path=tmp_path / "r.md")
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    for raw in (XSS_NAME, XSS_CLASS, "<b>looks wrong</b>"):
        assert raw not in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "&lt;i&gt;road&lt;/i&gt;" in html
    assert "&lt;b&gt;looks wrong&lt;/b&gt;" in html
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "<img" not in md and "<i>" not in md and "&lt;img src=x onerror=alert\\(2\\)&gt;" in md
    verdicts = pd.read_csv(files.csv["verdicts"])
    assert verdicts["comment"].iloc[0] == "'" + COMMENT        # a spreadsheet shows it, never runs it
    per_class = pd.read_csv(files.csv["per_class"])
    assert XSS_CLASS in set(per_class["class_name"])           # CSV keeps the data as stored


def test_markdown_and_csv_helpers():
    assert md_escape("a|b <c> *d*") == "a\\|b &lt;c&gt; \\*d\\*"
    assert md_escape(None) == "–"
    df = pd.DataFrame({"t": ["=1+1", "+x", "-y", "@z", "ok", None], "n": [-1.5, 2.0, 3.0, 4.0, 5.0, 6.0]})
    safe = csv_safe(df)
    assert list(safe["t"][:5]) == ["'=1+1", "'+x", "'-y", "'@z", "ok"] and pd.isna(safe["t"].iloc[5])
    assert list(safe["n"]) == list(df["n"])


def test_single_run_and_invalid_inputs(in_lab):
    d = data_of(in_lab["alpha"])
    html = render_html(d)
    assert "One run: nothing to compare." in html
    t = build_tables(d)
    assert t.differences.empty and t.config_diff.empty and t.bootstrap_problems == []
    with pytest.raises(UserError):
        ReportData(runs=[])
    with pytest.raises(UserError, match="n_boot"):
        data_of(in_lab["alpha"], n_boot=0)
    with pytest.raises(UnknownRuns, match="no-such-run"):
        report_frames(["no-such-run"])


def test_cli_report_and_its_errors(in_lab, tmp_path, capsys):
    out = tmp_path / "lab.html"
    code = cli.main(["report", in_lab["alpha"][:4], in_lab["beta"], "--out", str(out), "--csv-dir",
                     str(tmp_path / "csv"), "--md", str(tmp_path / "lab.md"), "--n-boot", "200"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"report: {out}" in printed and "csv: 11 tables" in printed
    diffs = pd.read_csv(tmp_path / "csv" / "differences.csv")
    assert list(diffs["n_boot"]) == [200] and list(diffs["run_id_a"]) == [in_lab["alpha"]]
    assert cli.main(["report", "no-such-run", "--out", str(out)]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err
    assert cli.main(["report", in_lab["alpha"], "--out", str(tmp_path / "r.txt")]) == 2
    assert "ending in .html" in capsys.readouterr().err


def test_curves_and_confusion_tables(in_lab):
    d = data_of(in_lab["alpha"], in_lab["beta"])
    t = build_tables(d)
    c = t.curves
    alpha_miou = c[(c["run_id"] == in_lab["alpha"]) & (c["name"] == "miou")].sort_values("epoch")
    m = store.metrics(in_lab["alpha"], domain="all", variant="raw").sort_values("epoch")
    assert list(alpha_miou["value"]) == list(m["miou"]) and list(alpha_miou["epoch"]) == [0, 1]
    loss = c[(c["run_id"] == in_lab["alpha"]) & (c["name"] == "loss")]
    assert list(loss["value"]) == [1.0, 0.5] and set(loss["split"]) == {"train"}
    cf = t.confusion[(t.confusion["run_id"] == in_lab["beta"]) & (t.confusion["domain"] == "all")]
    matrix, names = store.confusion_matrix(in_lab["beta"], split="val", variant="raw")
    rebuilt = cf.pivot(index="label_id", columns="pred_id", values="pixels").to_numpy()
    assert np.array_equal(rebuilt, matrix) and list(dict.fromkeys(cf["label_class"])) == names
    # domains: the per-class table carries the per-domain rows too (LoveDA's Rural here)
    assert set(t.per_class["domain"]) == {"all", "Rural"}
    assert json.loads(json.dumps(list(t.per_class.columns)))[:3] == ["run", "run_id", "split"]
