"""``mapsage run CONFIG [--set k=v ...] [--gpus N] [--wait]``: queue a job and print its run id.

With ``--wait`` it follows the run (a progress bar on stderr, its log records, its final status) and exits with
the job's status: 0 succeeded, 1 failed, 3 cancelled, 4 died."""
from __future__ import annotations

import sys

from mapsage.workspace import run_dir
from runners.groups import launch_group
from runners.health_gate import confirm_cli


def register(sub) -> None:
    p = sub.add_parser("run", help="launch a plan stage as a background job (prints the run id)")
    p.add_argument("config", help="a config file (a template under configs/, or any path)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key (dotted path), repeatable: --set train.epochs=2")
    p.add_argument("--gpus", type=int, default=None, metavar="N",
                   help="GPUs for this job (runtime.gpus); more than 1 runs under torchrun; 0 = a CPU slot")
    p.add_argument("--wait", action="store_true", help="follow the run until it ends; exit with its status")
    p.add_argument("--no-health-gate", dest="health_gate", action="store_false",
                   help="launch a training stage even though the dataset's last health run failed")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="repeat the config N times (train.seed + 0..N-1) as one group (mean ± sd on Runs)")
    p.add_argument("--folds", type=int, default=0, metavar="K",
                   help="k-fold cross-validation: one run per fold (whole groups, near-duplicates together, "
                        "stratified by class presence); with --seeds, every fold N times")
    p.set_defaults(func=run_command)


def _pct(v) -> str:
    """A 0..1 metric as percent points with two decimals ("-" for none)."""
    return f"{100.0 * float(v):.2f}" if isinstance(v, (int, float)) else "-"


def follow(run_id: str, out=None) -> str:
    """Follow a run with a tqdm bar on stderr; print its status changes and log records. Returns the final
    status."""
    from tqdm import tqdm

    from runners import jobs

    out = out or sys.stderr
    bar = tqdm(total=1000, desc="queued", unit="‰", file=out, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}")

    def on_record(r: dict) -> None:
        t = r.get("type")
        if t == "status":
            bar.set_description_str(r.get("status", "?"))
            msg = r.get("message")
            if r.get("status") not in ("failed", "died"):     # those end with report_end's one line
                bar.write(f"[{r.get('status')}] {msg}" if msg else f"[{r.get('status')}]", file=out)
            if r.get("status") == "succeeded":
                bar.n = bar.total
                bar.refresh()
        elif t == "heartbeat" and r.get("progress"):
            p = r["progress"]
            frac = p.get("frac")
            if frac is None and p.get("steps"):
                frac = (p.get("step") or 0) / p["steps"]
            if frac is None and p.get("epochs"):
                frac = (p.get("epoch") or 0) / p["epochs"]
            if frac is not None:
                bar.n = int(max(0.0, min(1.0, float(frac))) * bar.total)
            parts = []
            if p.get("message"):
                parts.append(str(p["message"]))          # the stage's own words (training: "epoch 1/2 step 4/60")
            elif p.get("epochs"):
                parts.append(f"epoch {int(p.get('epoch') or 0) + 1}/{p['epochs']}")   # progress epochs are 0-based
            bar.set_postfix_str(" ".join(parts), refresh=False)
            bar.refresh()
        elif t == "log":
            bar.write(f"  {r.get('level', 'info')}: {r.get('message')}", file=out)
        elif t == "metrics":
            s = r.get("summary") or {}
            epoch = f" epoch {r['epoch']}" if r.get("epoch") is not None else ""   # as stored (0-based)
            bar.write(f"  {r.get('split')}/{r.get('domain')}/{r.get('variant')}{epoch}: mIoU {_pct(s.get('miou'))} "
                      f"mAcc {_pct(s.get('macc'))} mBIoU {_pct(s.get('mbiou'))}", file=out)

    try:
        status = jobs.wait(run_id, on_record=on_record)
    finally:
        bar.close()
    _ingest_after(run_id)
    return status


def _ingest_after(run_id: str) -> None:
    """The worker writes its final status before its last ingest: take the run's remaining events into the store
    here, so that what ``--wait`` returns to (``mapsage runs show``, the app, a script reading the store) has the
    whole run, not the part the worker's periodic ingest had reached."""
    import store

    try:
        store.ingest_run(run_id, wait=True, timeout=60.0)
    except Exception as exc:  # noqa: BLE001 - the event file stays the truth; the next read ingests it
        print(f"[mapsage] store ingest of {run_id} skipped: {type(exc).__name__}: {exc}", file=sys.stderr)


def run_command(args) -> int:
    from runners import jobs

    overrides = list(args.overrides)
    deferred: list[str] = []      # the gate's warnings, said once the launch has passed its own checks
    if getattr(args, "health_gate", True):
        if not confirm_cli(args.config, overrides, deferred=deferred):
            return 2
    if getattr(args, "seeds", 1) > 1 or getattr(args, "folds", 0):
        group_id, run_ids = launch_group(args.config, overrides, seeds=args.seeds, folds=args.folds,
                                         gpus=args.gpus)
        print(f"group {group_id}: {len(run_ids)} runs", file=sys.stderr)
        print("\n".join(run_ids), flush=True)
        statuses = [follow(r) for r in run_ids] if args.wait else []
        for r, s in zip(run_ids, statuses):
            report_end(r, s)
        return max([jobs.exit_code(s) for s in statuses], default=0)
    run_id = jobs.launch(args.config, overrides, gpus=args.gpus)
    for line in deferred:
        print(line, file=sys.stderr)
    print(run_id, flush=True)
    if not args.wait:
        return 0
    status = follow(run_id)
    report_end(run_id, status)
    return jobs.exit_code(status)


def report_end(run_id: str, status: str) -> None:
    """One line for a failed or died run: the reason and where its log (with the traceback) is."""
    from runners import jobs, scheduler

    if status not in ("failed", "died"):
        return
    st = jobs.live_status(run_id)
    message = " ".join(str(st.get("message") or "no message").split())
    print(f"run {run_id} {status}: {message} (traceback and output: {run_dir(run_id) / scheduler.STDOUT_FILE})",
          file=sys.stderr)
