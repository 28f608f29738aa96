"""``mapsage runs score RUN --split test --value 52.4 --source codalab [--metric miou] [--note ...]
[--submission FILE.zip]``: record a benchmark's score of a run (points or a fraction), and ``mapsage runs scores
[RUN]``: list them with the val-test gap. A ``predict`` run's score is recorded on the run whose model it used."""
from __future__ import annotations

import json

from mapsage.metric_names import HEADLINE
from mapsage.workspace import run_dir
from runners.commands.runs_cmd import resolve_run_id


def register_runs_score(rs) -> None:
    sc = rs.add_parser("score", help="record an external (benchmark) score of a run, e.g. CodaLab's test mIoU")
    sc.add_argument("run_id")
    sc.add_argument("--split", default="test", help="the split the benchmark scored (default test)")
    sc.add_argument("--value", type=float, required=True, help="the score: points (52.4) or a fraction (0.524)")
    sc.add_argument("--source", required=True, help="where it comes from (codalab, a paper, ...)")
    sc.add_argument("--metric", default="miou", choices=HEADLINE, metavar="METRIC",
                    help=f"the benchmark's figure: {', '.join(HEADLINE)} (default miou)")
    sc.add_argument("--submission", default=None, metavar="ZIP", help="the submitted file, for the record")
    sc.add_argument("--note", default="", help="free text")
    sc.set_defaults(func=cmd_score)
    ls = rs.add_parser("scores", help="recorded external scores with the val-test gap")
    ls.add_argument("run_id", nargs="?", default=None)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_scores)


def _model_run(rid: str) -> str:
    """The run whose model a predict run used (from its manifest or run_info), else ``rid`` itself."""

    m = run_dir(rid) / "predictions" / "manifest.json"
    if m.is_file():
        try:
            return (json.loads(m.read_text(encoding="utf-8")).get("identity") or {}).get("run") or rid
        except (OSError, ValueError):
            return rid
    return rid


def cmd_score(args) -> int:
    import store

    rid = resolve_run_id(args.run_id)
    target = _model_run(rid)
    sid = store.add_external_score(target, args.split, args.value, args.source, metric=args.metric,
                                   note=args.note if target == rid else (args.note + f" (predictions: {rid})").strip(),
                                   submission=args.submission)
    store.ingest_all(wait=False)
    gaps = store.val_test_gaps(target, metric=args.metric)
    row = gaps[gaps["split"] == args.split]
    text = f"recorded {args.metric} {args.split} = {100 * store.scores.as_fraction(args.value):.2f} ({args.source}) " \
           f"for {target} [#{sid}]"
    if not row.empty and row.iloc[0]["val_value"] == row.iloc[0]["val_value"] and row.iloc[0]["val_value"] is not None:
        r = row.iloc[0]
        text += f"; val {100 * r['val_value']:.2f} -> {args.split} {100 * r['external_value']:.2f}: gap " \
                f"{100 * r['gap']:+.2f} points"
    print(text)
    return 0


def cmd_scores(args) -> int:
    import store

    rid = resolve_run_id(args.run_id) if args.run_id else None
    df = store.val_test_gaps(rid)
    if args.json:
        print(df.to_json(orient="records"))
        return 0
    if df.empty:
        print("no external scores recorded (mapsage runs score RUN --split test --value 52.4 --source codalab)")
        return 0
    for r in df.itertuples():
        val = f"{100 * r.val_value:.2f}" if r.val_value == r.val_value and r.val_value is not None else "-"
        gap = f"{100 * r.gap:+.2f}" if r.gap == r.gap and r.gap is not None else "-"
        print(f"{r.run_id}  {r.split} {r.metric} {100 * r.external_value:.2f} ({r.source})  val {val}  gap {gap}")
    return 0
