"""Per-class polygons from a class-id raster, block by block with bounded memory and no seams.

The raster is read in blocks of ``block_rows`` full-width rows. In each block, every 4-connected region of one
class (``scipy.ndimage.label``) is one polygon (``rasterio.features.shapes`` on the region labels, in pixel
coordinates, so holes are interior rings and coordinates are exact integers). A region that touches the block's
bottom row stays **open**; in the next block, the pairs of regions facing each other across the seam with the same
class are grouped (union-find on the two pixel rows). A group keeps its per-block parts apart while it stays open
and is joined **once**, when no later block can reach it (a noded coverage union; only the exterior rings, where
parts meet, are noded), so nothing is cut where blocks meet and a region spanning the whole raster costs one join,
not one per seam. Memory: one block of labels plus the open groups' parts and one batch of finished polygons. Each polygon carries its class, its pixel count, its mean confidence (the mean of the confidence raster
over its pixels) and its area (m² in a projected CRS; through the ellipsoid in a geographic CRS; none without a
CRS; the region's own area, before simplification), then is moved to map coordinates, filtered by the per-class
minimum areas (m²), simplified (``simplify``, map units) and written to a GeoPackage (or GeoJSON) in batches."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from ..errors import DataError, UserError

_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


@dataclass
class _Piece:
    cls: int
    geom: object          # shapely geometry in pixel coordinates
    conf_sum: float
    pixels: int


@dataclass
class _Group:
    """A region that crosses block seams: its per-block parts (pixel coordinates), joined once when complete."""
    cls: int
    parts: list
    conf_sum: float
    pixels: int


class _AreaFn:
    """Area in m² of a map-coordinate geometry for a CRS (None without one)."""

    def __init__(self, crs):
        self.crs = crs
        self.factor = None
        self.geod = None
        if crs is None:
            return
        if crs.is_projected:
            self.factor = float(crs.linear_units_factor[1]) ** 2
        elif crs.is_geographic:
            from pyproj import CRS, Geod
            self.geod = Geod(ellps="WGS84") if CRS.from_user_input(crs.to_wkt()).ellipsoid is None else \
                CRS.from_user_input(crs.to_wkt()).get_geod()

    def __call__(self, geom) -> Optional[float]:
        if self.factor is not None:
            return float(geom.area) * self.factor
        if self.geod is not None:
            return abs(float(self.geod.geometry_area_perimeter(geom)[0]))
        return None


def _noded(geom):
    """``geom`` with its exterior rings cut into 1-pixel segments. Parts of one region from different blocks meet
    only along block edges, which lie on exterior rings (a hole is enclosed by the region's own pixels inside
    its block), so the holes - most of a large region's vertices - are left as they are."""
    import shapely

    polys = list(geom.geoms) if geom.geom_type == "MultiPolygon" else [geom]
    out = [shapely.Polygon(shapely.segmentize(p.exterior, 1.0), p.interiors) for p in polys]
    return out[0] if len(out) == 1 else shapely.MultiPolygon(out)


def _join(geoms: list):
    """Union of regions that do not overlap and meet along pixel edges: the exterior edges are cut into 1-pixel
    segments so that shared edges carry the same vertices (a noded coverage), joined with GEOS's coverage union
    (much faster than a general union), and the collinear vertices are dropped again."""
    import shapely

    out = None
    try:
        dense = np.array([_noded(g) for g in geoms], dtype=object)
        out = shapely.simplify(shapely.coverage_union_all(dense), 0.0, preserve_topology=True)
    except shapely.errors.GEOSException:
        out = None
    if out is not None and out.geom_type == "MultiPolygon" and len(out.geoms) == 1:
        out = out.geoms[0]
    if out is None or out.geom_type != "Polygon":
        # the parts form one edge-connected region, so their union is one polygon; anything else means the
        # coverage union did not apply: the general (slower) union
        out = shapely.union_all(geoms)
    return out


def _find(parent: dict, a: int) -> int:
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


