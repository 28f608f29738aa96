"""``mapsage config show CONFIG [--set k=v ...] [--json]``: the resolved config and its run name."""
from __future__ import annotations

import json

import yaml

from mapsage.config import config_hash, load_config, run_name, to_dict


def register(sub) -> None:
    p = sub.add_parser("config", help="inspect configs")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION")
    csub.required = True
    show = csub.add_parser("show", help="print the resolved config and the run name")
    show.add_argument("config")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a key (dotted path), repeatable: --set train.epochs=2")
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    show.set_defaults(func=show_config)


def show_config(args) -> int:
    cfg = load_config(args.config, args.overrides)
    data = to_dict(cfg)
    info = {"run_name": run_name(cfg), "config_hash": config_hash(cfg)}
    if args.json:
        print(json.dumps({**info, "config": data}, indent=2))
    else:
        print(f"# run name:    {info['run_name']}")
        print(f"# config hash: {info['config_hash']}")
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")
    return 0
