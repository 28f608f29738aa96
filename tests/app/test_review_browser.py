"""The Review page in a real browser with the network blocked.

``streamlit run app/main.py`` serves a copy of the session's review workspace (a real refinement run: tiny training
through the real stage code, then the refinement A/B with the CRF chain on 3 Dubai tiles, ingested; see
``tests/support/review.py``). Headless Chromium opens the Review page with every request that is not for the local
Streamlit server aborted, and checks on a demo tile that

* the folium map draws the image and the raw and refined masks as overlays, with a layer control (toggle) and an
  opacity panel (fade), a legend in the dataset's colours, and the side-by-side swipe between raw and refined --
  dragging the divider moves the clip of both sides;
* nothing the map needs comes from the network (no request from the map's frame was blocked) and the map is not
  blank (pixels of the frame's screenshot);
* a verdict saved on the page is in the store.

Screenshots go to ``test-artifacts/review_browser/``. Never downloads a browser: it uses Debian's
``/usr/bin/chromium`` and is skipped when that is absent."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, require_browser, store_json, streamlit_server

DUBAI_PALETTE = ["#E2A929", "#8429F6", "#6EC1E4", "#3C1098", "#FEDD3A"]
DUBAI_CLASSES = ["water", "land", "road", "building", "vegetation"]

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def review_server(review_store, tmp_path):
    require_browser()
    ws = tmp_path / "workspace"
    shutil.copytree(review_store["workspace"], ws)          # verdicts written here stay out of the session's store
    with streamlit_server(ws, tmp_path / "streamlit.log") as url:
        yield {"url": url, "workspace": ws, "log": tmp_path / "streamlit.log", "refine": review_store["refine"]}


def _not_blank(png: Path) -> dict:
    """Pixel statistics of a screenshot: how much of it is plain white/grey and how many colours it has."""
    from PIL import Image

    a = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3).astype(np.int32)
    flat = (a.max(1) - a.min(1) < 8)                      # grey levels: white, Leaflet's grey background
    return {"colours": int(len(np.unique(a[::7], axis=0))), "coloured_share": float(1.0 - flat.mean()),
            "std": float(a.std())}


def test_review_page_overlays_swipe_and_verdict_with_the_network_blocked(review_server, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    out = artifacts_dir / "review_browser"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    url = review_server["url"]
    rid = review_server["refine"]
    blocked: list[dict] = []

    def guard(route, request):
        if request.url.startswith(url + "/") or request.url == url:
            route.continue_()
        else:
            blocked.append({"url": request.url, "frame": request.frame.url if request.frame else None})
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1500, "height": 2400})
            context.route("**/*", guard)
            page = context.new_page()
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)          # the machine is shared: reruns can take seconds

            page.goto(f"{url}/review?run={quote(rid)}")
            expect(page.get_by_role("heading", name="Review")).to_be_visible(timeout=90_000)
            expect(page.get_by_text("per tile, in points", exact=False)).to_be_visible()
            iframe = page.locator("iframe[title^='Review map of']")
            expect(iframe).to_be_visible(timeout=90_000)
            tile = iframe.get_attribute("title").split("Review map of ", 1)[1].split(":", 1)[0]
            frame = page.frame_locator("iframe[title^='Review map of']")

            # the overlays: image + raw + refined drawn (the label is a layer, off at first)
            expect(frame.locator(".leaflet-container")).to_be_visible()
            expect(frame.locator("img.leaflet-image-layer")).to_have_count(3)
            for layer in ("image", "label", "raw", "refine=crf"):
                expect(frame.locator(".leaflet-control-layers-overlays label").filter(has_text=layer)).to_have_count(1)
            # the legend, in the dataset's colours
            legend = frame.locator(".mapsage-legend")
            for name in DUBAI_CLASSES:
                expect(legend).to_contain_text(name)
            legend_html = legend.inner_html().upper()
            assert all(c in legend_html or _rgb(c) in legend_html.replace(" ", "") for c in DUBAI_PALETTE), \
                legend_html
            # every image overlay has finished loading (data: URIs) and has pixels
            frame.locator("img.leaflet-image-layer").first.wait_for()
            sizes = frame.locator("img.leaflet-image-layer").evaluate_all(
                "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
            assert all(c and w == 682 and h == 658 for c, w, h in sizes), sizes

            # the swipe: raw clipped to the left of the divider, refined to the right
            expect(frame.locator(".leaflet-sbs-divider")).to_be_visible()
            rng = frame.locator("input.leaflet-sbs-range")
            expect(rng).to_have_count(1)
            clips = _clips(frame)
            assert clips["raw"] and clips["refine=crf"], clips
            page.wait_for_timeout(500)
            map_png = out / "01_map_swipe_middle.png"
            iframe.screenshot(path=str(map_png))
            page.screenshot(path=str(out / "00_review_page.png"), full_page=True)
            stats = _not_blank(map_png)
            # the 682x658 tile fills about half of the 640 px high frame (fitted, grey margins around it)
            assert stats["colours"] > 200 and stats["coloured_share"] > 0.3, stats
            divider_before = frame.locator(".leaflet-sbs-divider").evaluate("e => e.getBoundingClientRect().left")
            rng.evaluate("e => { e.value = 0.25; e.dispatchEvent(new Event('input', {bubbles: true})); }")
            page.wait_for_timeout(300)
            moved = _clips(frame)
            divider_after = frame.locator(".leaflet-sbs-divider").evaluate("e => e.getBoundingClientRect().left")
            assert divider_after < divider_before - 50, (divider_before, divider_after)
            assert moved["raw"] != clips["raw"] and moved["refine=crf"] != clips["refine=crf"], (clips, moved)
            iframe.screenshot(path=str(out / "02_map_swipe_left.png"))

            # fade: the refined overlay's opacity slider
            fade = frame.locator("input.mapsage-opacity[data-layer='refine=crf']")
            fade.evaluate("e => { e.value = 15; e.dispatchEvent(new Event('input', {bubbles: true})); }")
            opacity = _layer_opacity(frame, "refine=crf")
            assert abs(opacity - 0.15) < 1e-6, opacity
            # toggle: switch the label overlay on from the layer control
            frame.locator(".leaflet-control-layers-overlays label").filter(has_text="label").locator(
                "input").check()
            expect(frame.locator("img.leaflet-image-layer")).to_have_count(4)
            assert _overlays(frame)["label"]["on"]
            iframe.screenshot(path=str(out / "03_map_label_on_refined_faded.png"))

            # the verdict, saved on the page
            form = page.locator("[data-testid=stForm]")
            expect(form).to_contain_text(f"Verdict on {tile}")
            form.get_by_role("radiogroup", name="Verdict").locator("label").filter(has_text="better").click()
            expect(form.get_by_role("radio", name="better")).to_be_checked()
            form.get_by_role("textbox", name="Comment").fill("crf sharpens the road edges (browser test)")
            form.get_by_role("textbox", name="Reviewer").fill("browser-reviewer")
            form.get_by_role("button", name="Save verdict").click()
            expect(page.get_by_text("Saved verdict #", exact=False)).to_be_visible()
            expect(page.get_by_text("Verdicts of this run")).to_be_visible()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(out / "04_verdict_saved.png"), full_page=True)

            # picking another row of the tile list opens that tile (the list is a canvas grid: click its row)
            grid = page.locator(".st-key-review_table [data-testid=stDataFrame]")   # the tile list (by its key)
            box = grid.bounding_box()
            page.mouse.click(box["x"] + 15, box["y"] + 35 + 35 * 2 + 17)        # row 3's selection box
            expect(iframe).not_to_have_attribute("title", re.compile(re.escape(f"Review map of {tile}:")))
            other = iframe.get_attribute("title").split("Review map of ", 1)[1].split(":", 1)[0]
            assert other != tile and other.startswith("Tile 3/image_part_00"), other
            expect(frame.locator("img.leaflet-image-layer")).to_have_count(3)
        finally:
            browser.close()

    from_map = [b for b in blocked if b["frame"] and b["frame"].startswith(("about:srcdoc", "about:blank"))]
    assert not from_map, f"the map asked the network for: {from_map}"
    rows = store_json(review_server["workspace"],
                       "import json, store; df = store.verdicts(); "
                       "print(json.dumps(df[['run_id','tile','variant','baseline','verdict','comment','reviewer']]"
                       ".to_dict('records')))")
    assert rows == [{"run_id": rid, "tile": tile, "variant": "refine=crf", "baseline": "refine=raw",
                     "verdict": "better", "comment": "crf sharpens the road edges (browser test)",
                     "reviewer": "browser-reviewer"}], rows
    summary = store_json(review_server["workspace"],
                          "import json, store; print(json.dumps(store.verdict_summary().to_dict('records')))")
    assert summary == [{"run_id": rid, "variant": "refine=crf", "reviewed": 1, "better": 1, "worse": 0, "same": 0}]
    (out / "blocked_requests.json").write_text(json.dumps(blocked, indent=1))


def _rgb(hex_colour: str) -> str:
    h = hex_colour.lstrip("#")
    return "RGB(" + ",".join(str(int(h[i:i + 2], 16)) for i in (0, 2, 4)) + ")"


_OVERLAYS_JS = """() => {
    const map = Object.values(window).find(v => v instanceof L.Map);
    const key = Object.keys(window).find(k => k.startsWith('layer_control_') && k.endsWith('_layers'));
    const out = {};
    for (const [name, layer] of Object.entries(window[key].overlays)) {
        out[name] = {clip: map.getPane(layer.options.pane).style.clip || '', opacity: layer.options.opacity,
                     on: map.hasLayer(layer)};
    }
    return out;
}"""


def _overlays(frame) -> dict:
    """Per overlay of the map's layer control (by name): its pane's CSS clip (what the swipe sets), its opacity and
    whether it is on the map."""
    return frame.locator("body").evaluate(f"b => ({_OVERLAYS_JS})()")


def _clips(frame) -> dict:
    return {name: o["clip"] for name, o in _overlays(frame).items()}


def _layer_opacity(frame, name: str) -> float:
    return float(_overlays(frame)[name]["opacity"])
