"""The adopted post-processing (:class:`mapsage.infer.post.PostProcessor`: per-class small-object filter, minimum
road width) on a class-id raster of any size, block by block with bounded memory.

Each block of ``block_rows`` full-width rows is read with a **halo** of rows above and below and post-processed
as one image; only the block's own rows are written. The halo is one row more than the largest minimum area (in
pixels) and the road width: a connected component that is small enough to be removed spans fewer rows than its
pixel count, so it lies whole inside the halo-extended block and is judged on its true size; a component that
reaches the halo's edge has more pixels than any minimum and is kept, as on the whole image. The opening for the
road width only looks ``road_min_width`` rows away. So the removed pixels are exactly the whole image's; each
removed region is filled from the kept pixels around it, as on the whole image (a chain of adjacent removed
pieces that runs from the block to the halo's edge makes the halo grow, doubling up to ``MAX_GROWTH`` times). Memory: ``(block_rows + 2·halo)``
rows × width, a few bytes per pixel. Pixels that are nodata (255) stay nodata, and no pixel becomes nodata."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import DataError

NODATA = 255
MAX_GROWTH = 16


def _reaches_edge(changed: np.ndarray, c0: int, c1: int, top: bool, bottom: bool) -> bool:
    """Whether an 8-connected region of changed pixels meets both the block's rows ``c0:c1`` and a window edge
    that is not the raster's edge (its fill may then depend on pixels outside the window)."""
    import cv2

    edges = ([0] if top else []) + ([changed.shape[0] - 1] if bottom else [])
    if not edges or not changed[edges].any():
        return False
    _, labels = cv2.connectedComponents(changed.astype(np.uint8), connectivity=8)
    at_edge = np.unique(labels[edges])
    at_edge = at_edge[at_edge > 0]
    return bool(np.isin(labels[c0:c1], at_edge).any())


def post_halo(post) -> int:
    """Rows of context a block needs on each side for ``post`` to act as on the whole image."""
    return max([int(v) for v in post.min_area.values()] + [int(post.road_min_width or 0), 0]) + 1


def post_process_raster(src_path: str | Path, dst_path: str | Path, post, *, block_rows: int = 1024,
                        progress: Optional[Callable[..., None]] = None) -> dict:
    """Write ``post`` applied to the class-id raster ``src_path`` to ``dst_path`` (same grid, profile, colour
    table); returns the changed pixel count, the halo and the time taken."""
    import rasterio
    from rasterio.windows import Window

    src_path, dst_path = Path(src_path), Path(dst_path)
    t0 = time.perf_counter()
    halo = post_halo(post)
    changed = grown = 0
    try:
        with rasterio.open(src_path) as src:
            H, W = src.height, src.width
            profile = src.profile
            try:
                cmap = src.colormap(1)
            except ValueError:
                cmap = None
            with rasterio.open(dst_path, "w", **profile) as dst:
                if cmap:
                    dst.write_colormap(1, cmap)
                for r0 in range(0, H, block_rows):
                    r1 = min(H, r0 + block_rows)
                    h = halo
                    while True:
                        a, b = max(0, r0 - h), min(H, r1 + h)
                        ids = src.read(1, window=Window(0, a, W, b - a))
                        out = np.asarray(post(ids)).astype(np.uint8)
                        out = np.where(ids == NODATA, NODATA, np.where(out == NODATA, ids, out)).astype(np.uint8)
                        if h >= halo * MAX_GROWTH or not _reaches_edge(out != ids, r0 - a, r1 - a, a > 0, b < H):
                            break
                        h *= 2          # a filled region runs from the block into the halo's edge: more context
                        grown += 1
                    core = out[r0 - a:r1 - a]
                    changed += int((core != ids[r0 - a:r1 - a]).sum())
                    dst.write(core[None], window=Window(0, r0, W, r1 - r0))
                    if progress is not None:
                        progress(step=r1, steps=H, frac=r1 / H, phase="post",
                                 message=f"post-processing: row {r1}/{H}")
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"{src_path}: cannot post-process the class raster ({exc})") from exc
    return {"changed_pixels": changed, "halo_rows": halo, "halo_grown": grown, "wall_s": time.perf_counter() - t0}
