"""The Review page's map of one tile: image, label, raw and refined masks as layers, with no network needed.

Pure Python (folium + numpy + Pillow + rasterio); no Streamlit here. The page shows the result with
``st.iframe(review_map_html(...), height=...)`` (``st.components.v1.html`` before Streamlit had ``st.iframe``).

What the map holds:

* overlays ``image``, ``label``, ``raw`` and one per refined chain (``refined: sam+crf`` ...), each in its own
  Leaflet pane; a layer control toggles them and a *fade* panel sets each overlay's opacity;
* a side-by-side swipe (leaflet-side-by-side): ``raw`` left of the divider, the refined chain on show right of it;
* a legend in the dataset's colours (``dataset.palette``), ignored pixels transparent;
* placement: a GeoTIFF (or any raster rasterio reads with a CRS) at its real coordinates — every layer is warped
  to Web Mercator (nearest neighbour for masks) and laid over its true bounds, with an optional base map; plain
  PNG/JPEG tiles in a pixel CRS (``L.CRS.Simple``: one map unit per pixel, y up).

Offline: folium links Leaflet, jQuery, Bootstrap and Font Awesome from CDNs. :func:`render_offline` inlines
Leaflet and leaflet-side-by-side from ``app/static/leaflet/`` (their CSS images as data URIs), drops folium's
other CDN assets (this map uses no markers or icons), and refuses to return HTML that still references an
external asset. Only an explicitly requested base map (``base_map=``) points outside.
"""
from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
from PIL import Image

from mapsage.palette import palette_rgb as class_palette_rgb

STATIC_DIR = Path(__file__).resolve().parents[1] / "static" / "leaflet"
ArrayOrPath = Union[np.ndarray, str, Path]


class OfflineAssetError(RuntimeError):
    """The rendered map would load an asset from the network."""


# ------------------------------------------------------------------------------------------------------------
# Offline assets


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


@lru_cache(maxsize=None)
def _asset_text(name: str) -> str:
    path = STATIC_DIR / name
    if not path.is_file():
        raise OfflineAssetError(f"{path}: offline map asset missing; restore app/static/leaflet/ from the "
                                f"repository")
    text = path.read_text(encoding="utf-8")
    if name.endswith(".css"):
        def repl(m: re.Match) -> str:
            ref = m.group(2)
            if ref.startswith(("data:", "#")):  # inline data, or an IE behaviour id (url(#default#VML))
                return m.group(0)
            img = STATIC_DIR / ref
            if not img.is_file():
                raise OfflineAssetError(f"{path}: references {ref}, which is not in {STATIC_DIR}")
            return f"url({m.group(1)}{_data_uri(img.read_bytes(), 'image/png')}{m.group(1)})"
        text = re.sub(r"url\((['\"]?)([^'\")]+)\1\)", repl, text)
    # a source map comment would make dev tools ask for a file that is not there
    return re.sub(r"//# sourceMappingURL=\S+", "", text)


# folium's default assets: the ones this map needs are inlined, the others are dropped
_INLINE_JS = {"leaflet.js": "leaflet.js"}
_INLINE_CSS = {"leaflet.css": "leaflet.css"}
_DROP = ("jquery", "bootstrap", "awesome-markers", "awesome_markers", "fontawesome", "glyphicons",
         "leaflet.awesome.rotate")

_SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc=\"(?P<url>https?://[^\"]+)\"[^>]*>\s*</script>", re.I)
_LINK_HREF = re.compile(r"<link[^>]*\bhref=\"(?P<url>https?://[^\"]+)\"[^>]*/?>", re.I)


