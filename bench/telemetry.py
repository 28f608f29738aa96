"""What the training telemetry costs per step: pixel accuracy (``pixel_hits``) and the timing window beside one
training step of the same model and batch, in one process.

    .venv/bin/python bench/telemetry.py [CONFIG] [--batch 8] [--crop 256] [--steps 10] [--threads N]

A training step is forward, cross-entropy, backward and an AdamW step on random images
(the cost that matters is relative). The telemetry is what :class:`mapsage.train.Trainer` adds per micro-step:
``pixel_hits`` on the step's logits and labels, plus ``IterWindow.add``. Medians over ``--steps`` repetitions.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_CONFIG = ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from mapsage.config import load_config
    from mapsage.models import build_model
    from mapsage.train.telemetry import IterWindow, pixel_hits

    cfg = load_config(args.config, ["runtime.device=cpu"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    c = cfg.dataset.num_classes
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, args.crop, args.crop, generator=g).to(device)
    labels = torch.randint(0, c, (args.batch, args.crop, args.crop), generator=g).to(device)
    labels[:, :8] = 255

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    step_s, tele_s = [], []
    window = IterWindow()
    for i in range(args.steps + 1):
        sync()
        t0 = time.perf_counter()
        out = model(images)
        logits = out["seg"] if isinstance(out, dict) else out
        loss = F.cross_entropy(logits, labels, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.detach().item()
        sync()
        t1 = time.perf_counter()
        hits = pixel_hits(logits, labels, 255)
        host = torch.stack([loss.detach().float(), *hits]).tolist()
        window.add(t1 - t0, 0.0, host[-2], host[-1])
        sync()
        t2 = time.perf_counter()
        if i:                                  # the first step warms up
            step_s.append(t1 - t0)
            tele_s.append(t2 - t1)
    step, tele = statistics.median(step_s), statistics.median(tele_s)
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch} x {args.crop}², {c} classes, "
          f"{args.steps} steps (medians)")
    print(f"training step   {step * 1000:9.2f} ms")
    print(f"telemetry       {tele * 1000:9.2f} ms  ({tele / step * 100:.2f} % of the step)")
    print(f"acc_seg over the steps: {window.take().get('acc_seg', float('nan')):.4f} (random images, chance level)")


if __name__ == "__main__":
    main()
