"""``mapsage queue RUN [--by SCORE] [--variant V] [--unreviewed] [--top N] [--csv PATH]``: the run's tiles in the
order a reviewer should open them (not yet reviewed first, then the most uncertain: mean entropy, top-2 margin,
low-margin share, disagreement between the run's mask variants, or the variants' mutual information)."""
from __future__ import annotations

from mapsage.analysis.uncertainty import SCORES


def register(sub) -> None:
    p = sub.add_parser("queue", help="rank a run's tiles for review by model uncertainty; --csv exports the queue")
    p.add_argument("run_id")
    p.add_argument("--by", choices=list(SCORES), default=None,
                   help="score to rank by (default: entropy where the run saved probabilities, else disagreement)")
    p.add_argument("--variant", default=None, help="the variant whose probabilities are scored (default: the one "
                                                   "covering most tiles)")
    p.add_argument("--unreviewed", action="store_true", help="leave out tiles with a verdict or a correction")
    p.add_argument("--top", type=int, default=20, help="rows printed (0: all); the CSV always holds every row")
    p.add_argument("--csv", default=None, metavar="PATH", help="write the whole queue as CSV")
    p.set_defaults(func=_queue)


def _queue(args) -> int:
    import sys

    from tqdm import tqdm

    import store
    from runners import review_queue as rq

    store.ingest_all(wait=False)
    bar = tqdm(desc="score tiles", unit="tile", file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        q, info = rq.queue(args.run_id, by=args.by, variant=args.variant, include_reviewed=not args.unreviewed,
                           progress=progress)
    finally:
        bar.close()
    if args.csv:
        path = rq.write_csv(q, args.csv)
        print(f"wrote {len(q)} row(s) to {path}", file=sys.stderr)
    by = info["by"]
    print(f"review queue of {args.run_id}: {len(q)} tile(s), ranked by {by}"
          + (f" of `{info['variant']}`" if by != "disagreement" and info.get("variant") else "")
          + (f"; {int(q['reviewed'].sum())} already reviewed (last)" if q["reviewed"].any() else ""))
    shown = q if args.top == 0 else q.head(args.top)
    cols = ["rank", "tile", *[s for s in info["available"]], "reviewed"]
    print(shown[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    return 0
