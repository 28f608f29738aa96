"""The Review page's error views: the drill-down target from the address, error layers on the map, the error atlas.

* :class:`Drill` / :func:`drill_from_params` -- ``?true=<label id>&pred=<predicted id>&variant=<mask variant>``
  (set by the confusion drill-down of Run detail and Compare): the confusion cell whose pixels the map highlights
  and whose tiles come first in the tile list.
* :func:`overlay_layers` -- the map's extra overlays for one tile (no Streamlit): the highlighted cell, correct /
  false positive / false negative of a class or of all classes, confidence (max probability or margin, from the
  tile's saved probabilities), disagreement between the two compared masks, and the block error atlas.
* :func:`atlas_figure` -- a per-tile error heatmap over the run's tiles: one row per scene (the folder part of the
  tile id, e.g. Dubai's ``Tile 3``), one column per tile of it; the colour is the tile's share of misclassified
  pixels from the store's per-tile confusion.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from app.widgets.review_map import render_offline
from mapsage import figures
from mapsage.analysis import errors_map as em

ERRORS_ALL = "errors: all classes"
DISAGREE = "disagreement: left vs right"
CONF_MAX = "confidence: max probability"
CONF_MARGIN = "confidence: top-2 margin"
ATLAS = "error atlas (blocks)"


@dataclass(frozen=True)
class Drill:
    """A confusion cell to highlight: label ``true_id`` predicted as ``pred_id`` in mask ``variant``."""

    true_id: int
    pred_id: int
    variant: str

    def name(self, classes: Sequence[str]) -> str:
        def n(i: int) -> str:
            return classes[i] if 0 <= i < len(classes) else str(i)
        return f"{n(self.true_id)} → predicted {n(self.pred_id)}"


def drill_from_params(true: Optional[str], pred: Optional[str], variant: Optional[str], num_classes: int,
                      variants: Sequence[str]) -> tuple[Optional[Drill], Optional[str]]:
    """(the drill target, or None; a one-line reason when the parameters were given but cannot be used)."""
    if true is None and pred is None:
        return None, None
    try:
        t, p = int(str(true)), int(str(pred))
    except (TypeError, ValueError):
        return None, f"`?true=` and `?pred=` must be class ids (0..{num_classes - 1}), got {true!r} and {pred!r}"
    if not (0 <= t < num_classes and 0 <= p < num_classes):
        return None, f"class ids must be 0..{num_classes - 1}, got true={t} pred={p}"
    v = variant if variant else (variants[0] if variants else None)
    if v not in variants:
        return None, f"this run has no `{v}` prediction masks (it has {', '.join(variants) or 'none'})"
    return Drill(t, p, str(v)), None


def error_layer_names(classes: Sequence[str], has_probs: bool, can_disagree: bool) -> list[str]:
    names = [ERRORS_ALL] + [f"errors: {c}" for c in classes]
    if has_probs:
        names += [CONF_MAX, CONF_MARGIN]
    if can_disagree:
        names.append(DISAGREE)
    names.append(ATLAS)
    return names


def overlay_layers(wanted: Sequence[str], classes: Sequence[str], *, label: Optional[np.ndarray],
                   right: Optional[np.ndarray], left: Optional[np.ndarray] = None, probs: Optional[np.ndarray] = None,
                   drill: Optional[Drill] = None, ignore_index: int = 255, atlas_block: int = 64,
                   right_name: str = "prediction", left_name: str = "left") -> list[tuple[str, np.ndarray, bool]]:
    """The overlays of one tile as ``(layer name, RGBA, shown)``, ``right`` being the mask the errors are about.
    Layers that their inputs cannot give (no label, no probabilities) are left out."""

    out: list[tuple[str, np.ndarray, bool]] = []
    if drill is not None and label is not None and right is not None:
        cell = em.cell_mask(right, label, drill.true_id, drill.pred_id, ignore_index)
        out.append((f"label {drill.name(classes)} ({int(cell.sum()):,} px)", em.highlight_rgba(cell), True))
    for name in wanted:
        if name == ERRORS_ALL and label is not None and right is not None:
            out.append((f"errors of {right_name} (green right, red wrong)", em.error_rgba(right, label,
                                                                                      None, ignore_index), True))
        elif name.startswith("errors: ") and name != ERRORS_ALL and label is not None and right is not None:
            cls = name[len("errors: "):]
            if cls in classes:
                out.append((f"{cls}: TP green / FP red / FN blue",
                            em.error_rgba(right, label, list(classes).index(cls), ignore_index), True))
        elif name in (CONF_MAX, CONF_MARGIN) and probs is not None:
            kind = "maxprob" if name == CONF_MAX else "margin"
            out.append((f"low confidence ({'max probability' if kind == 'maxprob' else 'top-2 margin'})",
                        em.confidence_rgba(probs, kind), True))
        elif name == DISAGREE and left is not None and right is not None:
            out.append((f"{left_name} ≠ {right_name}", em.disagreement_rgba(left, right, ignore_index), True))
        elif name == ATLAS and label is not None and right is not None:
            rates = em.block_error_rates(right, label, atlas_block, ignore_index)
            out.append((f"error atlas ({atlas_block} px blocks)", em.atlas_rgba(rates, label.shape, atlas_block),
                        True))
    return out


def scene_and_part(tile: str) -> tuple[str, str]:
    """``"Tile 3/image_part_001"`` -> ``("Tile 3", "image_part_001")``; a tile id without a folder is its own
    scene part in the scene ``""``."""
    t = str(tile).replace("\\", "/")
    if "/" in t:
        scene, part = t.rsplit("/", 1)
        return scene, part
    return "", t


def atlas_frame(errors: pd.DataFrame) -> pd.DataFrame:
    """Per-tile error rates (``store.error_queries.tile_errors``) with ``scene`` and ``part`` columns."""
    if errors is None or errors.empty:
        return pd.DataFrame(columns=["tile", "scene", "part", "error_rate", "wrong", "valid"])
    df = errors.copy()
    sp = [scene_and_part(t) for t in df["tile"]]
    df["scene"] = [s for s, _ in sp]
    df["part"] = [p for _, p in sp]
    return df


def atlas_figure(errors: pd.DataFrame, split_label: str, variant: str) -> figures.Figure:
    """Heatmap of per-tile error rates: rows scenes, columns the tiles of each scene (sorted by id;
    :func:`mapsage.figures.error_atlas`)."""
    return figures.error_atlas(atlas_frame(errors), split_label, variant)


def georef_footprints(paths: Mapping[str, str]) -> dict[str, list[list[float]]]:
    """``{tile: [[south, west], [north, east]]}`` (WGS84) of the tiles whose image files carry a CRS."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.warp import transform_bounds

    out = {}
    for tile, path in paths.items():
        if not str(path).lower().endswith((".tif", ".tiff")):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    if src.crs is None:
                        continue
                    w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        except Exception:  # noqa: BLE001 - an unreadable file is simply not placed
            continue
        out[str(tile)] = [[s, w], [n, e]]
    return out


def atlas_map_html(errors: pd.DataFrame, footprints: Mapping[str, Any]) -> str:
    """An offline folium map of georeferenced tile footprints coloured by their error rate."""
    import folium


    df = errors[errors["tile"].isin(list(footprints))]
    bounds = np.array([footprints[t] for t in df["tile"]], np.float64)
    south, west = bounds[:, 0, 0].min(), bounds[:, 0, 1].min()
    north, east = bounds[:, 1, 0].max(), bounds[:, 1, 1].max()
    m = folium.Map(tiles=None, control_scale=True, attribution_control=False)
    for r in df.itertuples(index=False):
        rate = float(r.error_rate) if pd.notna(r.error_rate) else 0.0
        red = int(255 * min(1.0, rate * 2))
        colour = f"#{red:02x}{int(200 * (1 - min(1.0, rate * 2))):02x}40"
        folium.Rectangle(footprints[r.tile], color=colour, weight=1, fill=True, fill_color=colour,
                         fill_opacity=0.6, tooltip=f"{r.tile}: {rate * 100:.1f} % wrong").add_to(m)
    m.fit_bounds([[south, west], [north, east]])
    return render_offline(m)
