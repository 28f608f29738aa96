"""The workbench in a real browser: headless Chromium drives ``streamlit run app/main.py``.

Opens the Plan board on an empty workspace, launches the demo baseline with small overrides (2 epochs of 2 steps,
128 px crops, 2 validation tiles), sees it running with a progress bar, sees it finish, finds it on the Runs page
and opens its detail page. Screenshots of each step go to ``test-artifacts/browser_app/``.

Never downloads a browser: it uses Debian's ``/usr/bin/chromium`` and is skipped when that is absent."""
from __future__ import annotations

import os
import re

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, require_browser, store_json, streamlit_server

RUN_NAME = "browser-demo-baseline"
EXTRA = "\n".join([f"stage.name={RUN_NAME}", "train.batch_size=2", "train.num_workers=0", "eval.mode=whole",
                   "eval.save_predictions=false", "runtime.threads=1"])

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def app_server(tmp_path):
    require_browser()
    ws = tmp_path / "workspace"
    ws.mkdir()
    try:
        with streamlit_server(ws, tmp_path / "streamlit.log", MAPSAGE_CPU_JOBS="1") as url:
            yield {"url": url, "workspace": ws, "log": tmp_path / "streamlit.log"}
    finally:
        # a job still running (a failed assertion midway) is cancelled through the runner, by run id
        old = os.environ.get("MAPSAGE_WORKSPACE")
        os.environ["MAPSAGE_WORKSPACE"] = str(ws)
        try:
            from runners import api

            for rid in (p.name for p in (ws / "runs").glob("*") if p.is_dir()):
                if not api.status(rid).get("final"):
                    api.cancel(rid, grace_s=5, wait=True)
        finally:
            if old is None:
                os.environ.pop("MAPSAGE_WORKSPACE", None)
            else:
                os.environ["MAPSAGE_WORKSPACE"] = old


def test_launch_demo_baseline_watch_it_and_open_it(app_server, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    out = artifacts_dir / "browser_app"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    url = app_server["url"]

    def shot(page, name: str) -> None:
        page.screenshot(path=str(out / f"{name}.png"), full_page=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 2200})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)          # the machine is shared: reruns can take seconds

            # 1. the Plan board of an empty workspace
            page.goto(f"{url}/plan")
            expect(page.get_by_text("No job is queued or running.")).to_be_visible(timeout=90_000)
            form = page.locator("[data-testid=stExpander]").filter(
                has_text="Demo baseline: SegFormer-B0 on Dubai").first
            expect(form.get_by_text("Loss mix")).to_be_visible()
            expect(form.get_by_role("spinbutton", name="Epochs", exact=True)).to_be_visible()
            expect(form.get_by_role("textbox", name="More overrides")).to_be_visible()
            page.wait_for_timeout(1000)
            shot(page, "01_plan_empty")

            # 2. small overrides, then Launch
            for label, value in (("Epochs", "2"), ("Steps per epoch (0 = all)", "2"),
                                 ("Max samples per split (0 = all)", "2"), ("Crop height", "128"),
                                 ("Crop width", "128")):
                form.get_by_role("spinbutton", name=label, exact=True).fill(value)
            form.get_by_role("textbox", name="More overrides").fill(EXTRA)
            form.get_by_role("button", name="Launch").click()
            # no health run yet on this workspace: the plan's gate asks first, naming what is missing
            expect(page.get_by_text("health gate: no health run on dataset", exact=False).first).to_be_visible()
            shot(page, "01b_health_gate")
            page.get_by_role("button", name="Launch anyway").click()
            expect(page.get_by_text("Launched", exact=False).first).to_be_visible()
            expect(page.get_by_text("health gate overridden", exact=False).first).to_be_visible()
            # the template's own epochs may already be 2; steps per epoch certainly differs from it
            expect(page.get_by_text("--set 'train.steps_per_epoch=2'", exact=False).first).to_be_visible()

            # 3. running, with a progress bar (the live fragment refreshes on its own)
            live = page.get_by_text("1 active", exact=False).first
            expect(live).to_be_visible(timeout=60_000)
            expect(page.locator("[data-testid=stProgress]").first).to_be_visible(timeout=120_000)
            expect(page.get_by_text(re.compile(r"running$")).first).to_be_visible(timeout=120_000)   # status badge
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=stProgress] p, [data-testid=stProgress]')]"
                ".some(e => /epoch \\d\\/2|val:|step/.test(e.innerText))", timeout=240_000)
            shot(page, "02_running_with_progress")

            # 4. finished: the fragment reruns the page once; the run shows as succeeded
            expect(page.get_by_text("Recently ended")).to_be_visible(timeout=420_000)
            expect(page.get_by_text("succeeded").first).to_be_visible()
            expect(page.get_by_text("No job is queued or running.")).to_be_visible()
            shot(page, "03_finished")

            # 5. the Runs page lists it with its figures
            page.goto(f"{url}/runs")
            expect(page.get_by_text("1 of 1 run(s) shown;", exact=False)).to_be_visible()
            expect(page.locator("[data-testid=stDataFrame]").first).to_be_visible()
            shot(page, "04_runs")

            # 6. open its detail page from the Runs page
            page.get_by_role("combobox", name="Open a run").click()
            page.get_by_role("option").filter(has_text=RUN_NAME).first.click()
            page.wait_for_url("**/run_detail?run=*", timeout=30_000)
            expect(page.get_by_role("heading", name=RUN_NAME)).to_be_visible()
            expect(page.get_by_text("Plateau note", exact=False)).to_be_visible()
            expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=60_000)
            page.wait_for_timeout(2000)
            shot(page, "05_run_detail")
            page.get_by_role("tab", name="Per class").click()
            expect(page.get_by_text("Weakest classes", exact=False)).to_be_visible()
            page.wait_for_timeout(1500)
            shot(page, "06_run_detail_per_class")
        finally:
            browser.close()

    # the run that the browser launched is in the store, succeeded, with validation figures
    rows = store_json(app_server["workspace"],
                      "import store, json; df = store.list_runs(); "
                      "print(json.dumps(df[['name','status','best_val_miou','n_evaluations']].to_dict('records')))")
    assert len(rows) == 1 and rows[0]["name"] == RUN_NAME and rows[0]["status"] == "succeeded", rows
    assert rows[0]["best_val_miou"] is not None and 0.0 <= rows[0]["best_val_miou"] <= 1.0
    assert rows[0]["n_evaluations"] >= 2          # validated after each of the 2 epochs