def polygonize(ids_path: str | Path, out_path: str | Path, *, classes: Sequence[str],
               conf_path: str | Path | None = None, simplify: float = 0.0,
               min_area_m2: Optional[Mapping[str, float]] = None, block_rows: int = 1024, ignore: int = 255,
               driver: Optional[str] = None, progress: Optional[Callable[..., None]] = None,
               show_bar: bool = False) -> dict:
    """Write per-class polygons of the id raster ``ids_path`` to ``out_path`` (``.gpkg`` or ``.geojson``).

    ``min_area_m2``: class name -> smallest area kept (needs a CRS). Returns counts and timing."""
    import geopandas as gpd
    import pyogrio
    import rasterio
    import shapely
    from rasterio import features
    from rasterio.windows import Window
    from scipy import ndimage
    from tqdm import tqdm

    ids_path, out_path = Path(ids_path), Path(out_path)
    names = list(classes)
    min_area_m2 = dict(min_area_m2 or {})
    unknown = sorted(set(min_area_m2) - set(names))
    if unknown:
        raise UserError(f"predict.min_area_m2 names {unknown}, which are not in dataset.classes {names}")
    if block_rows < 1:
        raise UserError(f"predict.block_rows must be positive, got {block_rows}")
    min_by_id = {names.index(k): float(v) for k, v in min_area_m2.items()}
    suffix = out_path.suffix.lower()
    driver = driver or {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}.get(suffix)
    if driver is None:
        raise UserError(f"{out_path}: polygons are written as .gpkg or .geojson (predict.polygon_format)")
    t0 = time.perf_counter()
    src = rasterio.open(ids_path)
    csrc = rasterio.open(conf_path) if conf_path else None
    try:
        H, W = src.height, src.width
        T = src.transform
        crs = src.crs
        if min_by_id and crs is None:
            raise UserError(f"{ids_path}: predict.min_area_m2 needs a georeferenced raster (this one has no CRS); "
                            "remove the minimum areas or georeference the input")
        area_of = _AreaFn(crs)
        if out_path.exists():
            out_path.unlink()
        out_path.parent.mkdir(parents=True, exist_ok=True)
        # GeoJSON is written once at the end (its driver cannot append); a GeoPackage in batches
        stream = driver == "GPKG"
        batch: dict[str, list] = {k: [] for k in ("class", "class_id", "area_m2", "pixels", "mean_conf", "geometry")}
        lin = np.array([[T.a, T.d], [T.b, T.e]], dtype=np.float64)
        off = np.array([T.c, T.f], dtype=np.float64)
        counts = {"polygons": 0, "dropped_min_area": 0, "merged_at_seams": 0, "blocks": 0, "joins": 0,
                  "joined_parts": 0, "max_open_parts": 0}
        written_any = False

        def finalize(pieces: list[_Piece]) -> None:
            """Move complete regions to map coordinates, filter, simplify and queue them for writing."""
            if not pieces:
                return
            geoms = shapely.transform(np.array([p.geom for p in pieces], dtype=object),
                                      lambda xy: xy @ lin + off)
            cls = np.array([p.cls for p in pieces], dtype=np.int64)
            pixels = np.array([p.pixels for p in pieces], dtype=np.int64)
            conf = np.array([p.conf_sum for p in pieces], dtype=np.float64)
            if area_of.factor is not None:
                area = shapely.area(geoms) * area_of.factor     # the region's true area, before simplification
            elif area_of.geod is not None:
                area = np.array([area_of(g) for g in geoms], dtype=np.float64)
            else:
                area = np.full(len(pieces), np.nan)
            keep = np.ones(len(pieces), dtype=bool)
            for c, lo in min_by_id.items():
                keep &= ~((cls == c) & (area < lo))
            counts["dropped_min_area"] += int((~keep).sum())
            geoms, cls, pixels, conf, area = geoms[keep], cls[keep], pixels[keep], conf[keep], area[keep]
            if simplify > 0:
                geoms = shapely.simplify(geoms, simplify, preserve_topology=True)
                ok = ~shapely.is_empty(geoms)
                geoms, cls, pixels, conf, area = geoms[ok], cls[ok], pixels[ok], conf[ok], area[ok]
            batch["geometry"].extend(geoms.tolist())
            batch["class"].extend(names[c] if c < len(names) else str(c) for c in cls.tolist())
            batch["class_id"].extend(cls.tolist())
            batch["area_m2"].extend((area if crs is not None else np.full(len(cls), np.nan)).tolist())
            batch["pixels"].extend(pixels.tolist())
            batch["mean_conf"].extend((conf / np.maximum(pixels, 1)).tolist() if csrc is not None
                                      else [None] * len(cls))
            if stream and len(batch["geometry"]) >= 20000:
                flush()

        def frame():
            return gpd.GeoDataFrame({k: v for k, v in batch.items() if k != "geometry"},
                                    geometry=batch["geometry"], crs=crs.to_wkt() if crs else None)

        def flush() -> None:
            nonlocal written_any
            if not batch["geometry"]:
                return
            pyogrio.write_dataframe(frame(), out_path, layer="predictions", driver="GPKG", append=written_any)
            counts["polygons"] += len(batch["geometry"])
            written_any = True
            for v in batch.values():
                v.clear()

        # a region still reachable from the next block is an open group: its per-block parts are kept apart
        # and joined once, when the group is complete (re-joining a growing region at every seam is quadratic)
        open_groups: dict[int, _Group] = {}
        prev_bottom_ids = prev_bottom_cls = None
        next_id = 1
        bar = tqdm(total=H, desc="polygons", unit="row", leave=False, disable=not show_bar)

        def close(groups) -> None:
            pieces = []
            for g in groups:
                if len(g.parts) == 1:
                    geom = g.parts[0]
                else:
                    geom = _join(g.parts)
                    counts["joins"] += 1
                    counts["joined_parts"] += len(g.parts)
                pieces.append(_Piece(g.cls, geom, g.conf_sum, g.pixels))
            finalize(pieces)

        for r0 in range(0, H, block_rows):
            r1 = min(H, r0 + block_rows)
            ids = src.read(1, window=Window(0, r0, W, r1 - r0))
            conf = (csrc.read(1, window=Window(0, r0, W, r1 - r0)).astype(np.float32) / np.float32(255.0)
                    if csrc is not None else None)
            labels = np.zeros(ids.shape, dtype=np.int32)
            cls_of = [0]
            for c in np.unique(ids):
                if int(c) == ignore:
                    continue
                lab, n = ndimage.label(ids == c, structure=_FOUR)
                if n:
                    sel = lab > 0
                    labels[sel] = lab[sel] + (len(cls_of) - 1)
                    cls_of.extend([int(c)] * n)
            n_local = len(cls_of) - 1
            pix = np.bincount(labels.ravel(), minlength=n_local + 1)
            csum = np.bincount(labels.ravel(), weights=conf.ravel(), minlength=n_local + 1) if conf is not None \
                else np.zeros(n_local + 1)
            px_transform = rasterio.Affine.translation(0, r0)
            # rings -> polygons in one vectorised call (shell first, then holes, per region)
            coords, ring_of, poly_of, values = [], [], [], []
            n_rings = 0
            for k, (g, v) in enumerate(features.shapes(labels, mask=labels > 0, connectivity=4,
                                                       transform=px_transform)):
                values.append(int(v))
                for ring in g["coordinates"]:
                    coords.append(np.asarray(ring, dtype=np.float64))
                    ring_of.append(len(coords[-1]))
                    poly_of.append(k)
                    n_rings += 1
            groups: dict[int, _Group] = {}
            if values:
                rings = shapely.linearrings(np.concatenate(coords),
                                            indices=np.repeat(np.arange(n_rings), ring_of))
                polys = shapely.polygons(rings, indices=np.asarray(poly_of))
                by_label: dict[int, list] = {}
                for v, geom in zip(values, polys.tolist()):
                    by_label.setdefault(v, []).append(geom)
                for local, parts in by_label.items():
                    geom = parts[0] if len(parts) == 1 else shapely.union_all(parts)
                    groups[local + next_id - 1] = _Group(cls_of[local], [geom], float(csum[local]), int(pix[local]))
            del coords, ring_of, poly_of, values
            # global region ids of the block's first and last rows (all the seams need)
            first, last = (np.where(labels[i] > 0, labels[i].astype(np.int64) + (next_id - 1), 0) for i in (0, -1))
            del labels
            next_id += n_local
            # regions facing each other across the seam above this block with the same class are one region
            parent: dict[int, int] = {}
            if prev_bottom_ids is not None:
                top = first
                same = (prev_bottom_ids > 0) & (top > 0) & (prev_bottom_cls == ids[0])
                if same.any():
                    pairs = np.unique(np.stack([prev_bottom_ids[same], top[same]], axis=1), axis=0)
                    for a, b in pairs.tolist():
                        parent.setdefault(a, a)
                        parent.setdefault(b, b)
                        ra, rb = _find(parent, a), _find(parent, b)
                        if ra != rb:
                            parent[max(ra, rb)] = min(ra, rb)
            remap: dict[int, int] = {}
            if parent:
                members_of: dict[int, list[int]] = {}
                for k in parent:
                    members_of.setdefault(_find(parent, k), []).append(k)
                for root, members in members_of.items():
                    parts_ = [(open_groups.pop(m) if m in open_groups else groups.pop(m)) for m in members]
                    merged = _Group(parts_[0].cls, [g for p in parts_ for g in p.parts],
                                    sum(p.conf_sum for p in parts_), sum(p.pixels for p in parts_))
                    counts["merged_at_seams"] += len(parts_) - 1
                    groups[root] = merged
                    for m in members:
                        remap[m] = root
            # open groups of the block above that met nothing here are complete
            close(open_groups.values())
            open_groups = {}
            if r1 < H:
                bottom = last
                if remap:
                    keys = np.array(list(remap), dtype=np.int64)
                    vals = np.array([remap[k] for k in keys.tolist()], dtype=np.int64)
                    order = np.argsort(keys)
                    pos = np.searchsorted(keys[order], bottom)
                    pos = np.clip(pos, 0, len(keys) - 1)
                    hit = keys[order][pos] == bottom
                    bottom = np.where(hit, vals[order][pos], bottom)
                touching = set(np.unique(bottom[bottom > 0]).tolist())
                open_groups = {k: g for k, g in groups.items() if k in touching}
                close(g for k, g in groups.items() if k not in touching)
                prev_bottom_ids, prev_bottom_cls = bottom, ids[-1].copy()
            else:
                close(groups.values())
            del groups
            counts["blocks"] += 1
            counts["max_open_parts"] = max(counts["max_open_parts"],
                                           sum(len(g.parts) for g in open_groups.values()))
            bar.update(r1 - r0)
            if progress is not None:
                progress(step=r1, steps=H, frac=r1 / H, phase="polygons",
                         message=f"polygons: row {r1}/{H}")
        bar.close()
        close(open_groups.values())
        if stream:
            flush()
            if not written_any:   # an empty layer still makes a valid file
                gpd.GeoDataFrame({"class": [], "class_id": [], "area_m2": [], "pixels": [], "mean_conf": []},
                                 geometry=[], crs=crs.to_wkt() if crs else None).to_file(out_path,
                                                                                          layer="predictions",
                                                                                          driver="GPKG")
        else:
            gdf = frame()
            if crs is not None:
                gdf = gdf.to_crs(4326)
            counts["polygons"] = len(gdf)
            pyogrio.write_dataframe(gdf, out_path, driver="GeoJSON")
    except (rasterio.errors.RasterioIOError, OSError) as exc:
        raise DataError(f"{ids_path}: cannot polygonise ({exc})") from exc
    finally:
        src.close()
        if csrc is not None:
            csrc.close()
    counts.update(path=str(out_path), driver=driver, wall_s=time.perf_counter() - t0,
                  area_unit="m2" if crs is not None else None, simplify=simplify)
    return counts
