"""A local base map under a georeferenced map, offline: a tile folder (``{z}/{x}/{y}.png|jpg|webp``, XYZ scheme)
or an MBTiles file (SQLite, TMS rows) the user points at. Nothing is downloaded.

The tiles covering the shown raster (with a margin) are read from the folder or file and embedded in the map page
as data URIs, from the coarsest zoom the source has up to the finest zoom that stays within ``max_tiles``; a small
Leaflet grid layer draws them, and Leaflet enlarges the finest embedded level when the user zooms in further. So
the page stays self-contained (the map is an iframe without a tile server) and its size is bounded.

:func:`open_basemap` checks the path and says in one line what is wrong with it (not found, not a tile folder,
not an MBTiles file, no tiles)."""
from __future__ import annotations

import base64
import math
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from mapsage.errors import UserError

ENV = "MAPSAGE_BASEMAP"          # the default base map of the app (a tile folder or an .mbtiles file)
_EXT_MIME = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}


class BasemapError(UserError):
    """A base map path that is not a tile folder or an MBTiles file."""


@dataclass
class Basemap:
    kind: str                   # "folder" or "mbtiles"
    path: Path
    zooms: list[int]
    ext: str = "png"            # the folder's tile file extension / the MBTiles format
    name: str = ""
    attribution: str = ""

    def tile(self, z: int, x: int, y: int) -> Optional[tuple[bytes, str]]:
        """``(bytes, mime)`` of tile z/x/y in the XYZ scheme, or None where the source has none."""
        if self.kind == "folder":
            for ext in (self.ext, *[e for e in _EXT_MIME if e != self.ext]):
                p = self.path / str(z) / str(x) / f"{y}.{ext}"
                if p.is_file():
                    return p.read_bytes(), _EXT_MIME[ext]
            return None
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as con:
            row = con.execute("SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                              (z, x, (1 << z) - 1 - y)).fetchone()
        if row is None:
            return None
        data = bytes(row[0])
        mime = "image/jpeg" if data[:2] == b"\xff\xd8" else "image/webp" if data[8:12] == b"WEBP" else "image/png"
        return data, mime


def open_basemap(path: str | Path) -> Basemap:
    """A :class:`Basemap` for a tile folder or an MBTiles file; :class:`BasemapError` names what is wrong."""
    p = Path(os.path.expanduser(str(path).strip()))
    fix = "point the base map at a tile folder ({z}/{x}/{y}.png) or an .mbtiles file"
    if not str(path).strip():
        raise BasemapError(f"base map: no path given; {fix}")
    if not p.exists():
        raise BasemapError(f"{p}: base map not found; {fix}")
    if p.is_dir():
        zooms = sorted(int(d.name) for d in p.iterdir() if d.is_dir() and re.fullmatch(r"\d{1,2}", d.name))
        ext = None
        for z in zooms:
            for xd in (p / str(z)).iterdir():
                if xd.is_dir() and xd.name.isdigit():
                    for f in xd.iterdir():
                        m = re.fullmatch(r"\d+\.(png|jpe?g|webp)", f.name.lower())
                        if m:
                            ext = m.group(1)
                            break
                if ext:
                    break
            if ext:
                break
        if not zooms or ext is None:
            raise BasemapError(f"{p}: not a tile folder (no {{z}}/{{x}}/{{y}}.png|jpg|webp tiles inside); {fix}")
        return Basemap("folder", p, zooms, ext=ext, name=p.name)
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise BasemapError(f"{p}: cannot read the base map ({exc}); {fix}") from exc
    if head != b"SQLite format 3\x00":
        raise BasemapError(f"{p}: not an MBTiles file (not SQLite) and not a tile folder; {fix}")
    try:
        with sqlite3.connect(f"file:{p}?mode=ro", uri=True) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table','view')")}
            if "tiles" not in tables:
                raise BasemapError(f"{p}: an SQLite file without a 'tiles' table is not MBTiles; {fix}")
            zooms = [int(r[0]) for r in con.execute("SELECT DISTINCT zoom_level FROM tiles ORDER BY zoom_level")]
            meta = dict(con.execute("SELECT name, value FROM metadata").fetchall()) if "metadata" in tables else {}
    except sqlite3.DatabaseError as exc:
        raise BasemapError(f"{p}: cannot read the MBTiles file ({exc}); {fix}") from exc
    if not zooms:
        raise BasemapError(f"{p}: the MBTiles file holds no tiles; {fix}")
    fmt = str(meta.get("format") or "png").lower()
    if fmt == "pbf":
        raise BasemapError(f"{p}: holds vector tiles (format pbf); the map draws raster tiles (png, jpg, webp)")
    return Basemap("mbtiles", p, zooms, ext=fmt, name=str(meta.get("name") or p.stem),
                   attribution=str(meta.get("attribution") or ""))


def _tile_range(bounds: Sequence[Sequence[float]], z: int) -> tuple[int, int, int, int]:
    """x0, x1, y0, y1 (inclusive) of the XYZ tiles covering ``[[south, west], [north, east]]`` at zoom z."""
    (s, w), (n, e) = bounds
    n_t = 1 << z

    def xy(lat: float, lon: float) -> tuple[int, int]:
        lat = max(-85.05112878, min(85.05112878, lat))
        x = (lon + 180.0) / 360.0 * n_t
        r = math.radians(lat)
        y = (1.0 - math.asinh(math.tan(r)) / math.pi) / 2.0 * n_t
        return min(n_t - 1, max(0, int(x))), min(n_t - 1, max(0, int(y)))

    x0, y0 = xy(n, w)
    x1, y1 = xy(s, e)
    return x0, x1, y0, y1


def basemap_tiles(bm: Basemap, bounds: Sequence[Sequence[float]], max_tiles: int = 300,
                  margin: float = 0.5) -> dict[str, str]:
    """``{"z/x/y": data URI}`` of the tiles around ``bounds`` (``[[south, west], [north, east]]``, grown by
    ``margin`` of its size on each side), every zoom the source has up to the finest within ``max_tiles``."""
    (s, w), (n, e) = bounds
    dy, dx = (n - s) * margin, (e - w) * margin
    area = [[s - dy, w - dx], [n + dy, e + dx]]
    out: dict[str, str] = {}
    for z in bm.zooms:
        x0, x1, y0, y1 = _tile_range(area, z)
        count = (x1 - x0 + 1) * (y1 - y0 + 1)
        if out and len(out) + count > max_tiles:
            break
        for x in range(x0, x1 + 1):
            for y in range(y0, y1 + 1):
                t = bm.tile(z, x, y)
                if t is not None:
                    out[f"{z}/{x}/{y}"] = f"data:{t[1]};base64," + base64.b64encode(t[0]).decode("ascii")
    return out


_LAYER_JS = """
{% macro script(this, kwargs) %}
(function () {
    var map = {{ this._parent.get_name() }};
    var tiles = {{ this.tiles|tojson }};
    var Local = L.GridLayer.extend({
        createTile: function (c) {
            var img = document.createElement("img");
            img.alt = "";
            var src = tiles[c.z + "/" + c.x + "/" + c.y];
            if (src) { img.src = src; } else { img.style.visibility = "hidden"; }
            return img;
        }
    });
    var layer = new Local({pane: "mapsage-basemap", maxNativeZoom: {{ this.max_native }},
                           minNativeZoom: {{ this.min_native }}, maxZoom: 24, attribution: {{ this.attr|tojson }}});
    layer.addTo(map);
    window.mapsageBasemapTiles = Object.keys(tiles).length;
})();
{% endmacro %}
"""


def add_basemap(m, bm: Basemap, bounds: Sequence[Sequence[float]], max_tiles: int = 300) -> int:
    """Put the local base map's tiles around ``bounds`` under the layers of folium map ``m``; returns how many
    tiles were embedded (0: the source has none there, and the map says so in its attribution)."""
    import folium
    from branca.element import MacroElement
    from jinja2 import Template

    tiles = basemap_tiles(bm, bounds, max_tiles=max_tiles)
    folium.map.CustomPane("mapsage-basemap", z_index=150).add_to(m)
    el = MacroElement()
    el._name = "MapsageLocalBasemap"
    el._template = Template(_LAYER_JS)
    zs = sorted({int(k.split("/")[0]) for k in tiles}) or [bm.zooms[0]]
    el.tiles = tiles
    el.min_native = zs[0]
    el.max_native = zs[-1]
    el.attr = f"base map: {bm.name}" + (f" ({bm.attribution})" if bm.attribution else "") + \
        ("" if tiles else " - no tiles at this place")
    m.add_child(el)
    return len(tiles)
