"""From a confusion-matrix cell to the tiles behind it, and from a tile to the Review map with those pixels lit.

Run detail (and Compare) draw :func:`confusion_drilldown`: the confusion matrix as a clickable chart (a heatmap with
one invisible marker per cell: Streamlit reports clicks on markers, not on heatmap cells), the picked cell (label
``c`` predicted as ``c'``; also pickable with two selectors), and the tiles ranked by that cell's pixels
(``store.error_queries.confusion_tiles``: the per-tile confusion the metrics engine wrote), the first ones as
thumbnails with the cell's pixels in magenta, each with a button that opens the Review page at that tile
(``?run=&tile=&true=&pred=&variant=``) with the same pixels highlighted on the map.
"""
from __future__ import annotations

import base64
import io
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
import streamlit as st

from app.widgets.common import guard
from app.widgets.review_map import _read_array
from mapsage import figures
from mapsage.analysis.errors_map import cell_mask
from mapsage.errors import UserError

REVIEW_PAGE = "views/review.py"
N_THUMBS = 8
THUMB_PX = 180


# ---------------------------------------------------------------------------------------------- pure helpers
def largest_error_cell(matrix: Any) -> Optional[tuple[int, int]]:
    """(label id, predicted id) of the off-diagonal cell with most pixels; None when there is no error."""
    m = np.asarray(matrix, np.int64).copy()
    if m.ndim != 2 or m.size == 0:
        return None
    np.fill_diagonal(m, 0)
    if m.max() <= 0:
        return None
    t, p = np.unravel_index(int(m.argmax()), m.shape)
    return int(t), int(p)


def clickable_confusion(matrix: Any, names: Sequence[str], normalise: bool, split_label: str, palette=None,
                        picked: Optional[tuple[int, int]] = None) -> figures.Figure:
    """The confusion heatmap of :func:`mapsage.figures.confusion_heatmap` plus one transparent square marker per
    cell (customdata ``[label id, predicted id, pixels]``) that a click selects; the picked cell framed."""
    fig = figures.confusion_heatmap(matrix, list(names), normalise, split_label, palette)
    return figures.clickable_cells(fig, names, matrix, "label %{y} → predicted %{x}: %{customdata[2]:,} px — click "
                                                       "for the tiles<extra></extra>", picked)


def thumbnail_uri(image: Any, highlight: Optional[np.ndarray] = None, px: int = THUMB_PX) -> str:
    """A PNG data URI of ``image`` (path or RGB array) scaled to ``px`` wide, ``highlight`` pixels in magenta
    (kept visible when scaled down: any highlighted source pixel marks its thumbnail pixel)."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        img = Image.fromarray(image[..., :3] if image.ndim == 3 else image).convert("RGB")
    else:
        with Image.open(image) as im:
            img = im.convert("RGB")
    w, h = img.size
    scale = px / max(w, 1)
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    small = np.asarray(img.resize(size, Image.BILINEAR)).copy()
    if highlight is not None and highlight.any():
        hm = Image.fromarray(highlight.astype(np.uint8) * 255).resize(size, Image.BOX)
        on = np.asarray(hm) > 0
        small[on] = (0.25 * small[on] + 0.75 * np.array([255, 0, 255])).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def review_params(run_id: str, tile: str, true_id: int, pred_id: int, variant: str) -> dict[str, str]:
    """The Review page's query parameters of one drill-down target."""
    return {"run": run_id, "tile": tile, "true": str(int(true_id)), "pred": str(int(pred_id)), "variant": variant}


# ---------------------------------------------------------------------------------------------- cached reads
@st.cache_data(show_spinner=False, max_entries=64)
def _tiles(ws: str, run_id: str, n: int, split: str, variant: str, t: int, p: int, eval_seq: Optional[int],
           domain: Optional[str]) -> pd.DataFrame:
    from store import error_queries

    return error_queries.confusion_tiles(run_id, split, variant, t, p, eval_seq=eval_seq, domain=domain)


@st.cache_data(show_spinner=False, max_entries=16)
def _layers(ws: str, run_id: str, n: int) -> pd.DataFrame:
    from store import review_queries

    return review_queries.review_layers(run_id)


@st.cache_data(show_spinner=False, max_entries=256)
def _thumb(ws: str, run_id: str, n: int, tile: str, variant: str, t: int, p: int, split: str,
           run_config: dict) -> tuple[Optional[str], bool]:
    """(thumbnail data URI or None, whether the cell's pixels are drawn on it)."""
    from app.widgets.review_tiles import LABEL, tile_layers

    lay = tile_layers(_layers(ws, run_id, n), tile, LABEL, variant, run_config=run_config, split=split)
    if lay.image is None:
        return None, False
    hl = None
    if lay.right is not None and lay.label is not None:
        pred = _read_array(lay.right, "prediction")
        label = _read_array(lay.label, "label") if not isinstance(lay.label, np.ndarray) else lay.label
        ignore = int(((run_config or {}).get("dataset") or {}).get("ignore_index", 255))
        if pred.shape[:2] == label.shape[:2]:
            hl = cell_mask(pred, label, t, p, ignore_index=ignore)
    return thumbnail_uri(lay.image, hl), hl is not None


# ---------------------------------------------------------------------------------------------- the section
def _on_click(chart_key: str, t_key: str, p_key: str, names: Sequence[str]) -> None:
    ev = st.session_state.get(chart_key)
    sel = getattr(ev, "selection", None) if ev is not None else None
    if sel is None and isinstance(ev, dict):
        sel = ev.get("selection")
    points = (sel.get("points") if isinstance(sel, dict) else getattr(sel, "points", None)) or []
    for pt in points:
        cd = pt.get("customdata") if isinstance(pt, dict) else None
        if cd is not None and len(cd) >= 2:
            t, p = int(cd[0]), int(cd[1])
        elif isinstance(pt, dict) and pt.get("x") in names and pt.get("y") in names:
            t, p = list(names).index(pt["y"]), list(names).index(pt["x"])
        else:
            continue
        st.session_state[t_key] = list(names)[t]
        st.session_state[p_key] = list(names)[p]
        return