def _inline(html: str) -> str:
    def js(m: re.Match) -> str:
        url = m.group("url")
        base = url.rsplit("/", 1)[-1].split("?")[0]
        if base in _INLINE_JS:
            return f"<script>{_asset_text(_INLINE_JS[base])}</script>"
        if any(k in url.lower() for k in _DROP):
            return ""
        raise OfflineAssetError(f"the map would load {url} from the network; add the file to {STATIC_DIR} and "
                                f"to app/widgets/review_map.py's inline list")

    def css(m: re.Match) -> str:
        url = m.group("url")
        base = url.rsplit("/", 1)[-1].split("?")[0]
        if base in _INLINE_CSS:
            return f"<style>{_asset_text(_INLINE_CSS[base])}</style>"
        if any(k in url.lower() for k in _DROP):
            return ""
        raise OfflineAssetError(f"the map would load {url} from the network; add the file to {STATIC_DIR} and "
                                f"to app/widgets/review_map.py's inline list")

    html = _SCRIPT_SRC.sub(js, html)
    return _LINK_HREF.sub(css, html)


_ASSET_PATTERNS = [
    re.compile(r"<script[^>]*\bsrc\s*=\s*['\"]?(?P<url>(?:https?:)?//[^'\" >]+)", re.I),
    re.compile(r"<link[^>]*\bhref\s*=\s*['\"]?(?P<url>(?:https?:)?//[^'\" >]+)", re.I),
    re.compile(r"<(?:img|iframe|source|video|audio|embed)[^>]*\bsrc\s*=\s*['\"]?(?P<url>(?:https?:)?//[^'\" >]+)",
               re.I),
    re.compile(r"url\(\s*['\"]?(?P<url>(?:https?:)?//[^'\")]+)", re.I),
    re.compile(r"@import\s+['\"](?P<url>(?:https?:)?//[^'\"]+)", re.I),
    re.compile(r"(?:tileLayer|imageOverlay|videoOverlay)\(\s*['\"](?P<url>(?:https?:)?//[^'\"]+)", re.I),
    re.compile(r"\bfetch\(\s*['\"](?P<url>(?:https?:)?//[^'\"]+)", re.I),
]


def external_references(html: str) -> list[str]:
    """URLs of assets the page would load from the network (scripts, styles, images, tiles, CSS urls, fetches).

    Plain text that merely contains a URL (an XML namespace in Leaflet's code, an attribution link) is not an
    asset reference."""
    found: list[str] = []
    for pat in _ASSET_PATTERNS:
        found.extend(m.group("url") for m in pat.finditer(html))
    return sorted(set(found))


def render_offline(m, allow: Sequence[str] = ()) -> str:
    """The full HTML page of a folium map with every asset inline. ``allow``: URL prefixes that may stay
    (an explicitly chosen base map's tile server)."""
    html = _inline(m.get_root().render())
    left = [u for u in external_references(html) if not any(u.startswith(a) for a in allow if a)]
    if left:
        raise OfflineAssetError(f"the map still references external assets: {left}")
    return html


# ------------------------------------------------------------------------------------------------------------
# Pictures


def _read_array(value: ArrayOrPath, what: str) -> np.ndarray:
    if isinstance(value, (str, Path)):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: {what} file not found")
        if path.suffix.lower() in (".tif", ".tiff"):
            import rasterio

            with rasterio.open(path) as src:
                arr = src.read()
            return arr[0] if arr.shape[0] == 1 else np.moveaxis(arr[:3], 0, -1)
        with Image.open(path) as img:
            if what == "image" and img.mode != "RGB":
                img = img.convert("RGB")
            return np.asarray(img)
    return np.asarray(value)


def palette_rgb(palette: Sequence[str], num_classes: int) -> np.ndarray:
    """[num_classes, 3] uint8 from '#RRGGBB' strings (:func:`mapsage.palette.palette_rgb`: the workbench's
    fallback colours where the dataset names none)."""
    return class_palette_rgb(palette, num_classes)


