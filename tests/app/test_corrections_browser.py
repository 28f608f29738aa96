"""Corrections in a real browser (network blocked): on the Review page a reviewer accepts the raw mask as a tile's
label, then paints part of the label with the brush; each save is a new label version (reviewer, time, source), and
a data loader on "original + corrections vN" reads the corrected pixels, compared with the original label.
Screenshots go to ``test-artifacts/corrections/``."""
from __future__ import annotations

import json
import re
import shutil
from urllib.parse import quote

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, require_browser, store_json, streamlit_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def corr_server(review_store, tmp_path):
    require_browser()
    ws = tmp_path / "workspace"
    shutil.copytree(review_store["workspace"], ws)
    with streamlit_server(ws, tmp_path / "streamlit.log") as url:
        yield {"url": url, "workspace": ws, "refine": review_store["refine"], "log": tmp_path / "streamlit.log"}


CHECK = """
import json, numpy as np, store
from PIL import Image
from mapsage.config import config_from_dict
from mapsage.data import build_dataset
from mapsage.analysis import labels as lv
rid = {rid!r}; tile = {tile!r}
run = store.run(rid)
cfg = config_from_dict(run['config'])
folder = lv.labels_root(cfg.dataset)
vs = lv.versions(folder)
orig = build_dataset(cfg, 'val')
orig_mask = orig.load_mask(orig.index_of(tile))
raw = store.artifacts(rid, kind='pred', tile=tile, variant='refine=raw')['abs_path'].iloc[-1]
raw = np.asarray(Image.open(raw))
out = {{'versions': [{{k: m[k] for k in ('version', 'reviewer', 'note')}} | {{'tile': m['tiles'].get(tile)}} for m in vs]}}
for v in (1, 2):
    c = config_from_dict({{**run['config'], 'dataset': {{**run['config']['dataset'], 'label_version': v}}}})
    d = build_dataset(c, 'val')
    import torch
    dl = torch.utils.data.DataLoader(d, batch_size=1, shuffle=False, num_workers=0)
    got = next(b['mask'][0].numpy() for b in dl if b['id'][0] == tile)
    out[f'v{{v}}_equals_raw'] = bool(np.array_equal(got, raw))
    out[f'v{{v}}_changed_vs_original'] = int((got != orig_mask).sum())
    out[f'v{{v}}_changed_vs_raw'] = int((got != raw).sum())
    out[f'v{{v}}_water_vs_original'] = int(((got == 0) & (orig_mask != 0)).sum())
print(json.dumps(out))
"""


def test_accept_and_paint_make_label_versions_the_loader_reads(corr_server, artifacts_dir):
    from playwright.sync_api import expect, sync_playwright

    out = artifacts_dir / "corrections"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    url, rid, ws = corr_server["url"], corr_server["refine"], corr_server["workspace"]
    blocked: list[str] = []

    def guard(route, request):
        if request.url.startswith(url) or request.url.startswith("data:"):
            route.continue_()
        else:
            blocked.append(request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1500, "height": 2200})
            context.route("**/*", guard)
            page = context.new_page()
            page.set_default_timeout(90_000)
            expect.set_options(timeout=90_000)
            page.goto(f"{url}/review?run={quote(rid)}")
            iframe = page.locator("iframe[title^='Review map of']")
            expect(iframe).to_be_visible()
            tile = iframe.get_attribute("title").split("Review map of ", 1)[1].split(":", 1)[0]
            expect(page.get_by_text("Correct the label of this tile")).to_be_visible()
            who = page.get_by_role("textbox", name="Corrected by")
            who.fill("label-fixer")
            who.press("Enter")
            expect(page.get_by_role("textbox", name="Corrected by")).to_have_value("label-fixer")
            page.wait_for_timeout(1500)
            note = page.get_by_role("textbox", name="Note")
            note.fill("raw is closer than the label (browser test)")
            note.press("Enter")
            page.wait_for_timeout(1500)
            page.get_by_role("button", name="Accept raw as the label").click()
            expect(page.get_by_text("Saved label version v1", exact=False)).to_be_visible()
            page.screenshot(path=str(out / "01_accepted_raw.png"), full_page=True)

            # paint: start from the label (the default), brush in the first class (water) across the tile
            page.get_by_text("Paint the label of this tile").click()          # the toggle
            canvas = page.locator("canvas.upper-canvas")
            expect(canvas).to_be_visible()
            page.wait_for_timeout(4000)                      # the component settles (background image drawn)
            canvas.first.hover(position={"x": 10, "y": 10})      # scrolls the canvas into the viewport
            page.wait_for_timeout(500)
            box = canvas.first.bounding_box()
            page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.1 * box["height"])
            page.mouse.down()
            for k in range(1, 21):
                page.mouse.move(box["x"] + (0.2 + 0.03 * k) * box["width"], box["y"] + (0.1 + 0.01 * k) *
                                box["height"], steps=2)
            page.mouse.up()
            expect(page.get_by_text(re.compile(r"[1-9][\d,]* canvas pixels painted"))).to_be_visible()
            page.screenshot(path=str(out / "02_painted.png"), full_page=True)
            page.get_by_role("button", name="Save the painted label as a new version").click()
            expect(page.get_by_text("Saved label version v2", exact=False)).to_be_visible()
            page.screenshot(path=str(out / "03_saved_v2.png"), full_page=True)
        finally:
            browser.close()
    assert not blocked, blocked
    got = store_json(ws, CHECK.format(rid=rid, tile=tile))
    (out / "check.json").write_text(json.dumps(got, indent=1))
    v1, v2 = got["versions"]
    assert v1["version"] == 1 and v1["reviewer"] == "label-fixer" and v1["tile"]["source"] == "raw"
    assert v1["note"] == "raw is closer than the label (browser test)"
    assert v1["tile"]["variant"] == "refine=raw" and v1["tile"]["run"] == rid
    assert v2["version"] == 2 and v2["tile"]["source"] == "edit" and v2["tile"]["changed_pixels"] > 0
    # the loader on original + corrections v1 reads the raw mask, which differs from the original label
    assert got["v1_equals_raw"] and got["v1_changed_vs_original"] > 0
    # v2: the original label with a painted water stroke (the newest correction of the tile wins)
    assert not got["v2_equals_raw"]
    assert got["v2_changed_vs_original"] == got["v2_water_vs_original"] > 0
