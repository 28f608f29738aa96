"""Exported models against PyTorch eager, from one run: ΔmIoU / ΔBoundary IoU / argmax agreement on validation tiles
and CPU images/s beside PyTorch eager in the same process (same thread count), as ratios.

    .venv/bin/python bench/export.py                                   # the demo baseline's latest run
    .venv/bin/python bench/export.py --checkpoint RUN_ID --tiles 18 --threads 2 --targets onnx:fp32 onnx:int8

The checkpoint is any ``stage.checkpoint`` reference (run id, file, ``latest:<template>``); the config gives the
dataset, validation split and inference window (default: the demo baseline template). The same code as the
``export`` stage does the work (``mapsage.export.build.export_targets``, ``mapsage.export.parity``)."""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="latest:demo_segformer_mit-b0_dubai")
    ap.add_argument("--config", default=str(ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--targets", nargs="+", default=["onnx:fp32", "onnx:int8"])
    ap.add_argument("--tiles", type=int, default=None, help="validation tiles for parity (default: all)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch and onnxruntime alike")
    ap.add_argument("--size", type=int, default=512, help="speed input: a real crop of size x size")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calib-tiles", type=int, default=16)
    args = ap.parse_args(argv)

    import torch

    from mapsage.config import load_config
    from mapsage.config.schema import TTACfg
    from mapsage.data import build_dataset
    from mapsage.export import load_exported
    from mapsage.export.build import export_targets
    from mapsage.export.core import DeployGraph, example_input
    from mapsage.export.parity import parity_pass, speed_compare
    from mapsage.infer.checkpoints import load_checkpoint_model

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides + [f"export.calib_tiles={args.calib_tiles}"])
    model, ckpt_cfg, resolved = load_checkpoint_model(args.checkpoint)
    model.eval()
    ds = build_dataset(cfg, cfg.eval.split, train=False)
    print(f"checkpoint {resolved.path} ({resolved.weights} weights, run {resolved.run_id}); "
          f"{cfg.eval.split}: {len(ds)} tiles; torch {torch.__version__}, {args.threads} threads", flush=True)
    mult = int(getattr(model, "output_stride", 32))
    example = example_input(ds[0]["image"], (args.size, args.size), mult)
    out = Path(tempfile.mkdtemp(prefix="bench_export_"))
    t0 = time.perf_counter()
    files = export_targets(model, ckpt_cfg or cfg, out, args.targets, cfg.export,
                           source={"run_id": resolved.run_id, "checkpoint": str(resolved.path)}, example=example,
                           log=lambda s: print("  " + s, flush=True))
    print(f"exported {len(files)} file(s) in {time.perf_counter() - t0:.1f} s", flush=True)
    exported = {f.name: load_exported(f.path, threads=args.threads) for f in files}
    eval_cfg = copy.deepcopy(cfg.eval)
    eval_cfg.tta = TTACfg()
    par = parity_pass({"pytorch": model, **exported}, ds, cfg, eval_cfg=eval_cfg, reference="pytorch",
                      max_tiles=args.tiles, split=cfg.eval.split)
    speed = speed_compare(DeployGraph(model), exported,
                          example_input(ds[0]["image"], (args.size, args.size), mult, batch=args.batch),
                          threads=args.threads, repeats=args.repeats, gpu=False)
    base = par.outcomes["pytorch"].result
    cpu = speed["cpu"]["engines"]
    n = par.outcomes["pytorch"].n_images
    print(f"\nparity on {n} {cfg.eval.split} tiles ({cfg.eval.mode} {list(cfg.eval.tile)}/{list(cfg.eval.stride)}); "
          f"PyTorch mIoU {100 * base.miou:.2f}, Boundary IoU {100 * base.mbiou:.2f}")
    print(f"CPU speed: {speed['cpu']['device']}, {args.threads} threads, input {speed['input']}, median of "
          f"{args.repeats}; PyTorch eager {cpu['pytorch']['images_per_s']:.3f} images/s")
    print(f"{'variant':<18}{'ΔmIoU pts':>10}{'ΔbIoU pts':>10}{'argmax %':>10}{'max|Δlogit|':>13}{'MB':>8}"
          f"{'img/s':>9}{'× eager':>9}")
    for f in files:
        r = par.outcomes[f.name].result
        p = par.parity[f.name]
        c = cpu.get(f.name, {})
        print(f"{f.name:<18}{100 * (r.miou - base.miou):>+10.3f}{100 * (r.mbiou - base.mbiou):>+10.3f}"
              f"{100 * p.agreement:>10.3f}{p.max_abs_logit:>13.3g}{f.bytes / 1e6:>8.2f}"
              f"{c.get('images_per_s', float('nan')):>9.3f}{c.get('speedup_vs_pytorch', float('nan')):>9.2f}")
    # sliding-window throughput over the scored tiles (the deployment's real workload), same process
    po = par.outcomes["pytorch"]
    print(f"\nfull tiles through the sliding window ({po.timed_images} timed tiles): PyTorch "
          f"{po.images_per_s:.3f} images/s; " + "; ".join(
              f"{f.name} {par.outcomes[f.name].images_per_s:.3f} ({par.outcomes[f.name].images_per_s / po.images_per_s:.2f}×)"
              for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
