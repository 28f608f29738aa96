"""``mapsage groups [list | compare A B]``: repeat/fold groups (``mapsage run --seeds N --folds K``) as mean ± sd
with a 95 % interval, ranked by the mean; ``compare`` pairs two groups' runs on (fold, seed)."""
from __future__ import annotations

from mapsage.metric_names import METRICS

_METRIC_HELP = f"the figure the groups are ranked by: {', '.join(METRICS)} (default miou)"


def register(sub) -> None:
    p = sub.add_parser("groups", help="repeat/fold groups: mean ± sd and 95 %% interval; paired comparison")
    gs = p.add_subparsers(dest="groups_command", metavar="ACTION")
    gs.required = True
    s = gs.add_parser("list", help="the groups, ranked by their mean")
    s.add_argument("--split", default="val")
    s.add_argument("--metric", default="miou", choices=tuple(METRICS), metavar="METRIC", help=_METRIC_HELP)
    s.set_defaults(func=_list)
    s = gs.add_parser("compare", help="B - A paired on (fold, seed): Student-t and paired bootstrap interval")
    s.add_argument("group_a")
    s.add_argument("group_b")
    s.add_argument("--split", default="val")
    s.add_argument("--metric", default="miou", choices=tuple(METRICS), metavar="METRIC", help=_METRIC_HELP)
    s.set_defaults(func=_compare)


def _list(args) -> int:
    import store
    from store.groups import group_board

    store.ingest_all(wait=False)
    board = group_board(split=args.split, metric=args.metric)
    if board.empty:
        print("no repeat/fold groups yet (mapsage run CONFIG --seeds N --folds K)")
        return 0
    for r in board.to_dict("records"):
        ci = f"[{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}]" if r["ci_low"] == r["ci_low"] else "–"
        sd = f" ± {100 * r['sd']:.2f}" if r["sd"] == r["sd"] else ""
        print(f"{r['rank']:>3}  {r['group']}  {r['runs']} run(s)  {args.metric} {100 * r['mean']:.2f}{sd}  "
              f"95 % {ci}" + (f"  ({r['pending']} pending)" if r["pending"] else ""))
    return 0


def _compare(args) -> int:
    import store
    from store.groups import paired_groups

    store.ingest_all(wait=False)
    out = paired_groups(args.group_a, args.group_b, split=args.split, metric=args.metric)
    print(out["pairs"].to_string(index=False))
    ci = f"[{100 * out['ci_low']:+.2f}, {100 * out['ci_high']:+.2f}]" if out["ci_low"] == out["ci_low"] else "–"
    print(f"B - A = {100 * out['mean_diff']:+.2f} points over {out['n']} pair(s), 95 % {ci}, B ahead in "
          f"{out['b_wins']}/{out['n']}" + ("; significant" if out["significant"] else "; not significant"))
    bs = out.get("bootstrap") or {}
    if bs:
        print(f"paired bootstrap over the {bs['n_units']} (fold, seed) pairs: 95 % [{100 * bs['ci_low']:+.2f}, "
              f"{100 * bs['ci_high']:+.2f}], p = {bs['p_value']:.3f} ({bs['n_boot']} resamples; "
              f"{'significant' if bs['significant'] else 'not significant'})"
              + (f"; only {bs['distinct']} distinct resamples of so few pairs: a coarse interval"
                 if bs["distinct"] < 100 else ""))
    return 0
