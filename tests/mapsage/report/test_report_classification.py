"""Reports of image-classification runs: two real folds of the tiny scene classifier (one epoch, through the job
worker) in one ``cv.group`` beside a segmentation run; the report's classification table, per-class table,
calibration figures and fold group against the store and the runs' ``calibration.json``."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

import store
from runners import cli
from store import schema as store_schema
from tests.support.app import run_in_process
from tests.support.report import write_lab_run

TEMPLATE = "configs/stage1_classification/cls_test-byobnet_dubai-scenes_cpu.yaml"
QUICK = ["train.epochs=1", "classify.img_size=32", "classify.max_images=160", "classify.gradcam_images=2",
         "classify.errors_top_k=6", "runtime.threads=1"]
CLASSES = ["water", "land", "road", "building", "vegetation"]


@pytest.fixture(scope="module")
def cls_ws(tmp_path_factory):
    ws = tmp_path_factory.mktemp("report-cls-ws")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAPSAGE_WORKSPACE", str(ws))
        store_schema.forget_checked()
        ids = {f"f{f}": run_in_process(TEMPLATE, QUICK + ["dataset.split.folds=5", f"dataset.split.fold={f}",
                                                          "cv.group=grp_rep", "cv.repeat=0"], name=f"cls-rep-f{f}")
               for f in (0, 1)}
        ids["seg"] = write_lab_run("seg", [{"variant": "raw", "shift": 6, "epoch": 0}])
        store.ingest_all(wait=True)
        yield {"ws": ws, "ids": ids}
    store_schema.forget_checked()


@pytest.fixture(scope="module")
def report(cls_ws, tmp_path_factory):
    out = tmp_path_factory.mktemp("report-cls-out")
    ids = cls_ws["ids"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAPSAGE_WORKSPACE", str(cls_ws["ws"]))
        store_schema.forget_checked()
        assert cli.main(["report", ids["f0"], ids["f1"], ids["seg"], "--out", str(out / "r.html"),
                         "--md", str(out / "r.md"), "--csv-dir", str(out / "csv"), "--n-boot", "50"]) == 0
        final = {}
        for k in ("f0", "f1"):
            m = store.metrics(ids[k])
            final[k] = json.loads(m[m["epoch"].isna()].iloc[-1]["extra_json"])
        yield {"html": (out / "r.html").read_text(encoding="utf-8"), "md": (out / "r.md").read_text(encoding="utf-8"),
               "csv": {p.stem: pd.read_csv(p) for p in (out / "csv").glob("*.csv")}, "final": final, "ids": ids,
               "ws": cls_ws["ws"]}
    store_schema.forget_checked()


def _html_section(html: str, figures: bool = False) -> str:
    i = html.index('<section id="classification">')
    sec = html[i:html.index("</section>", i)]
    return sec if figures else re.sub(r"<script.*?</script>", "", sec, flags=re.S)   # the visible text


def _md_section(md: str) -> str:
    i = md.index("## Image classification")
    return md[i:md.index("\n## ", i + 3)]


def _md_row(md: str, *cells: str) -> str:
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and all(f"| {c} |" in ln for c in cells)]
    assert len(rows) == 1, (cells, rows)
    return rows[0]


def test_classification_table_equals_the_store(report):
    html, md, csv = _html_section(report["html"]), _md_section(report["md"]), report["csv"]
    cls, exp = csv["classification"], csv["experiments"]
    assert set(cls["run_id"]) == {report["ids"]["f0"], report["ids"]["f1"]}
    assert set(exp["run_id"]) == {report["ids"]["seg"]}              # each table keeps its own runs
    for k in ("f0", "f1"):
        x = report["final"][k]
        row = cls[(cls["run_id"] == report["ids"][k]) & cls["epoch"].isna()].iloc[0]
        assert row["top1"] == x["top1"] and row["macro_f1"] == x["macro_f1"] and row["ece"] == x["ece"]
        assert row["ece_calibrated"] == x["ece_calibrated"] and row["temperature"] == x["temperature"]
        assert row["checkpoint"] == x["checkpoint_name"] and row["split"] == "val" and row["n_images"] > 0
        md_row = _md_row(md, f"cls-rep-f{k[1]}", "final")
        assert f"| {100 * x['top1']:.2f} |" in md_row and f"| {100 * x['macro_f1']:.2f} |" in md_row
        assert f"| {int(row['n_images'])} |" in md_row and f"| {row['variant']} |" in md_row
        assert f'<td class="num">{100 * x["top1"]:.2f}</td>' in html


def test_per_class_table_lists_every_class(report):
    html, md, pc = _html_section(report["html"]), _md_section(report["md"]), report["csv"]["classification_per_class"]
    for k in ("f0", "f1"):
        rows = pc[pc["run_id"] == report["ids"][k]]
        for seq, g in rows.groupby("eval_seq"):
            assert list(g["class_name"]) == CLASSES
            conf = report["csv"]["classification_confusion"]
            conf = conf[(conf["run_id"] == report["ids"][k]) & (conf["eval_seq"] == seq)]
            assert list(g["support"]) == [int(conf[conf["label_id"] == i]["images"].sum()) for i in range(5)]
    for c in CLASSES:
        assert re.search(rf"<td>{c}( \(absent[^<]*\))?</td>", html)
        assert re.search(rf"^\| {c}( \\\(absent[^|]*\\\))? \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| \d+ \|$", md, re.M)


def test_ece_before_after_equal_calibration_json(report):
    from mapsage.workspace import run_dir

    html, md = _html_section(report["html"]), _md_section(report["md"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAPSAGE_WORKSPACE", str(report["ws"]))
        for k in ("f0", "f1"):
            cal = json.loads((run_dir(report["ids"][k]) / "calibration.json").read_text())
            text = f"{100 * cal['ece_before']:.2f} → {100 * cal['ece_after']:.2f}"
            assert f"| {text} | {cal['temperature']:.3f} |" in _md_row(md, f"cls-rep-f{k[1]}", "final")
            assert f'<td class="num">{text}</td>' in html
            assert f"ECE {text} % with temperature scaling, T = {cal['temperature']:.3f}" in md
    figs = _html_section(report["html"], figures=True)
    assert figs.count("reliability, T = ") == 2 and figs.count("confusion (images)") >= 2


def test_fold_group_and_no_empty_markers(report):
    html, md, g = _html_section(report["html"]), _md_section(report["md"]), report["csv"]["classification_groups"]
    assert len(g) == 1 and g.iloc[0]["group"] == "grp_rep" and g.iloc[0]["runs"] == 2
    top1 = [report["final"][k]["top1"] for k in ("f0", "f1")]
    assert g.iloc[0]["top1_mean"] == pytest.approx(sum(top1) / 2)
    assert g.iloc[0]["top1_sd"] == pytest.approx(pd.Series(top1).std(ddof=1))
    assert "Fold / seed groups" in html and "### Fold / seed groups" in md
    for text in (html, md):
        assert "None" not in text and not re.search(r"\bnan\b", text, re.I)
    assert "mIoU" not in md                                           # no segmentation columns for these runs
