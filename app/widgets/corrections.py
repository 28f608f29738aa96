"""The Review page's correction loop: accept a mask as the tile's label, or paint the label, as a new label version.

A saved correction never overwrites the dataset's labels: :func:`mapsage.analysis.labels.add_version` writes a new,
immutable version (reviewer, time, where the mask came from, changed pixels) under the workspace's ``labels/``; a
config with ``dataset.label_version: N`` trains and evaluates on "original + corrections vN", and the section
exports that view as a dataset folder in the dataset's own mask format.

Painting uses ``streamlit-drawable-canvas`` (a Streamlit component whose front end ships inside the Python
package, served by the app: nothing is fetched at run time): the tile with its current label as background, a
brush / polygon / rectangle in the chosen class's colour; painted pixels take that class (nearest palette colour of
the stroke, so anti-aliased edges still get a class), scaled back to the tile's size.
"""
from __future__ import annotations

import time
from typing import Any, Optional, Sequence

import numpy as np
import streamlit as st

from app.widgets.review_map import _read_array, palette_rgb
from mapsage.config import config_from_dict
from mapsage.errors import UserError

CANVAS_MAX = 720
TOOLS = {"brush": "freedraw", "polygon": "polygon", "rectangle": "rect"}


def painted_classes(rgba: np.ndarray, palette_rgb: np.ndarray, alpha_min: int = 128) -> np.ndarray:
    """Canvas pixels -> class ids: painted pixels (alpha >= ``alpha_min``) get the class of the nearest palette
    colour, the rest -1 (untouched)."""
    a = np.asarray(rgba)
    out = np.full(a.shape[:2], -1, np.int16)
    on = a[..., 3] >= alpha_min
    if on.any():
        px = a[on][:, :3].astype(np.int32)
        d = ((px[:, None, :] - palette_rgb[None, :, :].astype(np.int32)) ** 2).sum(-1)
        out[on] = d.argmin(1)
    return out


def apply_paint(base: np.ndarray, painted: np.ndarray) -> np.ndarray:
    """``base`` with the painted class ids (scaled to its size, nearest neighbour) written over it."""
    from PIL import Image

    h, w = base.shape[:2]
    if painted.shape != (h, w):
        p = np.asarray(Image.fromarray((painted + 1).astype(np.uint8)).resize((w, h), Image.NEAREST)).astype(
            np.int16) - 1
    else:
        p = painted
    out = base.copy()
    out[p >= 0] = p[p >= 0]
    return out


def _background(image: Any, label: Optional[np.ndarray], palette_rgb: np.ndarray, size: tuple[int, int],
                ignore_index: int):
    from PIL import Image


    rgb = _read_array(image, "image")
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    rgb = rgb[..., :3].astype(np.float32)
    if label is not None and label.shape == rgb.shape[:2]:
        valid = label != ignore_index
        col = palette_rgb[np.clip(label, 0, len(palette_rgb) - 1)].astype(np.float32)
        rgb[valid] = 0.55 * rgb[valid] + 0.45 * col[valid]
    return Image.fromarray(rgb.astype(np.uint8)).resize(size, Image.BILINEAR)


def _dataset_cfg(run_config: dict):
    """The run's config from its stored JSON form, where mapping keys are strings: integer keys of
    ``dataset.value_map`` (raw value -> class id) are restored before validation."""

    cfg = dict(run_config)
    ds = dict(cfg.get("dataset") or {})
    vm = ds.get("value_map")
    if isinstance(vm, dict):
        ds["value_map"] = {int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k: v for k, v in vm.items()}
        cfg["dataset"] = ds
    return config_from_dict(cfg)


