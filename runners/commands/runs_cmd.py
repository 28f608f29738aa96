"""``mapsage runs list|show|logs|cancel|resume|wait|ingest|schedule``: watch and steer jobs.

``list`` and ``show`` take ``--json``; ``show`` includes the traceback of a failed run (and the tail of
``stdout.log`` for a failed or died one). A RUN_ID may be shortened to any unique prefix."""
from __future__ import annotations

import json
import math
import sys

from mapsage.errors import UserError
from mapsage.events import EVENTS_FILE, FINAL_STATUSES, read_events
from mapsage.progress import view as progress_view
from mapsage.registries import STAGE_KINDS
from mapsage.runids import check_run_id
from mapsage.workspace import run_dir, runs_dir
from runners.executors import placement

from .run_cmd import follow, report_end


def register(sub) -> None:
    p = sub.add_parser("runs", help="list, inspect, follow, cancel and resume runs")
    rs = p.add_subparsers(dest="runs_command", metavar="ACTION")
    rs.required = True

    ls = rs.add_parser("list", help="the runs, newest first")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--status", action="append", help="only this status (repeatable)")
    ls.add_argument("--kind", action="append", choices=STAGE_KINDS, metavar="KIND",
                    help=f"only this stage kind (repeatable): {', '.join(STAGE_KINDS)}")
    ls.add_argument("--limit", type=int, default=None)
    ls.set_defaults(func=cmd_list)

    sh = rs.add_parser("show", help="one run: status, traceback, progress, figures, config facts")
    sh.add_argument("run_id")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=cmd_show)

    lg = rs.add_parser("logs", help="the run's stdout.log (or its log events)")
    lg.add_argument("run_id")
    lg.add_argument("-n", "--lines", type=int, default=200)
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    lg.add_argument("--events", action="store_true", help="print the event file's log records instead")
    lg.set_defaults(func=cmd_logs)

    cn = rs.add_parser("cancel", help="SIGTERM the run's process group, SIGKILL after the grace period")
    cn.add_argument("run_id")
    cn.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                    help="seconds between SIGTERM and SIGKILL (default: the scheduler setting, 30)")
    cn.add_argument("--no-wait", action="store_true", help="return after the SIGTERM")
    cn.set_defaults(func=cmd_cancel)

    rm = rs.add_parser("resume", help="a new run continuing from the run's last checkpoint")
    rm.add_argument("run_id")
    rm.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    rm.add_argument("--gpus", type=int, default=None)
    rm.add_argument("--checkpoint", default=None, metavar="FILE",
                    help="continue from this checkpoint instead of the run's last one (e.g. its best.pth)")
    rm.add_argument("--wait", action="store_true")
    rm.set_defaults(func=cmd_resume)

    wt = rs.add_parser("wait", help="follow a run until it ends; exit with its status")
    wt.add_argument("run_id")
    wt.set_defaults(func=cmd_wait)

    ig = rs.add_parser("ingest", help="load new run events into the store")
    ig.add_argument("--rebuild", action="store_true", help="forget and re-read every event file (keeps verdicts)")
    ig.set_defaults(func=cmd_ingest)

    sc = rs.add_parser("schedule", help="check running jobs and start queued ones now")
    sc.set_defaults(func=cmd_schedule)

    from runners.commands.external_score import register_runs_score
    register_runs_score(rs)


# ---------------------------------------------------------------------------------------------------------------


def resolve_run_id(prefix: str) -> str:
    check_run_id(prefix)                        # one folder name: no '..', '/', absolute path or glob
    root = runs_dir()
    if run_dir(prefix).is_dir():
        return prefix
    matches = sorted(p.name for p in root.glob(f"{prefix}*") if p.is_dir()) if root.exists() else []
    for name in matches:
        run_dir(name)                           # refuses a symlink that leads out of the runs folder
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UserError(f"no run {prefix!r} under {root} (see `mapsage runs list`)")
    raise UserError(f"{prefix!r} matches {len(matches)} runs ({', '.join(matches[:5])}...); give more of the id")


def _plain(v):
    if v is None:
        return None
    if hasattr(v, "isoformat"):
        try:
            return v.isoformat()
        except ValueError:
            return None
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        try:
            return _plain(v.item())
        except (ValueError, AttributeError):
            pass
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    try:
        import pandas as pd

        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v


