"""``mapsage data inspect CONFIG [--split S] [--set k=v ...] [--json] [--verify-images]``.

Scans the masks of one split (or of every split the config names) and prints sample counts, per-class pixel
counts and shares, ignored pixels by cause (which colour / raw value), colours or values the config does not name,
and problems (unreadable files, image/mask size mismatches). A progress bar runs on stderr while scanning.

``mapsage data split CONFIG [--set k=v ...] [--out DIR]`` prints (or writes as ``split.json``) the split
assignment.

Exit status: 0 when the scan found no problem, 1 when it found some (they are all listed), 2 on a user error
(bad config, missing dataset folder).
"""
from __future__ import annotations

import json

from mapsage.config import load_config


def register(sub) -> None:
    p = sub.add_parser("data", help="inspect datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True

    ins = dsub.add_parser("inspect", help="per-split sample counts, class pixel counts, ignored and unknown pixels")
    ins.add_argument("config")
    ins.add_argument("--split", action="append", default=[], metavar="S",
                     help="a split to scan (repeatable); default: every split the config names")
    ins.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key (dotted path), repeatable: --set dataset.root=/data/LoveDA")
    ins.add_argument("--json", action="store_true", help="print the report as JSON")
    ins.add_argument("--verify-images", action="store_true",
                     help="decode every image fully (finds truncated files; slower). Default: headers only")
    ins.add_argument("--workers", type=int, default=None, help="decoding threads (default: up to 4)")
    ins.add_argument("--no-progress", action="store_true", help="no progress bar")
    ins.set_defaults(func=inspect_cmd)

    spl = dsub.add_parser("split", help="show or save the split assignment (split.json)")
    spl.add_argument("config")
    spl.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    spl.add_argument("--out", default=None, metavar="DIR", help="write DIR/split.json instead of printing")
    spl.set_defaults(func=split_cmd)


def inspect_cmd(args) -> int:
    from mapsage.data import format_report, inspect_config

    cfg = load_config(args.config, args.overrides)
    report = inspect_config(cfg, splits=args.split or None, verify_images=args.verify_images,
                            progress=not args.no_progress, workers=args.workers)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0 if report["ok"] else 1


def split_cmd(args) -> int:
    from mapsage.data import save_split, split_table

    cfg = load_config(args.config, args.overrides)
    if args.out:
        path = save_split(cfg.dataset, args.out)
        print(path)
        return 0
    table = split_table(cfg.dataset)
    summary = {k: table[k] for k in ("dataset", "method", "seed", "ratios", "assign", "counts", "groups",
                                     "groups_in_several_splits")}
    print(json.dumps(summary, indent=2))
    return 0
