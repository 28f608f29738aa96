"""``mapsage sweep start|show|list|promote|cancel``: hyperparameter sweeps (runners/sweep.py).

``start CONFIG`` validates the config's ``sweep:`` block and starts the driver detached (prints the sweep id);
``--wait`` drives it in this process with a progress bar over the trials."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("sweep", help="hyperparameter sweeps on Optuna (trials are ordinary runs)")
    ss = p.add_subparsers(dest="sweep_command", metavar="ACTION")
    ss.required = True
    s = ss.add_parser("start", help="start a sweep from a config with a sweep: block (prints its id)")
    s.add_argument("config")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, repeatable (e.g. --set sweep.n_trials=30)")
    s.add_argument("--wait", action="store_true", help="drive the sweep in this process until it ends")
    s.set_defaults(func=_start)
    s = ss.add_parser("show", help="a sweep's trials, best value and parameter importances")
    s.add_argument("sweep_id")
    s.set_defaults(func=_show)
    s = ss.add_parser("list", help="the workspace's sweeps")
    s.set_defaults(func=_list)
    s = ss.add_parser("promote", help="write a template with the best trial's values")
    s.add_argument("sweep_id")
    s.add_argument("--out", default=None, help="the template file (default configs/sweeps/<name>_best.yaml)")
    s.set_defaults(func=_promote)
    s = ss.add_parser("resume", help="start a new driver for a sweep whose driver died")
    s.add_argument("sweep_id")
    s.set_defaults(func=_resume)
    s = ss.add_parser("cancel", help="stop a sweep (its trials in flight are cancelled)")
    s.add_argument("sweep_id")
    s.set_defaults(func=_cancel)


def _start(args) -> int:
    from runners import sweep

    if not args.wait:
        sid = sweep.start(args.config, args.overrides, detach=True)
        print(sid, flush=True)
        return 0
    from tqdm import tqdm

    cfg, _ = sweep.prepare(args.config, args.overrides)
    bar = tqdm(total=int(cfg.sweep.n_trials), desc="trials", unit="trial", file=sys.stderr, dynamic_ncols=True)

    def progress(t: dict) -> None:
        bar.update(1)
        v = t.get("value")
        bar.write(f"trial {t['number']}: {t['state']} ({t['status']})" + (f" value {v:.4f}" if v is not None else "")
                  + f" {t['params']}", file=sys.stderr)

    try:
        sid = sweep.start(args.config, args.overrides, detach=False, progress=progress)
    finally:
        bar.close()
    print(sid, flush=True)
    _show_one(sid)
    return 0


def _show_one(sid: str) -> None:
    import pandas as pd

    from runners import sweep

    st = sweep.read_state(sid)
    print(f"sweep {sid}: {st['status']} ({st.get('message') or ''}); {st['sampler']} sampler, {st['pruner']} "
          f"pruner, {st['direction']} {st['metric']}, {len(st['trials'])}/{st['n_trials']} trials")
    df = sweep.trials_frame(sid)
    if df.empty:
        print("no trials yet")
        return
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 60):
        print(df.drop(columns=["run_id"]).to_string(index=False))
    try:
        top = sweep.best(sid)
        print(f"best: trial {top['number']} value {top['value']:.4f} run {top['run_id']} {top['params']}")
    except Exception as exc:  # noqa: BLE001 - no completed trial yet
        print(str(exc))
    imp = sweep.importances(sid)
    if imp:
        print("importances: " + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()))


def _show(args) -> int:
    _show_one(args.sweep_id)
    return 0


def _list(args) -> int:
    from runners import sweep

    rows = sweep.list_sweeps()
    if not rows:
        print("no sweeps yet (mapsage sweep start CONFIG)")
    for r in rows:
        print(f"{r['sweep_id']}  {r['status']:<9} {r['launched']}/{r['n_trials']} trials  {r['sampler']}/{r['pruner']}"
              f"  {r['direction']} {r['metric']}")
    return 0


def _promote(args) -> int:
    from runners import sweep

    print(sweep.promote(args.sweep_id, args.out))
    return 0


def _cancel(args) -> int:
    from runners import sweep

    print(sweep.cancel(args.sweep_id))
    return 0


def _resume(args) -> int:
    from runners import sweep

    print(f"driver pid {sweep.resume(args.sweep_id)}")
    return 0
