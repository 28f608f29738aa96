"""Inference benchmark: batched sliding window against window-by-window, and peak memory on a 4096² input.

    .venv/bin/python bench/infer.py [--device cpu|cuda] [--threads 2] [--repeats 3] [--big 4096] [--skip-memory]

1. A real 1024×1024 LoveDA tile (tests/data/loveda), SegFormer mit_b0 (random init, 7 classes), sliding window
   512 / stride 384 (9 windows): the same inference code (mapsage.infer.infer_probs) run with
   ``eval.window_batch=1`` (one window per forward pass, mmsegmentation's loop), 4 (the default) and 9 (all
   windows in one pass), in the same process, after a warm-up; two interleaved rounds of ``--repeats`` runs,
   medians; outputs compared.
2. Peak memory for a ``--big``² input, each path in a fresh subprocess (peak RSS above the process's RSS after
   the model is built and warmed up, image loading included; on CUDA also torch's peak allocated memory):
   a. in-memory sliding window (``infer_probs`` on the whole image tensor),
   b. the bounded-memory raster path (``mapsage.infer.large.predict_raster``) on the same pixels as a GeoTIFF.
   The big image is the real tile mirrored out to the size (real pixels, no synthetic content).

Both parts run with the allocator settings every stage process uses (``mapsage.runtime.tune_allocator``,
``runtime.keep_freed_memory``); ``--glibc-defaults`` measures with glibc's defaults instead, where every forward
pass faults its large activations in again and batching gains little on a CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOVEDA_TILE = ROOT / "tests" / "data" / "loveda" / "Train" / "Rural" / "images_png"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def real_tile():
    import numpy as np
    from PIL import Image

    path = sorted(LOVEDA_TILE.glob("*.png"))[0]
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy(), path


def big_image(size: int):
    """The real tile mirrored (reflect) out to size × size."""
    import numpy as np

    rgb, _ = real_tile()
    reps = -(-size // rgb.shape[0])
    row = [rgb if i % 2 == 0 else rgb[:, ::-1] for i in range(reps)]
    strip = np.concatenate(row, axis=1)
    rows = [strip if i % 2 == 0 else strip[::-1] for i in range(reps)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:size, :size])


def build_model(device):
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(0)
    return smp.Segformer("mit_b0", encoder_weights=None, classes=7).eval().to(device)


def normalise(rgb, device):
    import torch

    x = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255.0)
    x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    return x.unsqueeze(0).to(device)


def eval_cfg(window_batch: int):
    from mapsage.config.schema import EvalCfg

    return EvalCfg(mode="slide", tile=[512, 512], stride=[384, 384], window_batch=window_batch)


def sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def bench_windows(device: str, repeats: int) -> dict:
    from mapsage.infer import infer_probs, slide_windows

    model = build_model(device)
    rgb, path = real_tile()
    x = normalise(rgb, device)
    n_win = len(slide_windows(1024, 1024, [512, 512], [384, 384]))
    batches = [1, 4, n_win]                       # window-by-window, the default eval.window_batch, all at once
    cfgs = {b: eval_cfg(b) for b in batches}
    probs = {b: infer_probs(model, x, cfgs[b], 7) for b in batches}      # warm-up (allocator, oneDNN primitives)
    times: dict[int, list[float]] = {b: [] for b in batches}
    for _ in range(2):  # two interleaved rounds, so a load spike on a shared machine hits every setting
        for b in batches:
            times[b] += timed(lambda: infer_probs(model, x, cfgs[b], 7), device, repeats)
    med = {b: statistics.median(times[b]) for b in batches}
    diff = max(float((probs[1] - probs[b]).abs().max()) for b in batches)
    agree = min(float((probs[1].argmax(1) == probs[b].argmax(1)).float().mean()) for b in batches)
    return {"image": str(path.relative_to(ROOT)), "windows": n_win, "median_s": med, "all_s": times,
            "speedup": {b: med[1] / med[b] for b in batches}, "max_abs_prob_diff": diff, "argmax_agreement": agree,
            "mpix_per_s": {b: 1024 * 1024 / 1e6 / med[b] for b in batches}}


# ------------------------------------------------------------------------------------------------ memory


def _status_mb(key: str) -> float:
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0: ``echo 5 > clear_refs``).
    (``getrusage().ru_maxrss`` is no use here: Linux carries it over from the parent across fork + exec.)"""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def memory_child(mode: str, size: int, device: str, tif: str) -> dict:
    """Run one path in this (fresh) process and report its peak memory above the post-set-up RSS."""
    import torch

    from mapsage.infer import infer_probs
    from mapsage.infer.large import predict_raster

    model = build_model(device)
    cfg = eval_cfg(4)
    with torch.inference_mode():  # warm the model up on one window so lazy initialisation is not counted
        model(torch.zeros(1, 3, 512, 512, device=device))
    reset = _reset_peak()
    base_rss = _status_mb("VmRSS")
    base_peak = _status_mb("VmHWM")
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated() / 2 ** 20
    t0 = time.perf_counter()
    if mode == "in_memory":  # the whole image in memory (as a decoded array and a tensor), as infer_probs needs
        x = normalise(big_image(size), "cpu")
        probs = infer_probs(model, x.to(device), cfg, 7)
        pred = probs.argmax(1)
        sync(device)
        del probs, pred
    else:
        out = tempfile.mkdtemp(prefix="bench-infer-")
        predict_raster(model, tif, os.path.join(out, "pred.tif"), cfg, 7, MEAN, STD, device=device,
                       show_bar=False)
    wall = time.perf_counter() - t0
    peak = _status_mb("VmHWM")
    res = {"mode": mode, "size": size, "wall_s": wall, "rss_after_setup_mb": base_rss,
           "peak_rss_mb": peak, "peak_above_setup_mb": peak - base_rss, "peak_before_run_mb": base_peak,
           "peak_reset": reset}
    if device.startswith("cuda"):
        res["cuda_peak_above_setup_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20 - base_cuda
    return res


def write_big_geotiff(size: int, path: Path) -> Path:
    import numpy as np
    import rasterio
    from affine import Affine

    rgb = big_image(size)
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=3, dtype="uint8",
                       crs="EPSG:32650", transform=Affine(0.3, 0.0, 600000.0, 0.0, -0.3, 3550000.0), tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate") as dst:
        dst.write(np.moveaxis(rgb, -1, 0))
    return path


def bench_memory(size: int, device: str, threads: int, glibc_defaults: bool = False) -> list[dict]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-infer-"))
    tif = write_big_geotiff(size, tmp / f"big_{size}.tif")
    results = []
    for mode in ("in_memory", "raster"):
        cmd = [sys.executable, __file__, "--child", mode, "--big", str(size), "--device", device,
               "--threads", str(threads), "--tif", str(tif)] + (["--glibc-defaults"] if glibc_defaults else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--big", type=int, nargs="+", default=[4096],
                    help="input side(s) of the memory comparison (e.g. 4096 8192)")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-windows", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--glibc-defaults", action="store_true",
                    help="leave the C allocator at glibc's defaults (runtime.keep_freed_memory: false)")
    ap.add_argument("--child", choices=["in_memory", "raster"], help=argparse.SUPPRESS)
    ap.add_argument("--tif", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    import torch

    from mapsage.runtime import tune_allocator
    allocator = tune_allocator(not args.glibc_defaults)
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(memory_child(args.child, args.big[0], args.device, args.tif)))
        return 0
    from mapsage.infer import device_name

    dev = device_name(args.device)
    print(f"device: {dev}; torch {torch.__version__}; threads {torch.get_num_threads()}; {allocator}")
    report = {"device": dev, "threads": torch.get_num_threads(), "allocator": allocator}
    if not args.skip_windows:
        report["windows"] = print_windows(bench_windows(args.device, args.repeats))
    if not args.skip_memory:
        print_memory(args, report)
    if args.json:
        print(json.dumps(report))
    return 0


