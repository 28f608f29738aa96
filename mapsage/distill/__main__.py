"""``python -m mapsage.distill make-teacher OUT.pth [--model NAME] [--set key=value ...] [--img-size N] [--seed S]``

Writes the weights of a randomly initialised timm ViT (a plain state dict, float16 by default) to use as
``distill.teacher.weights`` in demos and tests. A random teacher teaches nothing about the imagery: real use points
``distill.teacher.weights`` at DINOv3(-SAT) or DINOv2 weights. The printed ``model_kwargs`` must be set as
``distill.teacher.model_kwargs`` (and ``--img-size`` as ``distill.teacher.img_size``) to load the file.
"""
from __future__ import annotations

import argparse
import json
import sys

import yaml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mapsage.distill", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-teacher", help="write a random-init timm ViT teacher's weights")
    p.add_argument("out", help="output .pth file")
    p.add_argument("--model", default="vit_small_patch14_dinov2", help="timm model name")
    p.add_argument("--set", dest="kwargs", action="append", default=[], metavar="KEY=VALUE",
                   help="timm create_model keyword, repeatable (e.g. --set embed_dim=96 --set depth=4)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fp32", action="store_true", help="store float32 instead of float16")
    args = parser.parse_args(argv)

    import torch

    from .teacher import make_random_teacher

    kwargs = {}
    for item in args.kwargs:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --set expects KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        kwargs[key.strip()] = yaml.safe_load(value)
    try:
        facts = make_random_teacher(args.out, args.model, kwargs, img_size=args.img_size, seed=args.seed,
                                    dtype=torch.float32 if args.fp32 else torch.float16)
    except (TypeError, ValueError, RuntimeError) as exc:
        print(f"error: cannot build {args.model} with {kwargs}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(facts, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
