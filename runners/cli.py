"""The ``mapsage`` command line. One module per command group under ``runners/commands/``; each exposes
``register(subparsers)`` and sets ``func`` on its parsers. A command returns an exit code (or None for 0).

Errors that are the user's to fix (a bad config key, a missing file, a corrupt image) print one clear message and
exit 2, without a Python traceback; ``MAPSAGE_DEBUG=1`` shows the traceback."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from mapsage.errors import UserError

COMMAND_MODULES = ["config_cmd", "data_cmd", "score_cmd", "run_cmd", "runs_cmd", "report_cmd", "interop_cmd",
                   "export_cmd", "predict_cmd", "submit_cmd", "sweep_cmd", "annotate_cmd", "groups_cmd",
                   "reliability_cmd", "queue_cmd", "classify_cmd"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mapsage", description="MapSage Workbench command line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"runners.commands.{name}").register(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    return (UserError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except _user_errors() as exc:
        if os.environ.get("MAPSAGE_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (``mapsage config show ... | head``): not an error of ours; silence the
        # interpreter's flush of the closed stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