def print_windows(w: dict) -> dict:
    print(f"1024x1024 real tile ({w['image']}), SegFormer mit_b0, windows 512 / stride 384 ({w['windows']} windows), "
          f"median of {len(w['all_s'][1])} runs each, interleaved")
    for b, t in w["median_s"].items():
        label = "window-by-window (window_batch=1)" if b == 1 else f"batched (window_batch={b})"
        print(f"  {label:34s} {t * 1000:8.1f} ms  {w['mpix_per_s'][b]:.3f} Mpixel/s  speed-up "
              f"{w['speedup'][b]:.2f}x")
    print(f"  outputs of all settings: max |dp| {w['max_abs_prob_diff']:.2e}, argmax agreement "
          f"{w['argmax_agreement'] * 100:.4f} %")
    return w


def print_memory(args, report: dict) -> None:
    report["memory"] = []
    for size in args.big:
        mem = bench_memory(size, args.device, args.threads, args.glibc_defaults)
        report["memory"] += mem
        print(f"{size}x{size} input (the real tile mirrored out), windows 512 / 384, window_batch 4:")
        _print_mem(mem)


def _print_mem(mem: list[dict]) -> None:
    for m in mem:
        extra = (f", CUDA peak +{m['cuda_peak_above_setup_mb']:.0f} MiB" if "cuda_peak_above_setup_mb" in m
                 else "")
        name = "in-memory slide (infer_probs)" if m["mode"] == "in_memory" else "raster path (predict_raster)"
        print(f"  {name:32s} peak RSS {m['peak_rss_mb']:7.0f} MiB  (+{m['peak_above_setup_mb']:6.0f} MiB "
              f"above set-up){extra}; {m['wall_s']:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
