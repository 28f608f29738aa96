"""Tags, notes, grouping and the Runs filters in the address, in headless Chromium: a tag and a note set on Run
detail are stored; the Runs page opened with ``?tags=`` / ``?q=`` / ``?group=`` / ``?sort=`` shows the filtered,
grouped, sorted view, and a filter changed on the page is written back into the address."""
from __future__ import annotations

import re

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, require_browser, store_json, streamlit_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]
DUBAI_BASE = "configs/_base_/datasets/dubai.yaml"


@pytest.fixture()
def three_runs(tmp_path, monkeypatch):
    from tests.support.app import PROJECT_ROOT, run_in_process

    ws = tmp_path / "ws"
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(ws))
    cfg = tmp_path / "demo_job.yaml"
    cfg.write_text(f"_base_: ['{PROJECT_ROOT / DUBAI_BASE}']\n"
                   "stage: {kind: demo_job, plan_stage: 0, title: tracker demo, demo_steps: 2, "
                   "demo_step_seconds: 0.01}\nruntime: {gpus: 0}\n")
    ids = [run_in_process(str(cfg), [], name=f"tracker-{n}") for n in ("alpha", "beta", "gamma")]
    return ws, ids


def _shown(page, want: str) -> str:
    """The Runs caption once it reads ``want``; a page still finishing its rerun shows the previous count for a
    moment, so this waits for the caption (up to a minute) and returns what it last read."""
    cap = page.get_by_text(re.compile(r"\d+ of \d+ run\(s\) shown")).first
    seen = ""
    for _ in range(120):
        cap.wait_for(timeout=60_000)
        seen = re.search(r"(\d+) of (\d+) run\(s\) shown", cap.inner_text()).group(0)
        if seen == want:
            break
        page.wait_for_timeout(500)
    return seen


def test_tags_notes_filters_round_trip(three_runs, tmp_path, artifacts_dir):
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    ws, (a, b, c) = three_runs
    out = artifacts_dir / "tracker"
    out.mkdir(exist_ok=True)
    with streamlit_server(ws, tmp_path / "streamlit.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            # Run detail: tag and note
            page.goto(f"{url}/run_detail?run={a}", wait_until="domcontentloaded")
            page.get_by_text("Tags and note").first.click(timeout=120_000)
            tags = page.get_by_role("combobox", name=re.compile("Tags")).first
            tags.click()
            tags.fill("keep-me")
            page.keyboard.press("Enter")
            page.get_by_label("Note").fill("water class overfits after epoch 30")
            page.get_by_role("button", name=re.compile("Save tags and note")).click()
            page.wait_for_timeout(3000)
            stored = store_json(ws, f"import json, store.tags as t; print(json.dumps([t.tags_of({a!r}), "
                                    f"t.note_of({a!r})]))")
            assert stored == [["keep-me"], "water class overfits after epoch 30"]
            # the Runs page opened from an address: tag filter, search in notes, grouping, sort
            page.goto(f"{url}/runs?tags=keep-me", wait_until="domcontentloaded")
            assert _shown(page, "1 of 3 run(s) shown") == "1 of 3 run(s) shown"
            page.goto(f"{url}/runs?q=overfits", wait_until="domcontentloaded")
            assert _shown(page, "1 of 3 run(s) shown") == "1 of 3 run(s) shown"
            page.goto(f"{url}/runs?group=tag&sort=Run&desc=1", wait_until="domcontentloaded")
            expect(page.get_by_role("heading", name="Grouped by tag")).to_be_visible(timeout=60_000)
            assert _shown(page, "3 of 3 run(s) shown") == "3 of 3 run(s) shown"
            page.wait_for_timeout(1500)
            assert "group=tag" in page.url and "sort=Run" in page.url and "desc=1" in page.url
            page.screenshot(path=str(out / "runs_grouped_by_tag.png"), full_page=True)
            # a filter set on the page goes into the address, and the address restores it
            page.get_by_label("Search (name, run id, backbone, loss, aug, title, tags, notes)").fill("gamma")
            page.keyboard.press("Enter")
            page.wait_for_function("() => location.search.includes('q=gamma')", timeout=60_000)
            assert _shown(page, "1 of 3 run(s) shown") == "1 of 3 run(s) shown"
            kept = page.url
            page.goto(kept, wait_until="domcontentloaded")
            assert _shown(page, "1 of 3 run(s) shown") == "1 of 3 run(s) shown"
            expect(page.get_by_role("heading", name="Grouped by tag")).to_be_visible(timeout=60_000)
        finally:
            browser.close()
