"""Peak memory and throughput of predicting a large 3-band GeoTIFF to a Cloud-Optimized GeoTIFF + GeoPackage
(the bounded-memory delivery path, ``mapsage.deliver.geo.predict_geotiff``), beside the in-memory path (the whole
image as one tensor through ``mapsage.infer.infer_probs`` sliding windows, argmax, one GeoTIFF write).

The source raster is real imagery: the three bundled LoveDA tiles repeated to ``--size`` × ``--size`` pixels,
written block by block as a georeferenced GeoTIFF (made-up UTM 33N grid, 0.3 m pixels). Each measurement runs in
a fresh child process; its peak resident memory is the child's ``ru_maxrss`` (``os.wait4``).

``--model segformer`` (default) is a random-init SegFormer-B0 (the real network's cost); ``--model tiny`` is a
two-layer convolution predicting at 1/4 resolution and upsampled (a segmentation network's output stride, so the
map has regions of realistic size); ``--model pointwise`` is a 1×1 convolution at full resolution (a noisy,
salt-and-pepper map: the worst case for polygons). The last two measure the pipeline itself (reading, windows,
accumulation, COG and polygon writing) when the network would make a CPU run of a 16384² raster take hours.

    python bench/deliver.py --size 16384 --model tiny --inmem-size 4096 --tile 1024 --stride 1024
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TILES = [ROOT / "tests/data/loveda/Train/Rural/images_png/0.png", ROOT / "tests/data/loveda/Train/Rural/images_png/1.png",
         ROOT / "tests/data/loveda/Val/Rural/images_png/2.png"]


def make_raster(path: Path, size: int, height: int | None = None) -> Path:
    import numpy as np
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    tiles = [np.moveaxis(np.asarray(Image.open(t).convert("RGB")), -1, 0) for t in TILES]
    height = size if height is None else height
    profile = {"driver": "GTiff", "height": height, "width": size, "count": 3, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": from_origin(500000.0, 5000000.0, 0.3, 0.3), "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "deflate", "bigtiff": "IF_SAFER"}
    with rasterio.open(path, "w", **profile) as dst:
        k = 0
        for y in range(0, height, 1024):
            for x in range(0, size, 1024):
                h, w = min(1024, height - y), min(1024, size - x)
                dst.write(tiles[k % 3][:, :h, :w], window=Window(x, y, w, h))
                k += 1
    return path


def _model(kind: str):
    import torch
    from torch import nn

    torch.manual_seed(0)
    if kind == "tiny":
        class Tiny(nn.Module):
            output_stride = 4

            def __init__(self):
                super().__init__()
                self.down = nn.Conv2d(3, 8, 4, stride=4)
                self.head = nn.Conv2d(8, 7, 3, padding=1)

            def forward(self, x):
                y = self.head(torch.relu(self.down(x)))
                return nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return Tiny().eval()
    if kind == "pointwise":
        class Pointwise(nn.Module):
            output_stride = 1

            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 7, 1)

            def forward(self, x):
                return self.conv(x)
        return Pointwise().eval()
    import segmentation_models_pytorch as smp
    return smp.Segformer("mit_b0", encoder_weights=None, classes=7).eval()


def _predictor(kind: str, tile: int = 512, stride: int = 384):
    from mapsage.config import load_config
    from mapsage.deliver.model_source import Predictor

    cfg = load_config(ROOT / "configs/stage1_baselines/demo_segformer_mit-b0_loveda-samples.yaml",
                      ["eval.mode=slide", f"eval.tile=[{tile},{tile}]", f"eval.stride=[{stride},{stride}]",
                       "eval.window_batch=4"])
    return Predictor(model=_model(kind), cfg=cfg, eval_cfg=cfg.eval, checkpoint={"run_id": "bench"},
                     variant="raw")


def worker(mode: str, src: str, out: str, kind: str, tile: str = "512", stride: str = "384") -> None:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    p = _predictor(kind, int(tile), int(stride))
    t0 = time.perf_counter()
    if mode == "delivery":
        from mapsage.deliver.geo import predict_geotiff
        phase_rss: dict[str, float] = {}

        def prog(**kw) -> None:     # the largest resident size seen at each phase's progress calls (GiB)
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
            ph = kw.get("phase") or "?"
            phase_rss[ph] = max(phase_rss.get(ph, 0.0), rss)

        res = predict_geotiff(p, src, out, stem="bench", show_bar=False, block_rows=512, progress=prog)
        info = {"phase_rss_gib": phase_rss, "polygons": res["polygons"]["polygons"], "predict_s": res["predict"]["wall_s"],
                "polygons_s": res["polygons"]["wall_s"], "joins": res["polygons"]["joins"],
                "max_open_parts": res["polygons"]["max_open_parts"]}
    else:
        import numpy as np
        import rasterio

        from mapsage.infer import infer_probs
        with rasterio.open(src) as s:
            rgb = s.read()
            profile = s.profile
        mean, std = p.normalization()
        x = torch.from_numpy(rgb).float().div_(255.0)
        x = ((x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)).unsqueeze(0)
        del rgb
        pred = infer_probs(p.model, x, p.eval_cfg, p.num_classes).argmax(dim=1)[0].to(torch.uint8).numpy()
        profile.update(count=1, dtype="uint8", compress="deflate")
        with rasterio.open(Path(out) / "inmem.tif", "w", **profile) as d:
            d.write(pred[None].astype(np.uint8))
        info = {}
    info["wall_s"] = time.perf_counter() - t0
    print(json.dumps(info))


def measure(mode: str, src: Path, out: Path, kind: str, tile: int = 512, stride: int = 384) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, __file__, "--worker", mode, str(src), str(out), kind, str(tile),
                             str(stride)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    if status != 0:
        return {"error": (stderr or stdout).strip().splitlines()[-1:] or [f"status {status}"],
                "peak_rss_gib": usage.ru_maxrss / 2 ** 20}
    info = json.loads(stdout.strip().splitlines()[-1])
    info["peak_rss_gib"] = usage.ru_maxrss / 2 ** 20      # ru_maxrss is KiB on Linux
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=16384, help="side of the delivery-path raster (pixels)")
    ap.add_argument("--height", type=int, default=0,
                    help="rows of the delivery-path raster (0: --size; the prediction's peak memory depends on the "
                         "width and the window, so a --size-wide strip measures it in a fraction of the time)")
    ap.add_argument("--inmem-size", type=int, default=4096,
                    help="side of the raster both paths run on for the throughput comparison (0: skip)")
    ap.add_argument("--model", choices=["segformer", "tiny", "pointwise"], default="segformer")
    ap.add_argument("--tile", type=int, default=512, help="sliding-window size (eval.tile)")
    ap.add_argument("--stride", type=int, default=384, help="sliding-window stride (eval.stride)")
    ap.add_argument("--worker", nargs=6, metavar=("MODE", "SRC", "OUT", "MODEL", "TILE", "STRIDE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    with tempfile.TemporaryDirectory(prefix="mapsage-bench-deliver-") as tmp:
        tmp = Path(tmp)
        print(f"model {args.model}; windows {args.tile}/{args.stride}; {os.cpu_count()} CPU threads; "
              f"peak RSS per fresh process")
        if args.inmem_size:
            n = args.inmem_size
            src = make_raster(tmp / f"src_{n}.tif", n)
            d = measure("delivery", src, tmp / "d_small", args.model, args.tile, args.stride)
            m = measure("inmemory", src, tmp / "m_small", args.model, args.tile, args.stride)
            mpix = n * n / 1e6
            print(f"{n}x{n} ({mpix:.1f} Mpixel):")
            for name, r in (("delivery COG+GPKG", d), ("in-memory", m)):
                if "error" in r:
                    print(f"  {name:18s} failed ({r['error']}), peak {r['peak_rss_gib']:.2f} GiB")
                else:
                    print(f"  {name:18s} {r['wall_s']:8.1f} s  {mpix / r['wall_s']:7.3f} Mpixel/s  peak "
                          f"{r['peak_rss_gib']:.2f} GiB" + (f"  ({r['polygons']} polygons; predict "
                                                            f"{r['predict_s']:.1f} s, polygons {r['polygons_s']:.1f} s)"
                                                            if "polygons" in r else ""))
            if "error" not in d and "error" not in m:
                print(f"  delivery / in-memory: time x{d['wall_s'] / m['wall_s']:.2f}, peak memory "
                      f"x{d['peak_rss_gib'] / m['peak_rss_gib']:.2f}")
            (tmp / f"src_{n}.tif").unlink()
        if args.size and args.size != args.inmem_size:
            n = args.size
            t0 = time.perf_counter()
            hgt = args.height or n
            src = make_raster(tmp / f"src_{n}.tif", n, hgt)
            print(f"{n}x{hgt} ({n * hgt / 1e6:.1f} Mpixel) source written in {time.perf_counter() - t0:.0f} s")
            d = measure("delivery", src, tmp / "d_big", args.model, args.tile, args.stride)
            if "error" in d:
                print(f"  delivery COG+GPKG failed ({d['error']}), peak {d['peak_rss_gib']:.2f} GiB")
            else:
                print(f"  delivery COG+GPKG {d['wall_s']:8.1f} s  {n * hgt / 1e6 / d['wall_s']:7.3f} Mpixel/s  peak "
                      f"{d['peak_rss_gib']:.2f} GiB (target < 2.5 GiB)  ({d['polygons']} polygons; predict "
                      f"{d['predict_s']:.1f} s, polygons {d['polygons_s']:.1f} s; {d['joins']} seam joins, "
                      f"at most {d['max_open_parts']} open parts)")
                print("  resident size by phase (GiB): " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                                  d["phase_rss_gib"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