def confusion_drilldown(run_id: str, run: dict, evaluation: pd.Series, matrix: Any, names: Sequence[str],
                        palette=None, normalise: bool = True, key: str = "dd", ws: str = "",
                        run_label: Optional[str] = None) -> None:
    """The clickable confusion matrix of one evaluation and the tiles behind the picked cell."""
    names = [str(n) for n in names]
    split = str(evaluation["split"])
    variant = str(evaluation["variant"])
    domain = evaluation.get("domain") or "all"
    eval_seq = int(evaluation["seq"]) if pd.notna(evaluation.get("seq")) else None
    n_events = int(run.get("n_events") or 0)
    t_key, p_key, chart_key = f"{key}_true", f"{key}_pred", f"{key}_chart"
    default = largest_error_cell(matrix) or (0, 0)
    if st.session_state.get(t_key) not in names:
        st.session_state[t_key] = names[default[0]]
    if st.session_state.get(p_key) not in names:
        st.session_state[p_key] = names[default[1]]
    picked = (names.index(st.session_state[t_key]), names.index(st.session_state[p_key]))
    fig = clickable_confusion(matrix, names, normalise, split, palette, picked=picked)
    st.plotly_chart(fig, width="stretch", key=chart_key, on_select=lambda: _on_click(chart_key, t_key, p_key, names),
                    selection_mode="points")
    st.caption("Rows: label; columns: prediction. Ignored pixels are not counted. **Click a cell** (or pick it "
               "below) to list the tiles behind it.")

    st.markdown("#### Tiles behind a confusion")
    c1, c2 = st.columns(2)
    c1.selectbox("Label class", names, key=t_key)
    c2.selectbox("Predicted as", names, key=p_key)
    t, p = names.index(st.session_state[t_key]), names.index(st.session_state[p_key])
    m = np.asarray(matrix, np.int64)
    total = int(m[t, p]) if m.size else 0
    if t == p:
        st.info(f"`{names[t]}` → `{names[p]}` is the diagonal (correct pixels); pick an off-diagonal cell to see "
                "where the model errs.", icon=":material/info:")
        return
    tiles = guard(_tiles, ws, run_id, n_events, split, variant, t, p, eval_seq, domain,
                  default=pd.DataFrame(), what="Reading the per-tile confusion")
    if tiles is None or tiles.empty:
        from store import error_queries

        if not guard(error_queries.has_tile_confusion, run_id, split, variant, eval_seq, default=False):
            st.info("This evaluation has no per-tile confusion in the store (it was written before the workbench "
                    "recorded it): evaluate the checkpoint again (stage 3 *evaluate*) to drill down.",
                    icon=":material/info:")
        else:
            st.info(f"No tile has label `{names[t]}` predicted as `{names[p]}` in this evaluation.",
                    icon=":material/check_circle:")
        return
    st.markdown(f"**{len(tiles)} tile(s)** with label **{names[t]}** predicted as **{names[p]}** — {total:,} "
                f"pixels in all on `{split}` (`{variant}`), most pixels first.")
    cfg = run.get("config") or {}
    layers = guard(_layers, ws, run_id, n_events, default=pd.DataFrame(), what="Reading the mask artifacts")
    has_masks = layers is not None and not layers.empty and (layers["variant"] == variant).any()
    if not has_masks:
        st.caption(f"This run saved no `{variant}` prediction masks: the thumbnails show the image only, and the "
                   "Review map needs masks — run an evaluation with `eval.save_predictions=true` on its "
                   "checkpoint.")
    top = tiles.head(N_THUMBS)
    cols = st.columns(4)
    for i, r in enumerate(top.itertuples(index=False)):
        col = cols[i % 4]
        with col:
            try:
                uri, _lit = _thumb(ws, run_id, n_events, str(r.tile), variant, t, p, split, cfg)
            except (UserError, OSError, ValueError) as exc:
                uri, _lit = None, False
                st.caption(f"no thumbnail: {exc}")
            if uri:
                st.image(uri, width="stretch")
            share = f" ({r.share * 100:.1f} % of its {names[t]})" if pd.notna(r.share) else ""
            st.caption(f"#{r.rank} **{r.tile}** · {int(r.pixels):,} px{share}")
            if st.button("Open in Review", key=f"{key}_open_{i}", icon=":material/layers:", disabled=not has_masks,
                         width="stretch"):
                st.switch_page(REVIEW_PAGE, query_params=review_params(run_id, str(r.tile), t, p, variant))
    with st.expander(f"All {len(tiles)} tiles of this confusion"):
        shown = pd.DataFrame({"rank": tiles["rank"], "tile": tiles["tile"], "domain": tiles["domain"],
                              "pixels": tiles["pixels"], f"share of the tile's {names[t]} (%)": tiles["share"] * 100})
        if shown["domain"].isna().all():
            shown = shown.drop(columns=["domain"])
        st.dataframe(shown, hide_index=True, width="stretch", placeholder="–",
                     column_config={f"share of the tile's {names[t]} (%)": st.column_config.NumberColumn(
                         format="%.1f")})
        st.download_button("Download CSV", shown.to_csv(index=False).encode(), file_name=(
            f"{run_label or run_id}_{split}_{names[t]}_as_{names[p]}.csv").replace("/", "_"), mime="text/csv",
            key=f"{key}_csv", icon=":material/download:")
