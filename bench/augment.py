"""Training augmentation throughput: albumentations per tile (the CPU loader path) beside kornia batch-wise
(``augment.backend: kornia``), on real demo tiles, in one process.

    .venv/bin/python bench/augment.py [CONFIG] [--tiles 16] [--batch 8] [--rounds 3] [--threads 1] [--set k=v ...]

Both sides start from the decoded tiles in memory (``uint8`` image + mask; decoding is the same for both and not
timed) and end with a normalised ``float32 [B,3,h,w]`` batch and an ``int64 [B,h,w]`` mask batch at the crop size:

* albumentations: ``build_train_transform(cfg)`` per tile (scale, pad, crop, flips, rotation, colour jitter, ...),
  then to tensors, normalise and stack -- what one loader worker does per batch;
* kornia: the loader part (pad + crop of the window, per tile), to tensors, normalise, stack, then
  :class:`mapsage.data.gpu_augment.KorniaAugment` on the batch -- on the CPU, and on CUDA as well when there is a GPU
  (there the batch is moved to the device first and the time includes the copy and a synchronise).

Rounds alternate; medians are printed as images/s with the ratio kornia / albumentations. On the CPU the loader's
worker processes multiply albumentations' figure (``train.num_workers``); kornia on the GPU runs beside them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_CONFIG = ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml"


def _to_batch(pairs, mean, std):
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    images = torch.stack([(torch.from_numpy(np.ascontiguousarray(i)).permute(2, 0, 1).float() / 255.0 - m) / s
                          for i, _ in pairs])
    masks = torch.stack([torch.from_numpy(k.astype(np.int64)) for _, k in pairs])
    return images, masks


def albu_round(cfg, tiles, batch, mean, std) -> float:
    from mapsage.data.transforms import build_train_transform
    tf = build_train_transform(cfg, seed=0)
    n = 0
    t0 = time.perf_counter()
    for b in range(0, len(tiles) - batch + 1, batch):
        outs = [tf(image=i, mask=k) for i, k in tiles[b:b + batch]]
        x, y = _to_batch([(o["image"], o["mask"]) for o in outs], mean, std)
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def kornia_round(cfg, tiles, batch, mean, std, device: torch.device) -> float:
    from mapsage.data.gpu_augment import KorniaAugment, build_loader_transform
    tf = build_loader_transform(cfg, seed=0)
    aug = KorniaAugment(cfg, mean, std, seed=0)
    n = 0
    t0 = time.perf_counter()
    for b in range(0, len(tiles) - batch + 1, batch):
        outs = [tf(image=i, mask=k) for i, k in tiles[b:b + batch]]
        x, y = _to_batch([(o["image"], o["mask"]) for o in outs], mean, std)
        x, y = aug(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        n += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG))
    ap.add_argument("--tiles", type=int, default=16, help="training tiles decoded once and augmented each round")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch / OpenCV CPU threads (one loader worker's share)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import cv2
    cv2.setNumThreads(args.threads)

    from mapsage.config import load_config
    from mapsage.data import build_dataset
    cfg = load_config(args.config, args.overrides)
    kcfg = load_config(args.config, [*args.overrides, "augment.backend=kornia"])
    ds = build_dataset(cfg, cfg.dataset.train_split, train=False)
    tiles = [ds.load_pair(i) for i in range(min(args.tiles, len(ds)))]
    mean, std = ds.mean, ds.std
    a = cfg.augment
    print(f"config: {args.config}; {len(tiles)} tiles of {cfg.dataset.name} (e.g. {tiles[0][0].shape[1]}x"
          f"{tiles[0][0].shape[0]}), crop {list(a.crop_size)}, scale {list(a.scale_range)}, hflip {a.hflip}, rotate "
          f"{a.rotate_deg} deg p {a.rotate_p}, colour jitter p {a.color_jitter_p}, batch {args.batch}, "
          f"{args.threads} thread(s)", flush=True)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    kornia_round(kcfg, tiles, args.batch, mean, std, devices[-1])        # warm-up (kornia imports, CUDA context)
    albu, kor = [], {d.type: [] for d in devices}
    for r in range(args.rounds):
        albu.append(albu_round(cfg, tiles, args.batch, mean, std))
        line = f"round {r + 1}: albumentations (CPU, per tile) {albu[-1]:7.1f} images/s"
        for d in devices:
            kor[d.type].append(kornia_round(kcfg, tiles, args.batch, mean, std, d))
            line += f" | kornia ({d.type}, batch) {kor[d.type][-1]:7.1f} images/s"
        print(line, flush=True)
    a_med = statistics.median(albu)
    print(f"median: albumentations {a_med:.1f} images/s", flush=True)
    for d, v in kor.items():
        k_med = statistics.median(v)
        print(f"median: kornia on {d} {k_med:.1f} images/s  (kornia / albumentations = {k_med / a_med:.2f}x)",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
