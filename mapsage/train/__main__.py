"""``python -m mapsage.train TARGET [--set key=value ...] [--resume CKPT]`` -- a training run without the runner.

TARGET is a run folder holding ``config.yaml`` (as the runner prepares it) or a config file (a new run folder is
made under the workspace). Works the same under ``torchrun --nproc_per_node N -m mapsage.train TARGET`` (ranks
from the environment; rank 0 writes events and checkpoints). SIGTERM/SIGINT request a clean stop (``last.pth`` is
saved). Rank 0 writes ``status`` records (running, then succeeded / failed / cancelled); the job runner
(``mapsage run``) has its own worker that does the same around :func:`mapsage.train.stage.run`.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from ..config import ConfigError, load_config, run_name, save_resolved
from ..errors import UserError
from ..events import EventWriter, NullEvents
from ..stage import StageContext
from ..workspace import runs_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mapsage.train", description=__doc__.split("\n")[0])
    parser.add_argument("target", help="a run folder with config.yaml, or a config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", default=None, help="checkpoint to resume from (default: none; 'last' = the "
                                                         "run folder's checkpoints/last.pth)")
    args = parser.parse_args(argv)

    from .stage import run

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    target = Path(args.target)
    try:
        if target.is_dir():
            cfg = load_config(target / "config.yaml", args.overrides)
            rdir = target
        else:
            cfg = load_config(target, args.overrides)
            stamp = os.environ.get("MAPSAGE_RUN_ID") or f"{run_name(cfg)}_{time.strftime('%Y%m%d-%H%M%S')}"
            rdir = runs_dir() / stamp
            if rank == 0:
                save_resolved(cfg, rdir)
    except (UserError, ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    events = EventWriter(rdir) if rank == 0 else NullEvents()
    resume = None
    if args.resume:
        resume = rdir / "checkpoints" / "last.pth" if args.resume == "last" else Path(args.resume)
    ctx = StageContext(cfg=cfg, run_id=rdir.name, run_dir=rdir, events=events, resume_from=resume, rank=rank,
                       world_size=world)

    def _stop(signum, frame):  # noqa: ARG001
        ctx.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    events.status("running", message=f"training {rdir.name} (world size {world})")
    try:
        summary = run(ctx)
    except (UserError, ConfigError) as exc:
        events.status("failed", message=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001
        events.status("failed", message=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        raise
    if ctx.should_stop() or summary.get("stopped") == "cancelled":
        events.status("cancelled", message="stop requested; last.pth saved")
    else:
        events.status("succeeded", message=f"best {cfg.train.save_best_by}: raw {summary['best'].get('raw')}, "
                                           f"ema {summary['best'].get('ema')}")
    if rank == 0:
        print(f"run folder: {rdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
