"""The Review page's map helper: offline HTML (no external URL), layers, swipe, legend, pixel CRS for PNG tiles and
real coordinates for GeoTIFFs."""
from __future__ import annotations

import re

import numpy as np
import pytest

from app.widgets.review_map import (
    OfflineAssetError,
    build_review_map,
    external_references,
    render_offline,
    review_map_html,
)
from tests.support.paths import CHROMIUM
from tests.support.refine import LOVEDA, LOVEDA_CLASSES, LOVEDA_PALETTE, loveda_tile

IMAGE = LOVEDA / "Val" / "Rural" / "images_png" / "2.png"


def _masks():
    _, label = loveda_tile("val2")
    raw = np.where(label == 255, 0, label).astype(np.uint8)
    refined = raw.copy()
    refined[:200, :200] = 3
    return label, raw, refined


def test_folium_default_page_would_fetch_cdn_assets():
    """The check is real: folium's own page links Leaflet, jQuery and Bootstrap from CDNs."""
    import folium

    html = folium.Map(tiles=None).get_root().render()
    refs = external_references(html)
    assert any("leaflet" in r for r in refs) and any("jquery" in r for r in refs)


def test_map_html_references_no_external_url():
    label, raw, refined = _masks()
    html = review_map_html(IMAGE, classes=LOVEDA_CLASSES, palette=LOVEDA_PALETTE, label=label, raw=raw,
                           refined={"sam+crf": refined, "crf": raw})
    assert external_references(html) == []
    # no src= and no <link href= to the network at all (Leaflet's own "leafletjs.com" attribution link is a
    # hyperlink in its code, not an asset), and every CSS url() is inline data
    assert not re.search(r"""\bsrc\s*=\s*["']?(?:https?:)?//""", html, re.I)
    assert not re.search(r"""<link[^>]*\bhref\s*=\s*["']?(?:https?:)?//""", html, re.I)
    assert all(u.startswith(("data:", "#")) for u in re.findall(r"url\(\s*['\"]?([^'\")]+)", html))
    # Leaflet and the swipe plugin are inline, with the map's pieces
    assert "Leaflet 1.9.4" in html or '"1.9.4"' in html
    assert "L.Control.SideBySide" in html and "L.control.sideBySide(" in html
    assert "L.CRS.Simple" in html
    for name in ("image", "label", "raw", "refined: sam+crf", "refined: crf"):
        assert f'"{name}"' in html
    for colour in LOVEDA_PALETTE:
        assert colour.upper() in html.upper()
    assert html.count("data:image/png;base64,") >= 4 and "data:image/jpeg;base64," in html


def test_pixel_crs_layers_and_swipe_sides():
    label, raw, refined = _masks()
    m = build_review_map(IMAGE, classes=LOVEDA_CLASSES, palette=LOVEDA_PALETTE, label=label, raw=raw,
                         refined=refined)
    info = m.mapsage_info
    assert info["georeferenced"] is False
    assert info["bounds"] == [[0, 0], [1024, 1024]]
    assert info["layers"] == ["image", "label", "raw", "refined"]
    assert info["swipe"] == {"left": ["raw"], "right": ["refined"]}
    with pytest.raises(ValueError, match="must match"):
        build_review_map(IMAGE, classes=LOVEDA_CLASSES, raw=raw[:100])


def test_unknown_external_asset_is_refused():
    import folium

    label, raw, refined = _masks()
    m = build_review_map(IMAGE, classes=LOVEDA_CLASSES, palette=LOVEDA_PALETTE, raw=raw, refined=refined)
    m.get_root().header.add_child(folium.JavascriptLink("https://example.org/plugin.js"))
    with pytest.raises(OfflineAssetError, match="example.org/plugin.js"):
        render_offline(m)


