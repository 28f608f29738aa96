"""The error drill-down in a real browser, network blocked: Run detail's confusion matrix → click a cell → the tiles
behind it (thumbnails) → the Review map at the worst tile with that cell's pixels highlighted.

Runs on the session's review workspace (``tests/support/review.py``: a real refinement run on 3 Dubai tiles, whose
``tiles`` events carry the per-tile confusion the metrics engine counted). Screenshots go to
``test-artifacts/error_drilldown/``."""
from __future__ import annotations

import re
import shutil
from urllib.parse import parse_qs, quote, urlparse

import numpy as np
import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, require_browser, store_json, streamlit_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def drill_server(review_store, tmp_path):
    require_browser()
    ws = tmp_path / "workspace"
    shutil.copytree(review_store["workspace"], ws)
    with streamlit_server(ws, tmp_path / "streamlit.log") as url:
        yield {"url": url, "workspace": ws, "refine": review_store["refine"]}


def _facts(ws, rid: str) -> dict:
    """The evaluation Run detail shows first (the run's ranked one) and its matrix, from the store."""
    code = (
        "import json, store; from store import error_queries as q; "
        f"rid = {rid!r}; r = store.run(rid); "
        "m = store.metrics(rid, split='val', domain='all'); "
        "row = m[m['seq'] == int(r['best_seq'])].iloc[0] if r.get('best_seq') is not None else m.iloc[-1]; "
        "cm, names = store.confusion_matrix(rid, split='val', domain='all', variant=row['variant'], epoch=None); "
        "print(json.dumps({'variant': row['variant'], 'seq': int(row['seq']), 'matrix': cm.tolist(), "
        "'names': list(names)}))")
    return store_json(ws, code)


def _cell_tiles(ws, rid, variant, seq, t, p) -> list:
    code = ("import json; from store import error_queries as q; "
            f"df = q.confusion_tiles({rid!r}, 'val', {variant!r}, {t}, {p}, eval_seq={seq}); "
            "print(json.dumps([[a, int(b)] for a, b in zip(df['tile'], df['pixels'])]))")
    return store_json(ws, code)


def test_click_a_confusion_cell_to_the_tiles_to_the_highlighted_pixels_on_the_map(drill_server, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    out = artifacts_dir / "error_drilldown"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    url, rid, ws = drill_server["url"], drill_server["refine"], drill_server["workspace"]
    facts = _facts(ws, rid)
    names, m = facts["names"], np.asarray(facts["matrix"])
    off = m.copy()
    np.fill_diagonal(off, 0)
    order = sorted(((int(off[t, p]), t, p) for t in range(len(names)) for p in range(len(names)) if off[t, p] > 0),
                   reverse=True)
    assert len(order) >= 2, order
    _, t, p = order[1]                           # not the default (largest) cell: the click must pick it
    expected = _cell_tiles(ws, rid, facts["variant"], facts["seq"], t, p)
    assert expected and sum(n for _, n in expected) == int(off[t, p])
    worst_tile, worst_px = expected[0]
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
            page.goto(f"{url}/run_detail?run={quote(rid)}&tab=Confusion")
            expect(page.get_by_text("Tiles behind a confusion")).to_be_visible()
            chart = page.locator(".js-plotly-plot").filter(has=page.locator(".scatterlayer .point")).first
            expect(chart).to_be_visible()
            page.screenshot(path=str(out / "01_run_detail_confusion.png"), full_page=True)

            # click the cell (label t, predicted p): the markers are in row-major order of the matrix
            point = chart.locator(".scatterlayer .point").nth(t * len(names) + p)
            point.click(force=True)
            expect(page.get_by_text(re.compile(rf"tile\(s\) with label {re.escape(names[t])} predicted as "
                                               rf"{re.escape(names[p])}"))).to_be_visible()
            expect(page.get_by_text(f"#1 {worst_tile}", exact=False)).to_be_visible()
            expect(page.get_by_text(f"{worst_px:,} px", exact=False).first).to_be_visible()
            thumbs = page.locator("[data-testid=stImage] img")
            expect(thumbs).to_have_count(len(expected[:8]))
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / "02_cell_clicked_tile_list.png"), full_page=True)

            # open the worst tile in Review
            page.get_by_role("button", name="Open in Review").first.click()
            iframe = page.locator("iframe[title^='Review map of']")
            expect(iframe).to_be_visible()
            expect(iframe).to_have_attribute("title", re.compile(re.escape(f"Review map of {worst_tile}:")))
            q = parse_qs(urlparse(page.url).query)
            assert q["tile"] == [worst_tile] and q["true"] == [str(t)] and q["pred"] == [str(p)], page.url
            assert q["variant"] == [facts["variant"]]
            expect(page.get_by_text(f"{worst_px:,} px on this tile", exact=False)).to_be_visible()
            frame = page.frame_locator("iframe[title^='Review map of']")
            cell_layer = f"label {names[t]} → predicted {names[p]} ({worst_px:,} px)"
            expect(frame.locator(".leaflet-control-layers-overlays label").filter(has_text=cell_layer)) \
                .to_have_count(1)
            # image + compared mask + highlight drawn (the label layer is off at first)
            expect(frame.locator("img.leaflet-image-layer")).to_have_count(3)
            page.wait_for_timeout(800)
            iframe.screenshot(path=str(out / "03_review_map_highlighted.png"))
            page.screenshot(path=str(out / "04_review_page.png"), full_page=True)
            # the highlight layer's own pixels: magenta, as many as the store counted
            n_lit = frame.locator("img.leaflet-image-layer").last.evaluate("""img => {
                const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
                const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
                for (let i = 0; i < d.length; i += 4) if (d[i+3] > 0 && d[i] == 255 && d[i+1] == 0 && d[i+2] == 255) n++;
                return n; }""")
            assert n_lit == worst_px, (n_lit, worst_px)
        finally:
            browser.close()
    assert not blocked, blocked
