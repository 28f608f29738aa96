"""``mapsage export RUN [--format onnx|torchscript] [--precision fp32|fp16|int8] [--wait]``: queue an ``export`` job.

``RUN`` is a run id (its best checkpoint, raw or EMA as the evaluate stage chooses), ``<run id>/<file>``, a
checkpoint file or ``latest:<template>``. A run id's own config (dataset, classes, inference window) drives the
export; other references use ``--config`` (default: the demo export template). ``--format`` and ``--precision``
repeat (every combination is built, TorchScript INT8 excepted); ``--target onnx:int8`` names one directly.
The job writes the files and sidecars under ``workspace/runs/<export run>/export/`` and one ``ab`` row per
variant (parity, speed, keep/drop)."""
from __future__ import annotations

import json
from pathlib import Path

from mapsage.errors import UserError
from mapsage.workspace import PROJECT_ROOT, run_dir

from .run_cmd import follow

DEFAULT_TEMPLATE = PROJECT_ROOT / "configs" / "stage4_refine_ensemble" / "export_demo_segformer_mit-b0_dubai.yaml"


def register(sub) -> None:
    p = sub.add_parser("export", help="export a run's model to ONNX / TorchScript (FP32, FP16, INT8) and measure "
                                      "parity and speed against PyTorch")
    p.add_argument("run", help="a run id, <run id>/<checkpoint file>, a checkpoint file or latest:<template>")
    p.add_argument("--format", dest="formats", action="append", choices=["onnx", "torchscript"], default=None,
                   help="onnx (default) or torchscript; repeatable")
    p.add_argument("--precision", dest="precisions", action="append", choices=["fp32", "fp16", "int8"],
                   default=None, help="fp32 (default), fp16 or int8 (ONNX only); repeatable")
    p.add_argument("--target", dest="targets", action="append", default=[], metavar="FORMAT:PRECISION",
                   help="one export directly, e.g. onnx:int8; repeatable (adds to --format/--precision)")
    p.add_argument("--config", default=None, help="config for a checkpoint that is not a run id (default: "
                                                   "configs/stage4_refine_ensemble/export_demo_segformer_mit-b0_dubai.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set export.calib_tiles=32 --set export.threshold=-1.0")
    p.add_argument("--gpus", type=int, default=None, metavar="N", help="GPUs for the job (0 = a CPU slot)")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends; exit with its status")
    p.set_defaults(func=export_command)


def targets_of(formats, precisions, extra) -> list[str]:
    """The ``export.targets`` list from the command's options (order kept, duplicates dropped)."""

    out: list[str] = []
    if formats or precisions or not extra:
        fmts = formats or ["onnx"]
        precs = precisions or ["fp32"]
        combos = [f"{f}:{p}" for f in fmts for p in precs]
        usable = [c for c in combos if c != "torchscript:int8"]
        if not usable:
            raise UserError("--format torchscript --precision int8: INT8 is built with onnxruntime's quantisation; "
                            "use --format onnx --precision int8")
        out += usable
    for t in extra:
        fmt, _, prec = t.partition(":")
        if fmt not in ("onnx", "torchscript") or prec not in ("fp32", "fp16", "int8"):
            raise UserError(f"--target {t!r}: write FORMAT:PRECISION, e.g. onnx:int8 or torchscript:fp32")
        out.append(t)
    return list(dict.fromkeys(out))


def export_overrides(run: str, targets: list[str]) -> list[str]:
    return ["stage.kind=export", "stage.plan_stage=4", f"stage.checkpoint={run}", "stage.name=null",
            "stage.title=" + json.dumps(f"Export {run} as {' '.join(targets)}"),
            "export.targets=[" + ", ".join(targets) + "]"]


def config_for(run: str, config: str | None) -> Path:
    """The run's own config.yaml for a run id (or ``<run id>/<file>``), else ``config`` or the demo template."""

    if config:
        return Path(config)
    head = run.split("/", 1)[0]
    if head and not run.startswith("latest:") and not Path(run).is_absolute():
        folder = run_dir(head)
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    return DEFAULT_TEMPLATE


def launch_export(run: str, targets: list[str], config: str | None = None, overrides=(), gpus=None) -> str:
    """Queue an export job of ``run`` (see module doc) for ``targets`` (``"onnx:int8"`` ...); returns its run id.
    The app's Export action and the command both call this."""
    from runners import jobs

    cfg_path = config_for(run, config)
    return jobs.launch(str(cfg_path), export_overrides(run, list(targets)) + list(overrides), gpus=gpus)


def export_command(args) -> int:
    from runners import jobs

    targets = targets_of(args.formats, args.precisions, args.targets)
    run_id = launch_export(args.run, targets, args.config, args.overrides, args.gpus)
    print(run_id, flush=True)
    if not args.wait:
        return 0
    import sys


    status = follow(run_id)
    if status in ("failed", "died"):
        st = jobs.live_status(run_id)
        print(f"run {run_id} {status}: {st.get('message')}", file=sys.stderr)
    return jobs.exit_code(status)
