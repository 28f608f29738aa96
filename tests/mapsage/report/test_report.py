"""Comparison reports of REAL runs (tests/support/report.py: two tiny training runs of the demo template, a TTA
A/B run and a refinement A/B run on the baseline's checkpoint, through the job worker, ingested).

* ``mapsage report`` of the two training runs opens in headless Chromium (Debian's /usr/bin/chromium, every
  request but the file aborted) with no console error and no dialog; its screenshot goes to test-artifacts/.
* The run titled ``<script>alert(1)</script>`` -- and the same text as a run name -- shows as text.
* The CSV tables equal the store's figures (and the bootstrap is mapsage.metrics' on the stored tile rows).
* The full report (A/B tables with decisions, thumbnails of the tiles that changed most) renders every picture.
* The app's export widget offers the three files and builds them on demand.
"""
from __future__ import annotations

import io
import json
import os
import re
import time
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import store
from mapsage.metrics import paired_bootstrap
from store import schema as store_schema
from tests.support.report import XSS, make_report_runs

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory):
    """Four real runs in their own workspace (made once; the environment is restored afterwards)."""
    ws = tmp_path_factory.mktemp("report-ws")
    old = {k: os.environ.get(k) for k in ("MAPSAGE_WORKSPACE", "MAPSAGE_WORKER_INGEST_S")}
    os.environ["MAPSAGE_WORKSPACE"] = str(ws)
    os.environ["MAPSAGE_WORKER_INGEST_S"] = "0"
    store_schema.forget_checked()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        ids = make_report_runs()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        store_schema.forget_checked()
    print(f"\nreport fixture: 4 real runs in {time.perf_counter() - t0:.1f} s wall, "
          f"{time.process_time() - c0:.1f} s CPU of this process")
    return {"ws": ws, "ids": ids}