def test_geotiff_is_placed_at_its_coordinates(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin
    from rasterio.warp import transform_bounds

    image, label = loveda_tile("val2")
    path = tmp_path / "tile.tif"
    # a LoveDA tile (0.3 m GSD) written as a GeoTIFF in UTM 50N (where LoveDA's cities are)
    transform = from_origin(500000.0, 3400000.0, 0.3, 0.3)
    with rasterio.open(path, "w", driver="GTiff", width=1024, height=1024, count=3, dtype="uint8",
                       crs="EPSG:32650", transform=transform) as dst:
        dst.write(np.moveaxis(image, -1, 0))
    raw = np.where(label == 255, 0, label).astype(np.uint8)
    m = build_review_map(path, classes=LOVEDA_CLASSES, palette=LOVEDA_PALETTE, label=label, raw=raw,
                         refined=raw)
    info = m.mapsage_info
    assert info["georeferenced"] is True
    west, south, east, north = transform_bounds("EPSG:32650", "EPSG:4326", 500000.0, 3400000.0 - 307.2,
                                                500000.0 + 307.2, 3400000.0)
    (s, w), (n, e) = info["bounds"]
    # the Web-Mercator grid covers the raster: its corners within a pixel (0.3 m ~ 3e-6 deg) of the true bounds
    assert s == pytest.approx(south, abs=1e-5) and n == pytest.approx(north, abs=1e-5)
    assert w == pytest.approx(west, abs=1e-5) and e == pytest.approx(east, abs=1e-5)
    html = render_offline(m)
    assert external_references(html) == [] and "L.CRS.Simple" not in html
    # a base map is optional and the only thing allowed to reach the network
    base = "https://tiles.example.org/{z}/{x}/{y}.png"
    html = review_map_html(path, classes=LOVEDA_CLASSES, palette=LOVEDA_PALETTE, raw=raw, base_map=base,
                           base_map_attr="example tiles")
    assert external_references(html) == ["https://tiles.example.org/{z}/{x}/{y}.png"]


@pytest.mark.browser
def test_map_works_in_a_browser_with_the_network_blocked(tmp_path, artifacts_dir):
    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    label, raw, refined = _masks()
    html = review_map_html(IMAGE, classes=LOVEDA_CLASSES, palette=LOVEDA_PALETTE, label=label, raw=raw,
                           refined={"sam+crf": refined}, height=700)
    requests, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        page.route("**/*", lambda route: (requests.append(route.request.url), route.abort()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.set_content(html, wait_until="load")
        page.wait_for_function("document.querySelectorAll('img.leaflet-image-layer').length >= 3")
        assert errors == [] and requests == []
        # the swipe: raw clipped to the left of the divider, the refined mask to the right
        clips = page.evaluate("""() => Object.fromEntries(Array.from(document.querySelectorAll('.leaflet-pane'))
            .filter(e => /mapsage-[0-9]/.test(e.className)).map(e => [e.className, e.style.clip]))""")
        raw_clip = next(v for k, v in clips.items() if "raw" in k)
        ref_clip = next(v for k, v in clips.items() if "refined" in k)
        assert raw_clip.startswith("rect(") and ref_clip.startswith("rect(") and raw_clip != ref_clip
        assert page.locator(".leaflet-sbs-range").count() == 1
        # fading: the opacity slider of the raw layer sets that layer's opacity
        page.evaluate("""() => { const r = document.querySelector('input.mapsage-opacity[data-layer="raw"]');
            r.value = 20; r.dispatchEvent(new Event('input')); }""")
        opacity = page.evaluate("""() => Array.from(document.querySelectorAll('.leaflet-pane'))
            .find(e => /mapsage-[0-9]-raw/.test(e.className)).querySelector('img').style.opacity""")
        assert float(opacity) == pytest.approx(0.2)
        # the legend lists every class and the layer control every overlay
        legend = page.locator(".mapsage-legend").inner_text()
        assert all(c in legend for c in LOVEDA_CLASSES)
        assert page.locator(".leaflet-control-layers-overlays label").count() == 4
        page.screenshot(path=str(artifacts_dir / "refine_review_map.png"))
        browser.close()
