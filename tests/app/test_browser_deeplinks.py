"""Every deep link of the workbench in headless Chromium, on a workspace with a real run of every stage kind
(``tests/support/allkinds.py``): each page opens without an exception on the page, without a console error and
without a failed request: a page under a path such as ``/run_detail`` must not ask for
``/run_detail/_stcore/health`` or ``/run_detail/_stcore/host-config`` (``app/serve.py`` names the server's root). Screenshots of each page go to ``test-artifacts/deeplinks/``."""
from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, require_browser, streamlit_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]


TITLES = {"home": "MapSage Workbench", "plan": "Plan", "runs": "Runs", "tta": "TTA A.B", "compare": "Compare",
          "detail": "Run detail", "review": "Review"}


def _links(runs: dict[str, str]) -> list[tuple[str, str]]:
    links = [("home", "/"), ("plan", "/plan"), ("runs", "/runs"), ("tta_ab", "/tta_ab"),
             ("compare", f"/compare?runs={runs['train']},{runs['tta_ab']},{runs['refine']}")]
    for kind, rid in runs.items():
        links.append((f"detail_{kind}", f"/run_detail?run={rid}"))
    links.append(("detail_train_per_class", f"/run_detail?run={runs['train']}&tab={quote('Per class')}"))
    links.append(("detail_train_health", f"/run_detail?run={runs['train']}&tab=Health"))
    links.append(("review_refine", f"/review?run={runs['refine']}"))
    return links


def test_every_deep_link_opens_without_console_errors(allkinds_store, tmp_path, artifacts_dir):
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    out = artifacts_dir / "deeplinks"
    out.mkdir(exist_ok=True)
    problems: list[str] = []
    with streamlit_server(allkinds_store["workspace"], tmp_path / "streamlit.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            for name, path in _links(allkinds_store["runs"]):
                page = browser.new_page(viewport={"width": 1500, "height": 1000})
                errors: list[str] = []
                page.on("console", lambda m, errors=errors: errors.append(f"console {m.type}: {m.text}")
                        if m.type == "error" else None)
                page.on("pageerror", lambda e, errors=errors: errors.append(f"page error: {e}"))
                page.on("response", lambda r, errors=errors: errors.append(f"HTTP {r.status} {r.url}")
                        if r.status >= 400 else None)
                page.goto(url + path, wait_until="domcontentloaded")
                expect(page.get_by_role("heading", name=re.compile(TITLES[name.split("_")[0]])).first
                       ).to_be_visible(timeout=120_000)
                page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stSkeleton\"]').length === 0",
                                       timeout=120_000)
                page.wait_for_timeout(2500)
                exc = page.locator("[data-testid='stException']")
                if exc.count():
                    errors.append("exception on the page: " + exc.first.inner_text()[:300])
                page.screenshot(path=str(out / f"{name}.png"), full_page=False, timeout=120_000)
                problems += [f"{path}: {e}" for e in errors]
                page.close()
        finally:
            browser.close()
    assert not problems, "\n".join(problems)