@pytest.fixture
def real(report_runs, monkeypatch):
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(report_runs["ws"]))
    store_schema.forget_checked()
    yield report_runs["ids"]
    store_schema.forget_checked()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium) to run the browser "
                    f"checks; no browser is downloaded")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_offline(browser, path: Path, screenshot: Path) -> dict:
    """Open ``path`` with every non-file request aborted; collect console errors, page errors, dialogs and
    requests; wait for plotly; write a full-page screenshot."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    seen = {"errors": [], "dialogs": [], "requests": []}
    page.on("console", lambda m: seen["errors"].append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(f"page error: {e}"))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
               else route.abort())
    page.goto(path.resolve().as_uri(), wait_until="load")
    n_divs = page.evaluate("document.querySelectorAll('div.plotly-graph-div').length")
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {n_divs}", timeout=60000)
    seen["n_figures"] = n_divs
    seen["n_plotted"] = page.evaluate("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0 ? "
                                      "document.querySelectorAll('.js-plotly-plot').length : 0")
    seen["text"] = page.inner_text("body")
    seen["title"] = page.title()
    seen["scripts_with_alert"] = page.evaluate(
        "[...document.scripts].filter(s => s.textContent.includes('alert(1)') && s.textContent.length < 2000)"
        ".length")
    seen["images"] = page.evaluate("[...document.images].map(i => [i.naturalWidth, i.naturalHeight, "
                                   "i.src.slice(0, 22)])")
    seen["legend_texts"] = page.evaluate("[...document.querySelectorAll('.legendtext')].map(t => t.textContent)")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    return seen


class _Links(HTMLParser):
    """Every URL-carrying attribute and every element name of a page."""

    def __init__(self):
        super().__init__()
        self.urls, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "action", "poster", "data") and v:
                self.urls.append((tag, k, v))


def assert_self_contained(html: str) -> None:
    p = _Links()
    p.feed(html)
    bad = [u for u in p.urls if not (u[2].startswith("data:") or u[2].startswith("#"))]
    assert not bad, f"external references: {bad[:5]}"
    assert "link" not in p.tags and "iframe" not in p.tags
    # plotly.js is inlined exactly once (its bundle header), every figure without its own copy
    assert html.count("* plotly.js v") == 1
    assert p.tags.count("script") == 1 + html.count("Plotly.newPlot(")


@pytest.mark.browser
def test_two_real_runs_report_opens_offline_in_chromium(real, browser, tmp_path, capsys):
    from runners import cli

    out = tmp_path / "two_runs.html"
    code = cli.main(["report", real["baseline"], real["challenger"], "--out", str(out), "--csv-dir",
                     str(tmp_path / "csv"), "--md", str(tmp_path / "two_runs.md")])
    assert code == 0, capsys.readouterr().err
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    shot = PROJECT_ROOT / "test-artifacts" / "report_two_real_runs.png"
    seen = open_offline(browser, out, shot)
    assert seen["errors"] == [] and seen["dialogs"] == []
    assert [u for u in seen["requests"] if not u.startswith(("file://", "data:"))] == []
    assert seen["n_figures"] >= 6 and seen["n_plotted"] == seen["n_figures"]
    assert shot.stat().st_size > 50_000
    text = seen["text"]
    # the run titled <script>alert(1)</script> shows the title as text, and no script carries it
    assert XSS in text and seen["scripts_with_alert"] == 0
    for needle in ("Experiment table", "Differences and their confidence intervals", "run vs reference",
                   "Per-class IoU and Boundary IoU", "Confusion matrices", "Config differences", "Provenance",
                   real["baseline"], real["challenger"], "loss.schedule", "train.seed"):
        assert needle in text, needle
    # every figure labelled with its split
    assert "split val" in text and "mIoU %" in text
    md = (tmp_path / "two_runs.md").read_text(encoding="utf-8")
    assert "<script>" not in md and "| challenger | raw | val |" in md


def test_csv_tables_equal_the_store(real, tmp_path):
    from runners import cli

    ids = [real["baseline"], real["challenger"], real["tta"], real["refine"]]
    assert cli.main(["report", *ids, "--out", str(tmp_path / "all.html"), "--csv-dir", str(tmp_path / "csv"),
                     "--n-boot", "1000"]) == 0
    csv = {p.stem: pd.read_csv(p) for p in (tmp_path / "csv").glob("*.csv")}
    assert set(csv) == {"experiments", "per_class", "confusion", "differences", "ab", "curves", "changed_tiles",
                        "config_diff", "provenance", "verdicts", "health"}
    m = store.metrics(ids, domain="all")
    # experiments: one row per (run, split, variant), each the latest stored evaluation's figures, exactly
    e = csv["experiments"]
    assert len(e) == len(m.groupby(["run_id", "split", "variant"]))
    for _, row in e.iterrows():
        ev = m[(m["run_id"] == row["run_id"]) & (m["seq"] == row["eval_seq"])].iloc[0]
        assert (row["split"], row["variant"]) == (ev["split"], ev["variant"])
        for c in ("miou", "mbiou", "macc", "mf1", "aacc", "per_image_miou"):
            assert row[c] == ev[c], (row["run_id"], c)
        later = m[(m["run_id"] == row["run_id"]) & (m["split"] == row["split"]) & (m["variant"] == row["variant"])]
        assert row["eval_seq"] == later["seq"].max()
    assert set(e["variant"]) == {"raw", "tta=off", "tta=flip", "refine=raw", "refine=crf"}
    # per-class rows equal the store's class rows of those evaluations
    pc = csv["per_class"]
    for rid in ids:
        got = pc[(pc["run_id"] == rid)]
        for seq, g in got.groupby("eval_seq"):
            want = store.per_class(rid, split=None, domain=None, epoch=None)
            want = want[want["seq"] == seq].sort_values("class_id")
            assert list(g["class_name"]) == list(want["class_name"])
            np.testing.assert_array_equal(g["iou"].to_numpy(float), want["iou"].to_numpy(float))
            np.testing.assert_array_equal(g["biou"].to_numpy(float), want["biou"].to_numpy(float))
    # confusion matrices
    cf = csv["confusion"]
    for rid in (real["baseline"], real["challenger"]):
        matrix, names = store.confusion_matrix(rid, split="val", variant="raw")
        g = cf[(cf["run_id"] == rid) & (cf["variant"] == "raw") & (cf["domain"] == "all")]
        assert np.array_equal(g.pivot(index="label_id", columns="pred_id", values="pixels").to_numpy(), matrix)
    # A/B rows: decisions, gains, thresholds and figures as stored
    ab = csv["ab"].sort_values(["run_id", "seq"]).reset_index(drop=True)
    sab = store.ab_rows(ids).sort_values(["run_id", "seq"]).reset_index(drop=True)
    assert len(ab) == len(sab) == 4 and list(ab["seq"]) == list(sab["seq"])
    for c in ("decision", "variant", "baseline", "criterion"):
        assert list(ab[c]) == list(sab[c])
    for c in ("gain", "threshold", "miou", "mbiou", "baseline_miou", "baseline_mbiou"):
        np.testing.assert_array_equal(ab[c].to_numpy(float), sab[c].to_numpy(float))
    # the bootstrap intervals are mapsage.metrics' paired bootstrap on the store's per-tile rows
    d = csv["differences"]
    runs_row = d[d["comparison"] == "run vs reference"].iloc[0]
    ref = paired_bootstrap(store.tiles(real["baseline"], split="val", variant="raw"),
                           store.tiles(real["challenger"], split="val", variant="raw"), n=1000, seed=0)
    assert (runs_row["delta_miou"], runs_row["ci_low_miou"], runs_row["ci_high_miou"]) == (
        ref["delta"], ref["ci_low"], ref["ci_high"])
    assert runs_row["miou_a"] == pytest.approx(float(e[e["run_id"] == real["baseline"]]["miou"].iloc[0]),
                                               abs=1e-12)
    for _, r in d[d["comparison"] == "A/B"].iterrows():
        boot = paired_bootstrap(store.tiles(r["run_id_a"], variant=r["variant_a"]),
                                store.tiles(r["run_id_b"], variant=r["variant_b"]), n=1000, seed=0)
        assert (r["delta_mbiou"], r["ci_low_mbiou"], r["ci_high_mbiou"]) == (
            boot["mbiou"]["delta"], boot["mbiou"]["ci_low"], boot["mbiou"]["ci_high"])
        # the stored A/B gain is the same difference, in points
        stored = sab[(sab["run_id"] == r["run_id_b"]) & (sab["variant"] == r["variant_b"])].iloc[0]
        crit = stored["criterion"]
        assert stored["gain"] == pytest.approx(100 * r[f"delta_{crit}"], abs=1e-5)
    # curves: the stored per-epoch figures
    cv = csv["curves"]
    for rid in (real["baseline"], real["challenger"]):
        got = cv[(cv["run_id"] == rid) & (cv["name"] == "miou")].sort_values("epoch")
        want = m[(m["run_id"] == rid) & m["epoch"].notna()].sort_values("epoch")
        np.testing.assert_array_equal(got["value"].to_numpy(float), want["miou"].to_numpy(float))
        assert list(got["epoch"]) == [0, 1]
        loss = cv[(cv["run_id"] == rid) & (cv["name"] == "loss")].sort_values("epoch")
        s = store.scalars(rid, names="loss", split="train_epoch").sort_values("epoch")
        np.testing.assert_array_equal(loss["value"].to_numpy(float), s["value"].to_numpy(float))
    # provenance: the stored commit, config hash and dataset of each run
    prov = csv["provenance"].set_index("run_id")
    for rid in ids:
        r = store.run(rid)
        assert prov.loc[rid, "code_commit"] == r["code_commit"] and prov.loc[rid, "config_hash"] == r["config_hash"]
        assert prov.loc[rid, "dataset"] == r["dataset"] == "dubai"
    assert prov.loc[real["challenger"], "title"] == XSS


@pytest.mark.browser
def test_full_report_ab_decisions_and_thumbnails_in_chromium(real, browser, tmp_path):
    from runners import cli

    ids = [real["baseline"], real["challenger"], real["tta"], real["refine"]]
    out = tmp_path / "full.html"
    assert cli.main(["report", *ids, "--out", str(out), "--md", str(tmp_path / "full.md"), "--thumbs", "2"]) == 0
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    seen = open_offline(browser, out, PROJECT_ROOT / "test-artifacts" / "report_full_real_runs.png")
    assert seen["errors"] == [] and seen["dialogs"] == []
    assert [u for u in seen["requests"] if not u.startswith(("file://", "data:"))] == []
    text = seen["text"]
    ab = store.ab_rows(ids)
    for _, r in ab.iterrows():
        assert f"{r['variant']}\t{r['baseline']}\tval\t{r['decision']}" in text
    assert "tta A/B on split val" in text and "refine A/B on split val" in text
    # thumbnails: 2 tiles per variant, 5 pictures each (image, label, baseline, variant, change map), all decoded
    imgs = seen["images"]
    assert len(imgs) == 2 * 2 * 5
    assert all(w > 0 and h > 0 and src.startswith("data:image/") for w, h, src in imgs)
    # the TTA run saved predictions only: its image and label come from the run's dataset
    assert "tta=flip against tta=off (split val)" in text and "refine=crf against refine=raw (split val)" in text
    md = (tmp_path / "full.md").read_text(encoding="utf-8")
    for _, r in ab.iterrows():
        assert f"**{r['decision']}**" in md


@pytest.mark.browser
def test_run_named_script_appears_as_text(real, browser, tmp_path):
    """A run whose stored name is ``<script>alert(1)</script>`` (and whose title is, from its real config)."""
    from mapsage.report import ReportData, render_html
    from store.report_queries import report_frames

    frames = report_frames([real["baseline"], real["challenger"]])
    for r in frames["runs"]:
        if r["run_id"] == real["challenger"]:
            assert r["title"] == XSS                       # from the run's config, through the store
            r["name"] = XSS                                # as a name too
    out = tmp_path / "xss.html"
    out.write_text(render_html(ReportData.from_mapping(frames)), encoding="utf-8")
    seen = open_offline(browser, out, PROJECT_ROOT / "test-artifacts" / "report_script_name.png")
    assert seen["dialogs"] == [] and seen["errors"] == [] and seen["scripts_with_alert"] == 0
    assert seen["text"].count(XSS) >= 4                    # runs table, experiment table, config diff, provenance
    assert XSS in seen["title"]
    assert any(XSS in t for t in seen["legend_texts"])     # plotly legends show it as text too


def test_app_report_widget_builds_the_three_files(real):
    from streamlit.testing.v1 import AppTest

    from app.widgets.report_button import deferred, file_name

    ids = [real["baseline"], real["challenger"]]
    script = (f"import sys; sys.path.insert(0, {str(PROJECT_ROOT)!r})\n"
              "from app.widgets.report_button import report_button\n"
              f"report_button({ids!r}, key='t', names=['baseline', '<script>x</script>'])\n")
    at = AppTest.from_string(script, default_timeout=60).run()
    assert not at.exception
    buttons = at.get("download_button")
    assert [b.proto.label for b in buttons] == ["HTML report", "Markdown summary", "CSV tables (zip)"]
    assert all(b.proto.deferred_file_id for b in buttons)
    html = deferred(ids, "html")().decode("utf-8")
    assert html.startswith("<!DOCTYPE html>") and real["challenger"] in html
    assert_self_contained(html)
    md = deferred(ids, "md")().decode("utf-8")
    assert md.startswith("# MapSage report") and "| baseline | raw | val |" in md
    with zipfile.ZipFile(io.BytesIO(deferred(ids, "csv")())) as zf:
        assert "experiments.csv" in zf.namelist() and "differences.csv" in zf.namelist()
        e = pd.read_csv(zf.open("experiments.csv"))
    assert set(e["run_id"]) == set(ids)
    problem = deferred(["no-such-run"], "html")().decode("utf-8")
    assert "Report not built" in problem and "no-such-run" in problem
    assert re.fullmatch(r"mapsage-report_baseline_\+1_\d{8}-\d{4}\.html",
                        file_name(["baseline", "<script>x</script>"], "html"))
    assert json.loads(json.dumps(file_name(["a/b c"], "md"))).startswith("mapsage-report_a-b-c_")
