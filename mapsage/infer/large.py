"""Rasters larger than memory (e.g. a 10,000 × 10,000 GeoTIFF): sliding-window prediction with bounded memory.

The image is read with rasterio one **row band** of windows at a time (``tile`` rows × full width), windows are
run ``eval.window_batch`` at a time, and their scores are summed into an accumulator that holds only the rows the
current band covers. Rows no later window can reach are final: they are divided by their window count, argmaxed
and written to the output GeoTIFF (same CRS and transform, tiled, deflate, the dataset palette as colour table),
in whole 256-row blocks. The window grid and summation order are the in-memory :func:`slide_logits`' (mmseg's),
so without TTA the result equals in-memory sliding-window inference of the whole image.

Memory: ``4·(C+1)·tile_h·W`` bytes of accumulator, ``3·tile_h·W`` bytes of image band, ``256·W`` bytes of output
block, plus one window batch on the device — independent of the raster's height.

TTA on this path is applied **per window** (each window's views are softmax-averaged, then windows are averaged
over their overlap), since resizing a whole raster is what this path exists to avoid."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, config_from_dict, to_dict
from ..config.core import apply_overrides
from ..data import get_normalization
from ..errors import DataError, UserError
from .checkpoints import load_checkpoint_model
from .core import _chunks, _flip, _pair, forward_padded, model_device, model_output_stride, tta_views, window_grid
from .evaluate import resolve_device
from .predictions import palette_array

BLOCK = 256
FLUSH_ROWS = 256                   # finalised rows turned into classes (and handed to row_sink) per step


def _window_scores(model, crops: torch.Tensor, num_classes: int, divisor: int, views) -> torch.Tensor:
    """Per-window scores: logits without TTA, softmax-averaged probabilities over the views with TTA."""
    if len(views) == 1 and views[0].scale == 1.0 and views[0].flip is None:
        return forward_padded(model, crops, divisor, num_classes)
    h, w = crops.shape[-2:]
    acc = None
    for view in views:
        x = crops
        if view.scale != 1.0:
            x = F.interpolate(x, size=(max(1, int(h * view.scale + 0.5)), max(1, int(w * view.scale + 0.5))),
                              mode="bilinear", align_corners=False)
        x = _flip(x, view.flip)
        logits = _flip(forward_padded(model, x, divisor, num_classes), view.flip)
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        p = logits.softmax(dim=1)
        acc = p if acc is None else acc + p
    return acc / len(views)


def _to_unit(band: np.ndarray, dtype, value_scale: Optional[float], path: Path) -> np.ndarray:
    if value_scale is None:
        if np.dtype(dtype) != np.uint8:
            raise DataError(f"{path}: bands are {np.dtype(dtype).name}, not 8-bit; pass value_scale (the value "
                            "that means full brightness, e.g. 4095 or 10000) or convert the raster to 8-bit")
        value_scale = 255.0
    return band.astype(np.float32) / float(value_scale)


def predict_raster(model: nn.Module, src_path: str | Path, dst_path: str | Path, eval_cfg, num_classes: int,
                   mean: Sequence[float], std: Sequence[float], *, palette: Sequence[str] | None = None,
                   bands: Sequence[int] = (1, 2, 3), value_scale: Optional[float] = None,
                   device: torch.device | str | None = None,
                   progress: Optional[Callable[..., None]] = None, show_bar: bool = True,
                   row_sink: Optional[Callable[[int, np.ndarray, torch.Tensor], None]] = None) -> dict:
    """Predict a class-id GeoTIFF for a (large) raster with bounded memory; returns timing and size figures.

    ``mean``/``std`` are the model's normalisation in 0..1 scale (``mapsage.data.get_normalization(cfg)``).
    Pixels where every band equals the source's nodata value are written as 255 (the output's nodata).
    ``row_sink(first_row, ids [n,W] uint8, probs [C,n,W])`` receives every run of final rows with their class
    probabilities (to write confidence or probability rasters beside the ids)."""
    import rasterio
    from rasterio.windows import Window
    from tqdm import tqdm

    src_path, dst_path = Path(src_path), Path(dst_path)
    if not src_path.exists():
        raise DataError(f"{src_path}: raster not found")
    th, tw = _pair(eval_cfg.tile, "eval.tile")
    sh, sw = _pair(eval_cfg.stride, "eval.stride")
    views = tta_views(getattr(eval_cfg, "tta", None))
    divisor = model_output_stride(model)
    dev = torch.device(device) if device is not None else model_device(model, torch.device("cpu"))
    mean_t = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    per_pass = max(1, int(eval_cfg.window_batch))
    scores_are_probs = not (len(views) == 1 and views[0].scale == 1.0 and views[0].flip is None)
    lut = palette_array(list(palette or []), num_classes)
    t0 = time.perf_counter()
    try:
        src = rasterio.open(src_path)
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"{src_path}: cannot open raster ({exc})") from exc
    with src:
        if src.count < max(bands):
            raise DataError(f"{src_path}: has {src.count} band(s); bands {list(bands)} were asked for")
        H, W = src.height, src.width
        dtype = src.dtypes[bands[0] - 1]
        nodata = src.nodata
        rows = window_grid(H, th, sh)
        cols = window_grid(W, tw, sw)
        th_eff = min(th, H)
        profile = {"driver": "GTiff", "height": H, "width": W, "count": 1, "dtype": "uint8", "crs": src.crs,
                   "transform": src.transform, "compress": "deflate", "nodata": 255}
        if W >= BLOCK and H >= BLOCK:
            profile.update(tiled=True, blockxsize=BLOCK, blockysize=BLOCK)
        dst_path.parent.mkdir(parents=True, exist_ok=True)
        acc = torch.zeros((num_classes, th_eff, W), dtype=torch.float32, device=dev)
        cnt = torch.zeros((th_eff, W), dtype=torch.float32, device=dev)
        base = rows[0][0]                      # image row of acc[:, 0]
        pending: list[np.ndarray] = []         # final rows not yet written (fewer than a block)
        pending_rows = 0
        written = 0
        n_windows = 0
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write_colormap(1, {i: tuple(int(v) for v in lut[i]) + (255,) for i in range(num_classes)})

            def flush_rows(upto: int, final: bool = False):
                """Finalise image rows [base, upto) and write whole blocks."""
                nonlocal acc, cnt, base, pending_rows, written
                n = upto - base
                if n > 0:
                    # finalised rows in runs of at most FLUSH_ROWS: the score/softmax temporaries of a run are
                    # what the peak memory holds besides the accumulator, not those of the whole band
                    for r0 in range(0, n, FLUSH_ROWS):
                        r1 = min(n, r0 + FLUSH_ROWS)
                        scores = acc[:, r0:r1] / cnt[r0:r1]
                        pred = scores.argmax(dim=0).to(torch.uint8).cpu().numpy()
                        if nodata is not None:
                            rgb = src.read(list(bands), window=Window(0, base + r0, W, r1 - r0))
                            pred[np.all(rgb == nodata, axis=0)] = 255
                        if row_sink is not None:
                            row_sink(base + r0, pred, scores if scores_are_probs else scores.softmax(dim=0))
                        del scores
                        pending.append(pred)
                    pending_rows += n
                    keep = acc.shape[1] - n            # rows still open move to the top, in place
                    if keep > 0:
                        acc[:, :keep] = acc[:, n:].clone()
                        cnt[:keep] = cnt[n:].clone()
                    acc[:, keep:].zero_()
                    cnt[keep:].zero_()
                    base = upto
                if pending_rows >= BLOCK or (final and pending_rows):
                    block = np.concatenate(pending, axis=0)
                    take = block.shape[0] if final else (block.shape[0] // BLOCK) * BLOCK
                    dst.write(block[:take][None], window=Window(0, written, W, take))
                    written += take
                    rest = block[take:]
                    pending.clear()
                    if rest.shape[0]:
                        pending.append(rest)
                    pending_rows = rest.shape[0]

            bar = tqdm(total=len(rows), desc=f"raster {src_path.name}", unit="band", leave=False,
                       disable=not show_bar)
            for i, (y1, y2) in enumerate(rows):
                flush_rows(y1)  # rows above this band are final
                raw = src.read(list(bands), window=Window(0, y1, W, y2 - y1))
                band = torch.from_numpy(_to_unit(raw, dtype, value_scale, src_path)).to(dev)
                band = ((band.unsqueeze(0) - mean_t) / std_t)[0]
                wins = [(x1, x2) for (x1, x2) in cols]
                with torch.inference_mode():
                    for group in _chunks(wins, per_pass):
                        crops = torch.stack([band[:, :, x1:x2] for (x1, x2) in group])
                        scores = _window_scores(model, crops, num_classes, divisor, views)
                        for k, (x1, x2) in enumerate(group):
                            acc[:, y1 - base:y2 - base, x1:x2] += scores[k]
                            cnt[y1 - base:y2 - base, x1:x2] += 1
                n_windows += len(wins)
                bar.update(1)
                if progress is not None:
                    progress(step=i + 1, steps=len(rows), frac=(i + 1) / len(rows), phase="raster",
                             message=f"{src_path.name}: band {i + 1}/{len(rows)}")
            flush_rows(H, final=True)
            bar.close()
    wall = time.perf_counter() - t0
    return {"path": str(dst_path), "height": H, "width": W, "windows": n_windows, "bands": len(rows),
            "wall_s": wall, "mpix_per_s": H * W / 1e6 / wall if wall > 0 else float("nan"),
            "accumulator_bytes": int(4 * (num_classes + 1) * th_eff * W)}


def main(argv: list[str] | None = None) -> int:
    """``python -m mapsage.infer.large --checkpoint REF --input big.tif --output pred.tif [--set eval.tile=...]``:
    predict a class-id GeoTIFF for a raster of any size with a workbench checkpoint (a file, a run id,
    ``<run id>/<file>`` or ``latest:<template>``), using the checkpoint's own eval/normalisation settings unless
    overridden with ``--set``."""
    import argparse
    import sys


    ap = argparse.ArgumentParser(prog="python -m mapsage.infer.large", description=main.__doc__)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bands", default="1,2,3", help="the RGB band indexes (1-based)")
    ap.add_argument("--value-scale", type=float, default=None, help="full-brightness value of non-8-bit bands")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override the checkpoint config (eval.tile=[1024,1024], eval.window_batch=8, ...)")
    args = ap.parse_args(argv)
    try:
        device = resolve_device(args.device)
        model, ckpt_cfg, resolved = load_checkpoint_model(args.checkpoint, key="--checkpoint")
        cfg = ckpt_cfg
        if args.set:
            data = to_dict(ckpt_cfg)
            apply_overrides(data, {}, args.set)
            cfg = config_from_dict(data)
        mean, std = get_normalization(cfg)
        model.to(device).eval()
        info = predict_raster(model, args.input, args.output, cfg.eval, cfg.dataset.num_classes, mean, std,
                              palette=cfg.dataset.palette, bands=[int(b) for b in args.bands.split(",")],
                              value_scale=args.value_scale, device=device)
    except (UserError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{info['path']}: {info['width']}x{info['height']} px, {info['windows']} windows in {info['wall_s']:.1f} s "
          f"({info['mpix_per_s']:.3f} Mpixel/s) with {resolved.path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