def colorize_rgba(ids: np.ndarray, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Class-id map -> RGBA uint8 with the palette; ignored (and unknown) ids fully transparent."""
    ids = np.asarray(ids)
    if ids.ndim == 3:  # an id PNG saved as RGB/RGBA: take the first channel
        ids = ids[..., 0]
    lut = np.zeros((256, 4), np.uint8)
    n = min(len(palette), 256)
    lut[:n, :3] = palette[:n]
    lut[:n, 3] = 255
    if 0 <= ignore_index < 256:
        lut[ignore_index] = 0
    return lut[np.clip(ids, 0, 255).astype(np.uint8)]


def _png_uri(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
    return _data_uri(buf.getvalue(), "image/png")


def _jpeg_uri(arr: np.ndarray, quality: int = 88) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr[..., :3])).save(buf, format="JPEG", quality=quality)
    return _data_uri(buf.getvalue(), "image/jpeg")


# ------------------------------------------------------------------------------------------------------------
# Placement


@dataclass
class Georef:
    """A raster's grid: affine transform (rasterio ``Affine``), CRS, and size."""

    transform: object
    crs: object
    width: int
    height: int

    @classmethod
    def from_raster(cls, path: Union[str, Path]) -> Optional["Georef"]:
        """The grid of a raster file, or None when it carries no CRS (a plain PNG/JPEG)."""
        import warnings

        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                if src.crs is None:
                    return None
                return cls(src.transform, src.crs, src.width, src.height)


def _to_mercator(arr: np.ndarray, geo: Georef, categorical: bool):
    """Warp an array on ``geo``'s grid to EPSG:3857. Returns (array, [[south, west], [north, east]])."""
    from rasterio.crs import CRS
    from rasterio.warp import Resampling, calculate_default_transform, reproject
    from rasterio.warp import transform as warp_xy

    dst_crs = CRS.from_epsg(3857)
    bands = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    if CRS.from_user_input(geo.crs) == dst_crs:
        out, transform = bands, geo.transform
        h, w = geo.height, geo.width
    else:
        left = geo.transform.c
        top = geo.transform.f
        right = left + geo.transform.a * geo.width
        bottom = top + geo.transform.e * geo.height
        transform, w, h = calculate_default_transform(geo.crs, dst_crs, geo.width, geo.height,
                                                      left=min(left, right), bottom=min(top, bottom),
                                                      right=max(left, right), top=max(top, bottom))
        nodata = 255 if categorical else 0
        out = np.full((bands.shape[0], h, w), nodata, dtype=bands.dtype)
        reproject(bands, out, src_transform=geo.transform, src_crs=geo.crs, dst_transform=transform,
                  dst_crs=dst_crs, resampling=Resampling.nearest if categorical else Resampling.bilinear,
                  src_nodata=None, dst_nodata=nodata)
    xs = [transform.c, transform.c + transform.a * w]
    ys = [transform.f, transform.f + transform.e * h]
    lon, lat = warp_xy(dst_crs, "EPSG:4326", xs, ys)
    bounds = [[min(lat), min(lon)], [max(lat), max(lon)]]
    result = out[0] if arr.ndim == 2 else np.moveaxis(out, 0, -1)
    return result, bounds


# ------------------------------------------------------------------------------------------------------------
# The map

_SWIPE_AND_FADE_JS = """
{% macro script(this, kwargs) %}
(function () {
    var map = {{ this._parent.get_name() }};
    var overlays = [{% for name, var in this.layers %}[{{ name|tojson }}, {{ var }}]{% if not loop.last %}, {% endif %}{% endfor %}];
    // each overlay sits in its own pane: the swipe clips that pane (an ImageOverlay has no getContainer)
    overlays.forEach(function (o) {
        o[1].getContainer = function () { return map.getPane(o[1].options.pane); };
    });
    {% if this.left and this.right %}
    var swipe = L.control.sideBySide([{{ this.left|join(", ") }}], [{{ this.right|join(", ") }}]);
    swipe.addTo(map);
    map._mapsageSwipe = swipe;
    {% endif %}
    var Fade = L.Control.extend({
        options: {position: "topleft"},
        onAdd: function () {
            var div = L.DomUtil.create("div", "leaflet-bar mapsage-fade");
            div.style.background = "rgba(255,255,255,0.92)";
            div.style.padding = "6px 8px";
            div.style.font = "12px/1.4 sans-serif";
            var title = L.DomUtil.create("div", "", div);
            title.innerHTML = "<b>Opacity</b>";
            overlays.forEach(function (o) {
                var row = L.DomUtil.create("label", "", div);
                row.style.display = "flex";
                row.style.alignItems = "center";
                row.style.gap = "6px";
                var name = L.DomUtil.create("span", "", row);
                name.textContent = o[0];
                name.style.minWidth = "9em";
                var range = L.DomUtil.create("input", "mapsage-opacity", row);
                range.type = "range"; range.min = 0; range.max = 100; range.step = 1;
                range.value = Math.round(100 * (o[1].options.opacity === undefined ? 1 : o[1].options.opacity));
                range.setAttribute("data-layer", o[0]);
                L.DomEvent.on(range, "input change", function () { o[1].setOpacity(range.value / 100); });
            });
            L.DomEvent.disableClickPropagation(div);
            L.DomEvent.disableScrollPropagation(div);
            return div;
        }
    });
    new Fade().addTo(map);
    var Legend = L.Control.extend({
        options: {position: "bottomright"},
        onAdd: function () {
            var div = L.DomUtil.create("div", "leaflet-bar mapsage-legend");
            div.style.background = "rgba(255,255,255,0.92)";
            div.style.padding = "6px 8px";
            div.style.font = "12px/1.5 sans-serif";
            div.innerHTML = {{ this.legend_html|tojson }};
            L.DomEvent.disableClickPropagation(div);
            return div;
        }
    });
    new Legend().addTo(map);
    {% if this.pixel_crs %}
    // pixel CRS: zoom 0 is one screen pixel per image pixel; allow zooming far out and in
    map.setMinZoom(-8);
    map.setMaxZoom(8);
    {% endif %}
    map.fitBounds({{ this.bounds|tojson }});
})();
{% endmacro %}
"""


def _swipe_fade_class():
    from branca.element import Element, MacroElement
    from jinja2 import Template

    class SwipeFadeLegend(MacroElement):
        """Swipe (leaflet-side-by-side), per-layer opacity sliders and the legend, with the plugin inlined.

        The plugin goes into the page header at render time, i.e. after the map has put Leaflet there."""

        _template = Template(_SWIPE_AND_FADE_JS)

        def render(self, **kwargs):
            header = self.get_root().header
            header.add_child(Element(f"<style>{_asset_text('leaflet-side-by-side.css')}</style>"),
                             name="mapsage_sbs_css")
            header.add_child(Element(f"<script>{_asset_text('leaflet-side-by-side.js')}</script>"),
                             name="mapsage_sbs_js")
            super().render(**kwargs)

    return SwipeFadeLegend


def _SwipeFadeLegend():
    return _swipe_fade_class()()


def _legend_html(classes: Sequence[str], palette: np.ndarray, swipe: Optional[tuple[str, str]]) -> str:
    rows = []
    for name, rgb in zip(classes, palette):
        colour = "#%02X%02X%02X" % tuple(int(v) for v in rgb)
        rows.append(f'<div><span style="display:inline-block;width:14px;height:14px;margin-right:6px;'
                    f'vertical-align:middle;border:1px solid #555;background:{colour}"></span>{_esc(name)}</div>')
    rows.append('<div><span style="display:inline-block;width:14px;height:14px;margin-right:6px;'
                'vertical-align:middle;border:1px dashed #555;background:transparent"></span>ignored</div>')
    head = "<b>Classes</b>"
    if swipe:
        head = (f'<div class="mapsage-swipe-note">swipe: <b>{_esc(swipe[0])}</b> ◀ ▶ '
                f'<b>{_esc(swipe[1])}</b></div>') + head
    return head + "".join(rows)


def _esc(text: str) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"))


def build_review_map(image: ArrayOrPath, *, classes: Sequence[str], palette: Sequence[str] = (),
                     label: Optional[ArrayOrPath] = None, raw: Optional[ArrayOrPath] = None,
                     refined: Union[None, ArrayOrPath, Mapping[str, ArrayOrPath]] = None,
                     georef: Union[None, bool, str, Path, Georef] = None, base_map: Optional[str] = None,
                     base_map_attr: str = "", ignore_index: int = 255, mask_opacity: float = 0.6,
                     height: Union[int, str] = "100%", show_label: bool = False, raw_name: str = "raw",
                     compared_prefix: str = "refined: ",
                     overlays: Sequence[tuple[str, np.ndarray, bool]] = ()):
    """A folium map of one tile. Render it offline with :func:`render_offline` (or use :func:`review_map_html`).

    ``image``: RGB array or image file; a GeoTIFF file (with a CRS) is georeferenced automatically.
    ``label`` / ``raw`` / ``refined``: class-id arrays (or id PNG files) of the image's size; ``refined`` may map
    chain names to masks (``{"crf": ..., "sam+crf": ...}``). ``georef``: ``None`` = from ``image`` when it is a
    georeferenced file, ``False`` = pixel CRS, a raster path or a :class:`Georef` = that grid. ``base_map``: a
    tile URL template shown under a georeferenced tile (it is the only thing allowed to reach the network).
    ``raw_name``: the layer name of ``raw`` (the left side of the swipe), e.g. ``ema`` when two plain predictions
    are compared. ``compared_prefix``: put before each name of ``refined`` as its layer name (``refined: crf``
    on the refinement stage's own maps); ``""`` keeps the names as given (the Review page names each layer for what
    it is: ``refine=crf``, ``tta=flip``). ``overlays``: ``(name, RGBA uint8 [H,W,4], shown)`` layers drawn above
    the masks on both sides of the swipe (error layers, a highlighted confusion cell, confidence), each toggled in
    the layer control and faded in the opacity panel."""
    import folium

    rgb = _read_array(image, "image")
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    h, w = rgb.shape[:2]
    geo: Optional[Georef] = None
    if isinstance(georef, Georef):
        geo = georef
    elif isinstance(georef, (str, Path)):
        geo = Georef.from_raster(georef)
    elif georef is None and isinstance(image, (str, Path)):
        try:
            geo = Georef.from_raster(image)
        except Exception:  # noqa: BLE001 - a plain picture rasterio cannot read: pixel CRS
            geo = None
    if geo is not None and (geo.height, geo.width) != (h, w):
        raise ValueError(f"georeference grid {geo.height}x{geo.width} does not match the image {h}x{w}")

    pal = palette_rgb(palette, len(classes))
    masks: list[tuple[str, np.ndarray]] = []
    compared: list[str] = []
    if label is not None:
        masks.append(("label", _read_array(label, "label")))
    if raw is not None:
        masks.append((raw_name, _read_array(raw, raw_name)))
    if refined is not None:
        items = refined.items() if isinstance(refined, Mapping) else [("refined", refined)]
        for name, value in items:
            shown = name if name.startswith("refined") or not compared_prefix else f"{compared_prefix}{name}"
            masks.append((shown, _read_array(value, name)))
            compared.append(shown)
    for name, arr in masks:
        if arr.shape[:2] != (h, w):
            raise ValueError(f"{name} mask is {arr.shape[:2]}, the image is {(h, w)}: they must match")
    extra = [(str(n), np.asarray(a, np.uint8), bool(on)) for n, a, on in overlays]
    for name, arr, _ in extra:
        if arr.shape != (h, w, 4):
            raise ValueError(f"overlay {name} is {arr.shape}, expected RGBA {(h, w, 4)} like the image")

    shown_of = {n: on for n, _, on in extra}

    def on_of(n: str) -> bool:
        return shown_of[n]

    if geo is not None:
        img_arr, bounds = _to_mercator(rgb, geo, categorical=False)
        mask_arrs = [(n, _to_mercator(a if a.ndim == 2 else a[..., 0], geo, categorical=True)[0])
                     for n, a in masks]
        m = folium.Map(tiles=None, height=height, control_scale=True, zoom_control=True,
                       attribution_control=bool(base_map))
        if base_map:
            folium.TileLayer(base_map, attr=base_map_attr or "base map", name="base map", max_zoom=24,
                             overlay=False, control=True).add_to(m)
        warped = []
        for n, a in extra:
            wa = _to_mercator(a, geo, categorical=True)[0]
            wa[np.all(wa == 255, axis=-1)] = 0          # the warp's fill outside the raster: transparent
            warped.append((n, wa, on_of(n)))
        extra = [(n, a, on) for n, a, on in warped]
    else:
        img_arr, bounds = rgb, [[0, 0], [h, w]]
        mask_arrs = masks
        m = folium.Map(crs="Simple", tiles=None, height=height, location=[h / 2, w / 2], zoom_start=0,
                       zoom_snap=0.25, attribution_control=False)

    layer_vars: list[tuple[str, str]] = []
    z = 400
    folium.map.CustomPane("mapsage-image", z_index=z).add_to(m)
    img_layer = folium.raster_layers.ImageOverlay(_jpeg_uri(img_arr), bounds=bounds, name="image",
                                                  pixelated=True, pane="mapsage-image", opacity=1.0)
    img_layer.add_to(m)
    layer_vars.append(("image", img_layer.get_name()))
    left: list[str] = []
    right: list[str] = []
    for i, (name, arr) in enumerate(mask_arrs):
        pane = f"mapsage-{i}-{re.sub(r'[^a-z0-9]+', '-', name.lower())}"
        z += 10
        folium.map.CustomPane(pane, z_index=z).add_to(m)
        show = name != "label" or show_label
        layer = folium.raster_layers.ImageOverlay(_png_uri(colorize_rgba(arr, pal, ignore_index)), bounds=bounds,
                                                  name=name, pixelated=True, pane=pane, opacity=mask_opacity,
                                                  show=show)
        layer.add_to(m)
        layer_vars.append((name, layer.get_name()))
        if name == raw_name:
            left.append(layer.get_name())
        elif name in compared:
            right.append(layer.get_name())

    for j, (name, arr, on) in enumerate(extra):
        pane = f"mapsage-x{j}-{re.sub(r'[^a-z0-9]+', '-', name.lower())}"
        z += 10
        folium.map.CustomPane(pane, z_index=z).add_to(m)
        layer = folium.raster_layers.ImageOverlay(_png_uri(arr), bounds=bounds, name=name, pixelated=True,
                                                  pane=pane, opacity=1.0, show=on)
        layer.add_to(m)
        layer_vars.append((name, layer.get_name()))

    swipe_names = None
    if left and right:
        swipe_names = (raw_name, next(n for n, _ in mask_arrs if n in compared))
    control = _SwipeFadeLegend()
    control.layers = layer_vars
    control.left = left
    control.right = right
    control.bounds = bounds
    control.pixel_crs = geo is None
    control.legend_html = _legend_html(classes, pal, swipe_names)
    m.add_child(control)
    folium.LayerControl(collapsed=False, position="topright").add_to(m)
    m.mapsage_info = {"bounds": bounds, "georeferenced": geo is not None, "layers": [n for n, _ in layer_vars],
                      "swipe": {"left": [n for n, _ in mask_arrs if n == raw_name],
                                "right": [n for n, _ in mask_arrs if n in compared]},
                      "base_map": base_map}
    return m


def review_map_html(image: ArrayOrPath, **kwargs) -> str:
    """:func:`build_review_map` rendered as one self-contained HTML page (no network needed)."""
    m = build_review_map(image, **kwargs)
    allow = []
    base = kwargs.get("base_map")
    if base:
        allow.append(re.split(r"\{", base, maxsplit=1)[0])
    return render_offline(m, allow=allow)