def _records(df) -> list[dict]:
    return [{k: _plain(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def _fmt(v, digits=4) -> str:
    v = _plain(v)
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _progress_of(r: dict) -> dict | None:
    """A run row's last progress mapping (``progress_json``), for :func:`mapsage.progress.view`."""
    raw = r.get("progress_json")
    if isinstance(raw, str) and raw:
        try:
            return json.loads(raw)
        except ValueError:
            pass
    frac = _plain(r.get("progress_frac"))
    return {"frac": frac} if frac is not None else None


def cmd_list(args) -> int:
    from runners import api
    from store.db import StoreError

    refreshed = api.refresh(min_interval=0.0)
    try:
        df = api.list_runs(status=args.status, kind=args.kind, limit=args.limit)
    except StoreError as exc:            # no usable store (a full disk before it was ever created): the folders
        df = _list_from_folders(str(exc), args.status, args.kind, args.limit)
    if refreshed.get("ingest_error") and not df.empty:
        df = _overlay_live_status(df, refreshed["ingest_error"])
    if args.json:
        print(json.dumps(_records(df), indent=1))
        return 0
    if df.empty:
        print("no runs yet: launch one with `mapsage run CONFIG`")
        return 0
    rows = []
    for r in df.to_dict(orient="records"):
        prog = progress_view(_progress_of(r), r["status"])["frac"]
        rows.append([r["run_id"], r["status"] or "-", f"{100 * prog:.0f}%" if prog is not None else "-",
                     r["kind"] or "-", r["split"] or "-", _fmt(r["best_val_miou"]), _fmt(r["best_val_mbiou"]),
                     _fmt(r["created_at"])[:19]])
    head = ["RUN_ID", "STATUS", "PROG", "KIND", "SPLIT", "BEST_mIoU", "BEST_mBIoU", "CREATED (UTC)"]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for line in [head, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())
    return 0


def _list_from_folders(why: str, status: str | None, kind: str | None, limit: int | None):
    """The runs as their event files tell them, when the store cannot be opened at all."""
    import pandas as pd

    from runners import jobs

    print(f"note: the store cannot be read ({' '.join(why.split())[:200]}); runs are listed from the run folders",
          file=sys.stderr)
    rows = []
    folders = sorted((p for p in runs_dir().iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime,
                     reverse=True) if runs_dir().is_dir() else []
    for folder in folders:
        try:
            live = jobs.live_status(folder.name)
        except (OSError, UserError):
            continue
        if (status and live["status"] != status) or (kind and live.get("kind") != kind):
            continue
        rows.append({"run_id": folder.name, "status": live["status"], "kind": live.get("kind"), "split": None,
                     "progress_json": json.dumps(live["progress"]) if live["progress"] else None,
                     "progress_frac": None, "best_val_miou": None, "best_val_mbiou": None,
                     "created_at": live.get("status_ts")})
    return pd.DataFrame(rows[:limit] if limit else rows)


def _overlay_live_status(df, why: str):
    """The store could not take new events (e.g. a full disk): statuses of unfinished rows from the event files."""
    from runners import jobs

    print(f"note: the store was not updated ({' '.join(why.split())[:200]}); statuses are read from the run "
          f"folders", file=sys.stderr)
    df = df.copy()
    for i, rid in df["run_id"].items():
        if df.at[i, "status"] in FINAL_STATUSES:
            continue
        try:
            df.at[i, "status"] = jobs.live_status(rid)["status"]
        except (OSError, UserError):
            pass
    return df


def _show_data(run_id: str) -> dict:
    import store
    from runners import api, jobs

    api.refresh(min_interval=0.0)
    live = jobs.live_status(run_id)
    from store.db import StoreError

    try:
        row = store.run(run_id) or {}
    except StoreError as exc:
        print(f"note: the store cannot be read ({' '.join(str(exc).split())[:200]}); shown from the run folder",
              file=sys.stderr)
        row = {}
    for k in ("config_json", "info_json", "progress_json"):
        row.pop(k, None)
    data = {k: _plain(v) for k, v in row.items()}
    # the event file is fresher than the store when an ingest was skipped
    data.update(status=live["status"], status_message=live["message"], traceback=live["traceback"],
                progress=progress_view(live["progress"], live["status"])["text"] or None,
                progress_detail=live["progress"], queue_position=live["queue_position"])
    data["run_id"] = run_id
    data["run_dir"] = str(jobs._require_run(run_id))
    data["checkpoint"] = str(jobs.find_checkpoint(run_id) or "") or None

    data.update(placement(run_id))          # executor; for a cluster job its SLURM job id, state and nodes
    if live.get("status") in ("failed", "died"):
        data["log_tail"] = jobs.log_tail(run_id, 30)
    try:
        evals = store.metrics(run_id)
    except StoreError:
        import pandas as pd

        evals = pd.DataFrame()
    data["evaluations"] = _records(evals[["eval_key", "split", "domain", "variant", "epoch", "miou", "mbiou",
                                          "macc", "mf1"]].tail(20)) if not evals.empty else []
    return data


def cmd_show(args) -> int:
    run_id = resolve_run_id(args.run_id)
    data = _show_data(run_id)
    if args.json:
        print(json.dumps(data, indent=1, default=str))
        return 0
    cfg = data.pop("config", None)
    order = ["run_id", "name", "status", "status_message", "kind", "plan_stage", "title", "dataset", "split",
             "progress", "best_val_miou", "best_val_mbiou", "best_epoch", "best_variant", "fps", "created_at",
             "started_at", "ended_at", "executor", "slurm_job_id", "slurm_state", "slurm_partition", "slurm_nodes",
             "slurm_reason", "slurm_restarts", "host", "pid", "gpus", "parent_run", "parent_relation", "resume_from",
             "checkpoint", "config_hash", "code_commit", "backbone", "pretrain", "loss", "aug", "lr_schedule", "size",
             "tta", "post", "run_dir"]
    for k in order:
        if data.get(k) is not None:
            print(f"{k:>16}: {data[k]}")
    if data.get("evaluations"):
        print("     evaluations:")
        for e in data["evaluations"]:
            print(f"                  {e['eval_key']:<28} mIoU {_fmt(e['miou'])}  mBIoU {_fmt(e['mbiou'])}")
    if data.get("traceback"):
        print("\ntraceback:\n" + data["traceback"].rstrip())
    if data.get("log_tail"):
        print("\nstdout.log (tail):\n" + data["log_tail"].rstrip())
    if cfg is None and data.get("status") is None:
        return 1
    return 0


def cmd_logs(args) -> int:
    import time

    from runners import jobs, scheduler

    run_id = resolve_run_id(args.run_id)
    if args.events:
        records, _ = read_events(run_dir(run_id) / EVENTS_FILE)
        for r in records:
            if r.get("type") in ("log", "status"):
                what = r.get("message") if r["type"] == "log" else f"[{r.get('status')}] {r.get('message') or ''}"
                print(f"{time.strftime('%H:%M:%S', time.localtime(r.get('ts', 0)))} {what}")
        return 0
    print(jobs.log_tail(run_id, args.lines))
    if args.follow:
        path = jobs._require_run(run_id) / scheduler.STDOUT_FILE
        pos = path.stat().st_size if path.exists() else 0
        while True:
            if path.exists() and path.stat().st_size > pos:
                with open(path, "rb") as fh:
                    fh.seek(pos)
                    chunk = fh.read()
                    pos += len(chunk)
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()
            if jobs.live_status(run_id)["final"]:
                break
            scheduler.schedule()
            time.sleep(0.5)
    return 0


def cmd_cancel(args) -> int:
    from runners import jobs

    run_id = resolve_run_id(args.run_id)
    status = jobs.cancel(run_id, grace_s=args.grace, wait_for_end=not args.no_wait)
    print(f"{run_id}: {status}")
    return 0


def cmd_resume(args) -> int:
    from runners import jobs


    run_id = resolve_run_id(args.run_id)
    new_id = jobs.resume(run_id, args.overrides, gpus=args.gpus, checkpoint=args.checkpoint)
    print(new_id, flush=True)
    if args.wait:
        status = follow(new_id)
        report_end(new_id, status)
        return jobs.exit_code(status)
    return 0


def cmd_wait(args) -> int:
    from runners import jobs


    run_id = resolve_run_id(args.run_id)
    status = follow(run_id)
    report_end(run_id, status)
    return jobs.exit_code(status)


def cmd_ingest(args) -> int:
    import store

    report = store.rebuild() if args.rebuild else store.ingest_all()
    print(f"ingested {report.events} events from {report.runs_changed} of {report.runs_seen} runs in "
          f"{report.seconds:.2f} s ({report.events_per_s:,.0f} events/s)"
          + (f"; re-read from the start: {', '.join(report.resets)}" if report.resets else "")
          + (f"; errors: {report.errors}" if report.errors else ""))
    return 0


def cmd_schedule(args) -> int:
    from runners import scheduler

    result = scheduler.schedule()
    for rid in result["started"]:
        print(f"started {rid}")
    for rid, status in result["ended"]:
        print(f"ended   {rid}: {status}")
    return 0
