"""The review queue and Compare's confusion drill-down in a real browser, network blocked, on REAL runs
(``tests/support/queue.py``: an evaluation of the demo checkpoint with saved probabilities on 3 Dubai tiles, and
the refinement run's CRF masks of the same tiles).

* Compare A (raw) with B (CRF) → click a cell of the confusion-change matrix → the tiles where that confusion rose
  most → the Review map at the first one with B's pixels of that cell lit;
* Review with ``?queue=entropy`` → the queue table in the runner's order → *Review the next tile* opens the most
  uncertain tile.

Screenshots go to ``test-artifacts/queue_compare/``."""
from __future__ import annotations

import re
import shutil
from urllib.parse import parse_qs, quote, urlparse

import numpy as np
import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, require_browser, store_json, streamlit_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def qc_server(queue_store, tmp_path):
    require_browser()
    ws = tmp_path / "workspace"
    shutil.copytree(queue_store["workspace"], ws)
    with streamlit_server(ws, tmp_path / "streamlit.log") as url:
        yield {"url": url, "workspace": ws, "refine": queue_store["refine"], "probs": queue_store["probs"]}


def _change(ws, a: str, b: str) -> list:
    code = ("import json; from store import error_queries as q; "
            f"df = q.confusion_change({a!r}, 'raw', {b!r}, 'refine=crf', 'val'); "
            "print(json.dumps([[r.tile, int(r.true_id), int(r.pred_id), int(r.pixels_a), int(r.pixels_b), "
            "int(r.delta)] for r in df.itertuples()]))")
    return store_json(ws, code)


def _queue(ws, rid: str) -> list:
    code = ("import json; from runners import review_queue as rq; "
            f"q, _ = rq.queue({rid!r}, by='entropy'); "
            "print(json.dumps([[t, float(e)] for t, e in zip(q['tile'], q['entropy'])]))")
    return store_json(ws, code)


def _names(ws, rid: str) -> list:
    return store_json(ws, f"import json, store; print(json.dumps(store.run({rid!r})['config']['dataset']['classes']))")


def test_compare_cell_to_tiles_to_review_and_the_review_queue(qc_server, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    out = artifacts_dir / "queue_compare"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    url, ws, a, b = qc_server["url"], qc_server["workspace"], qc_server["probs"], qc_server["refine"]
    names = _names(ws, a)
    C = len(names)
    rows = _change(ws, a, b)
    delta = np.zeros((C, C), np.int64)
    for _, t, p, _, _, d in rows:
        delta[t, p] += d
    # click the cell with the second-largest rise (not the default, the largest absolute change)
    order = sorted(((int(delta[t, p]), t, p) for t in range(C) for p in range(C) if t != p and delta[t, p] > 0),
                   reverse=True)
    assert len(order) >= 2, order
    _, t, p = order[1]
    rose = sorted([(r[0], r[4], r[5]) for r in rows if (r[1], r[2]) == (t, p) and r[5] > 0],
                  key=lambda x: (-x[2], x[0]))
    first_tile, first_b_px, first_delta = rose[0]
    queue = _queue(ws, a)
    blocked: list[str] = []

    def guard(route, request):
        if request.url.startswith(url):
            route.continue_()
        else:
            blocked.append(request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1500, "height": 2000})
            context.route("**/*", guard)
            page = context.new_page()
            page.set_default_timeout(90_000)
            expect.set_options(timeout=90_000)

            # ---- Compare: the change matrix, a click, the tiles, Review
            page.goto(f"{url}/compare?runs={quote(a)},{quote(b)}")
            expect(page.get_by_text("Confusion changes: from a cell to the tiles")).to_be_visible()
            chart = page.locator(".js-plotly-plot").filter(has_text="Confusion change").first
            expect(chart.locator(".scatterlayer .point").first).to_be_attached()
            chart.scroll_into_view_if_needed()
            page.wait_for_timeout(800)
            chart.screenshot(path=str(out / "01_compare_change_matrix.png"))
            chart.locator(".scatterlayer .point").nth(t * C + p).click(force=True)
            head = page.get_by_text(re.compile(rf"Label {re.escape(names[t])} predicted as {re.escape(names[p])}:"))
            expect(head).to_be_visible()
            expect(page.get_by_text(f"(+{first_delta:,})", exact=False).first).to_be_visible()
            expect(page.get_by_text(re.compile(rf"Rose most in B — {len(rose)} tile"))).to_be_visible()
            head.scroll_into_view_if_needed()
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / "02_compare_cell_tiles.png"), full_page=True)
            page.get_by_role("button", name="Open B in Review").first.click()
            iframe = page.locator("iframe[title^='Review map of']")
            expect(iframe).to_have_attribute("title", re.compile(re.escape(f"Review map of {first_tile}:")))
            q = parse_qs(urlparse(page.url).query)
            assert q["run"] == [b] and q["tile"] == [first_tile] and q["true"] == [str(t)] and q["pred"] == [str(p)]
            assert q["variant"] == ["refine=crf"]
            expect(page.get_by_text(f"{first_b_px:,} px on this tile", exact=False)).to_be_visible()
            frame = page.frame_locator("iframe[title^='Review map of']")
            expect(frame.locator(".leaflet-control-layers-overlays label")
                   .filter(has_text=f"label {names[t]} → predicted {names[p]} ({first_b_px:,} px)")).to_have_count(1)
            page.wait_for_timeout(800)
            iframe.screenshot(path=str(out / "03_review_map_from_compare.png"))

            # ---- Review: the queue
            page.goto(f"{url}/review?run={quote(a)}&queue=entropy")
            expect(page.get_by_text("Review queue: the tiles the model is least sure about")).to_be_visible()
            expect(page.get_by_text(f"Next: {queue[0][0]}", exact=False)).to_be_visible()
            expect(page.get_by_text(f"{queue[0][1]:.4f}", exact=False).first).to_be_visible()
            grid = page.locator("[data-testid=stDataFrame]").first
            expect(grid).to_be_visible()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(out / "04_review_queue.png"), full_page=True)
            page.get_by_role("button", name="Review the next tile").click()
            iframe = page.locator("iframe[title^='Review map of']")
            expect(iframe).to_have_attribute("title", re.compile(re.escape(f"Review map of {queue[0][0]}:")))
            assert parse_qs(urlparse(page.url).query)["tile"] == [queue[0][0]]
            page.keyboard.press("n")          # Next follows the queue
            expect(iframe).to_have_attribute("title", re.compile(re.escape(f"Review map of {queue[1][0]}:")))
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / "05_review_queue_next.png"), full_page=True)
        finally:
            browser.close()
    assert not blocked, blocked