def corrections_section(run_id: str, run_config: dict, tile: str, lay: Any, left: str, right: str,
                        classes: Sequence[str], palette: Sequence[str], ignore_index: int,
                        label_name: str = "label", reviewer_default: str = "") -> None:
    """Accept / paint / export, for one tile of a run (``lay``: its layers, ``app.widgets.review_tiles``)."""
    from app.widgets.review_tiles import LABEL, variant_label
    from mapsage.analysis import labels as lv

    cfg = _dataset_cfg(run_config)
    folder = lv.labels_root(cfg.dataset)
    flash = st.session_state.pop("_review_label_flash", None)
    if flash:
        st.success(flash, icon=":material/check_circle:")
    try:
        history = lv.history(folder, tile)
        n_versions = lv.latest_version(folder)
    except UserError as exc:
        st.error(str(exc))
        return
    st.caption(f"Label versions of dataset `{cfg.dataset.name}`: **{n_versions}** (under `{folder}`). Corrections "
               f"never overwrite the dataset's labels; train on them with `dataset.label_version: N`.")
    if history:
        import pandas as pd

        st.dataframe(pd.DataFrame([{**h, "created_at": pd.to_datetime(h["created_at"], unit="s", utc=True)
                                    .strftime("%Y-%m-%d %H:%M")} for h in history]), hide_index=True,
                     width="stretch", placeholder="–")
    if "review_label_reviewer" not in st.session_state:
        st.session_state["review_label_reviewer"] = reviewer_default
    reviewer = st.text_input("Corrected by", key="review_label_reviewer")
    note = st.text_input("Note", key="review_label_note", placeholder="e.g. the pier is land, not water")

    label = None
    if lay.label is not None:
        label = lay.label if isinstance(lay.label, np.ndarray) else _read_array(lay.label, "label")
        label = label[..., 0] if label.ndim == 3 else label

    def save(mask: np.ndarray, source: str, variant: Optional[str]) -> None:
        try:
            m = lv.add_version(folder, {tile: mask}, reviewer=(reviewer or "").strip() or None,
                               sources={tile: {"source": source, "run": run_id, "variant": variant}},
                               originals={tile: label} if label is not None else None, note=note,
                               num_classes=len(classes), ignore_index=ignore_index, dataset=cfg.dataset.name)
        except UserError as exc:
            st.error(str(exc))
            return
        ch = m["tiles"][tile].get("changed_pixels")
        st.session_state["_review_label_flash"] = (
            f"Saved label version **v{m['version']}**: {tile} from {source}"
            + (f" `{variant_label(variant)}`" if variant else "") + f" by {m['reviewer']}"
            + (f", {ch:,} pixels changed" if ch is not None else "") + ".")
        st.rerun()

    masks = [(v, p) for v, p in ((right, lay.right), (left, lay.left if left != LABEL else None)) if p is not None]
    cols = st.columns(max(1, len(masks)))
    for col, (variant, path) in zip(cols, masks):
        source = "raw" if variant_label(variant) == "raw" else "refined"
        if col.button(f"Accept {variant_label(variant)} as the label", key=f"review_accept_{variant}",
                      icon=":material/done_all:", width="stretch"):
            arr = _read_array(path, variant)
            save(arr[..., 0] if arr.ndim == 3 else arr, source, variant)

    # a toggle, not an expander: its state survives the reruns that painting triggers
    if st.toggle("Paint the label of this tile", key="review_paint_on"):
        try:
            from streamlit_drawable_canvas import st_canvas
        except ImportError:
            st.info("Painting needs `streamlit-drawable-canvas` (pip install streamlit-drawable-canvas).")
            return
        pal = palette_rgb(list(palette), len(classes))
        starts = [label_name] + [variant_label(v) for v, _ in masks]
        c1, c2, c3 = st.columns([2, 2, 1])
        start = c1.selectbox("Start from", starts, key="review_paint_start")
        cls = c2.selectbox("Paint class", list(classes), key="review_paint_class")
        tool = c3.selectbox("Tool", list(TOOLS), key="review_paint_tool")
        width = st.slider("Brush width (canvas px)", 2, 60, 16, key="review_paint_width")
        if start == label_name:
            base = label
        else:
            v, p = next((v, p) for v, p in masks if variant_label(v) == start)
            base = _read_array(p, v)
            base = base[..., 0] if base.ndim == 3 else base
        if base is None or lay.image is None:
            st.info("This tile has no label (or image) to start from.")
            return
        h, w = base.shape
        scale = min(1.0, CANVAS_MAX / max(h, w))
        cw, ch = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        colour = "#%02X%02X%02X" % tuple(int(x) for x in pal[list(classes).index(cls)])
        bg = _background(lay.image, base, pal, (cw, ch), ignore_index)
        res = st_canvas(fill_color=colour, stroke_width=width, stroke_color=colour, background_image=bg,
                        height=ch, width=cw, drawing_mode=TOOLS[tool], return_image_data=True,
                        key=f"review_canvas_{run_id}_{tile}_{start}")
        st.caption("Paint over the tile; every stroke takes the class of its colour. Polygon: click the first "
                   "vertex again to close it.")
        painted = None
        if res is not None and res.image_data is not None:
            painted = painted_classes(np.asarray(res.image_data), pal)
        n_painted = int((painted >= 0).sum()) if painted is not None else 0
        st.caption(f"{n_painted:,} canvas pixels painted.")
        if st.button("Save the painted label as a new version", key="review_paint_save", icon=":material/save:",
                     type="primary", disabled=n_painted == 0):
            save(apply_paint(base.astype(np.uint8), painted), "edit", None if start == label_name else
                 next(v for v, _ in masks if variant_label(v) == start))

    with st.expander("Export original + corrections as a dataset folder"):
        if not n_versions:
            st.caption("No label version yet.")
            return
        v = st.number_input("Version", 1, n_versions, n_versions, key="review_export_version")
        out = st.text_input("Export folder (new or empty)", key="review_export_dir",
                            value=str(folder.parent / f"{folder.name}-v{int(v)}-export-{int(time.time())}"))
        only = st.toggle("Only the corrected tiles", value=False, key="review_export_only")
        if st.button("Export", key="review_export_go", icon=":material/folder_zip:"):
            try:
                info = lv.export_version(cfg, int(v), out, only_corrected=only)
            except UserError as exc:
                st.error(str(exc))
            else:
                st.success(f"Exported v{int(v)} to `{out}`: {info['images']} images, {info['masks_corrected']} "
                           f"corrected masks in the dataset's own format, {info['masks_linked']} original masks. "
                           f"Point `dataset.root` at it to train on it.")
