"""``mapsage predict RUN|CONFIG --on SPLIT|FOLDER|RASTER [options]``: predictions for unlabelled data.

RUN is a run id (or a unique prefix): its checkpoint with the inference settings it adopted (its eval windows,
the TTA and post-processing its A/B runs kept; an ensemble run's kept ensemble). CONFIG is a predict config
(``stage.checkpoint`` set). ``--on``: a split of the run's dataset (``test``: LoveDA's Test split has no masks and
needs none), a folder of images, or a raster (GeoTIFF in -> Cloud-Optimized GeoTIFF + polygons out).

The job runs in the background like every stage; by default the command follows it (progress, ETA, its log) and
prints where the predictions and the manifest are. Exit status as ``mapsage run --wait``."""
from __future__ import annotations

import sys

from mapsage.classify.predict import _group_runs, _runs_root
from mapsage.errors import UserError
from mapsage.workspace import run_dir
from runners.commands.classify_cmd import predict_to_submission
from runners.commands.run_cmd import follow
from runners.predict_spec import launch_predict


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict a split, an image folder or a GeoTIFF with a run's model",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("target", metavar="RUN|CONFIG", help="a run id (or unique prefix), or a predict config file")
    p.add_argument("--on", metavar="SPLIT|FOLDER|RASTER", default=None,
                   help="what to predict (default: the dataset's test split)")
    p.add_argument("--weights", choices=["auto", "raw", "ema"], default=None,
                   help="which weights of the run (default auto: the run's best checkpoint)")
    p.add_argument("--probabilities", choices=["off", "float16", "uint8"], default=None,
                   help="also write per-class probabilities (float16, or uint8 quantised)")
    p.add_argument("--no-color", action="store_true", help="no colour PNGs beside the class-id PNGs")
    p.add_argument("--no-adopt", action="store_true",
                   help="use the run's own eval settings, not the TTA/post-processing its A/B runs kept")
    p.add_argument("--bands", default=None, metavar="R,G,B", help="raster bands fed as RGB (1-based), e.g. 4,3,2")
    p.add_argument("--value-scale", type=float, default=None, metavar="V",
                   help="full-brightness value of non-8-bit raster bands (e.g. 4095, 10000)")
    p.add_argument("--no-polygons", action="store_true", help="rasters: no polygon file")
    p.add_argument("--geojson", action="store_true", help="rasters: polygons as GeoJSON instead of GeoPackage")
    p.add_argument("--simplify", type=float, default=None, metavar="M",
                   help="polygon simplification tolerance in map units (metres in a projected CRS)")
    p.add_argument("--min-area", action="append", default=[], metavar="CLASS=M2",
                   help="smallest polygon kept for a class, in m² (repeatable)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config override, e.g. --set eval.window_batch=8")
    p.add_argument("--gpus", type=int, default=None, metavar="N")
    p.add_argument("--no-wait", action="store_true", help="queue the job and return its run id")
    p.add_argument("--model", default=None, metavar="FILE",
                   help="an exported model (.onnx, or .pt with its .json sidecar, from 'mapsage export') instead of "
                        "the run's checkpoint: a deployment predicted and scored by the same code")
    p.set_defaults(func=predict_command)


def options_from_args(args) -> list[str]:
    opts: list[str] = []
    if getattr(args, "model", None):
        from pathlib import Path

        opts.append(f"stage.checkpoint={Path(args.model).expanduser().resolve()}")
    if args.weights:
        opts.append(f"predict.weights={args.weights}")
    if args.probabilities:
        opts.append(f"predict.probabilities={args.probabilities}")
    if args.no_color:
        opts.append("predict.color=false")
    if args.no_adopt:
        opts.append("predict.adopt=false")
    if args.bands:
        try:
            bands = [int(b) for b in args.bands.split(",")]
        except ValueError:
            raise UserError(f"--bands {args.bands!r}: give three 1-based band numbers, e.g. --bands 4,3,2") from None
        opts.append(f"predict.bands={bands}")
    if args.value_scale is not None:
        opts.append(f"predict.value_scale={args.value_scale}")
    if args.no_polygons:
        opts.append("predict.polygons=false")
    if args.geojson:
        opts.append("predict.polygon_format=geojson")
    if args.simplify is not None:
        opts.append(f"predict.simplify={args.simplify}")
    if args.min_area:
        areas = {}
        for item in args.min_area:
            name, sep, value = item.partition("=")
            try:
                areas[name.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep or not name.strip():
                raise UserError(f"--min-area {item!r}: write CLASS=SQUARE_METRES, e.g. --min-area building=20")
        opts.append("predict.min_area_m2={" + ", ".join(f"'{k}': {v}" for k, v in areas.items()) + "}")
    return opts + list(args.overrides)


def predict_command(args) -> int:
    from runners import jobs

    if _is_classification(args.target):   # image classification: a fused, validated submission.csv

        return predict_to_submission([args.target], args.on)
    run_id = launch_predict(args.target, args.on, options_from_args(args), gpus=args.gpus)
    print(run_id, flush=True)
    if args.no_wait:
        return 0
    status = follow(run_id)
    if status in ("failed", "died"):
        st = jobs.live_status(run_id)
        print(f"run {run_id} {status}: {st.get('message')}", file=sys.stderr)
    elif status == "succeeded":
        print(f"predictions and manifest: {run_dir(run_id) / 'predictions'}", flush=True)
    return jobs.exit_code(status)


def _is_classification(target: str) -> bool:
    """A classification run (its config says ``task: classification``) or repeat/fold group of them."""
    import yaml


    dirs = [_runs_root() / target] if (_runs_root() / target).is_dir() else _group_runs(target)
    for d in dirs:
        try:
            data = yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            return False
        return data.get("task") == "classification"
    return False
