"""``mapsage export-runs`` and ``mapsage import-runs``: runs to MLflow / TensorBoard, and mmsegmentation work
directories / TensorBoard logs into the workbench.

``mapsage export-runs RUN... --to mlflow [--tracking-uri URI] [--experiment NAME]``: one MLflow run per run, with
the resolved config as params, metrics per step and per epoch (mmseg names: ``loss``, ``decode.loss_ce``,
``decode.acc_seg``, ``lr``, ``time``, ``data_time``, ``memory``; ``mIoU``, ``IoU.<class>`` ... in percent) and the
config, confusion matrix, per-class table and HTML report as artifacts. Default store: a SQLite database in
``$MAPSAGE_WORKSPACE/mlflow`` (or ``$MLFLOW_TRACKING_URI``).

``mapsage export-runs RUN... --to tensorboard DIR``: one event folder per run under DIR (``tensorboard --logdir
DIR`` shows them side by side with a team's mmseg runs).

``mapsage import-runs PATH [--dataset NAME] [--split val]``: every mmseg 1.x launch (``vis_data/scalars.json``),
mmseg 0.x ``*.log.json`` and TensorBoard event folder under PATH becomes a run folder marked as imported; the store
ingests it and it ranks beside native runs of the same dataset and split.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from mapsage.errors import UserError
from mapsage.interop.bundle import RunBundle, export_points
from mapsage.interop.foreign import write_run_folder
from mapsage.interop.mlflow_export import default_tracking_uri, export_run
from mapsage.interop.mmseg import find_runs
from mapsage.interop.names import SUMMARY_TO_MMSEG
from mapsage.interop.tensorboard_io import write_points
from mapsage.workspace import run_dir, runs_dir, workspace_root
from runners.commands.report_cmd import report_html, resolve_run_ids


def register(sub) -> None:
    doc = __doc__.split("\n\n")
    p = sub.add_parser("export-runs", help="export runs to MLflow or TensorBoard (offline, local stores)",
                       description=doc[1] + "\n\n" + doc[2])
    p.add_argument("run_ids", nargs="+", metavar="RUN", help="run ids (or unique prefixes)")
    p.add_argument("--to", required=True, nargs="+", metavar="TARGET",
                   help="'mlflow', or 'tensorboard DIR'")
    p.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite in the workspace)")
    p.add_argument("--experiment", default=None, metavar="NAME",
                   help="MLflow experiment (default: mapsage-<dataset>)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already exported to that experiment")
    p.add_argument("--no-report", action="store_true", help="MLflow: do not attach the HTML report")
    p.set_defaults(func=export_command)

    q = sub.add_parser("import-runs", help="import mmsegmentation work dirs / TensorBoard logs as runs",
                       description=doc[3])
    q.add_argument("path", metavar="PATH", help="a work directory, scalars.json, *.log.json or event folder")
    q.add_argument("--dataset", default=None, metavar="NAME",
                   help="the workbench dataset these runs trained on (default: from the mmseg config's "
                        "dataset_type, e.g. LoveDADataset -> loveda); rankings compare runs of one dataset")
    q.add_argument("--split", default="val", metavar="SPLIT",
                   help="the split the source validated on (default val)")
    q.add_argument("--overwrite", action="store_true", help="re-import sources imported before")
    q.set_defaults(func=import_command)


# ---------------------------------------------------------------------------------------------------------------
# export


def _ts(v):
    import pandas as pd

    if v is None:
        return None
    if isinstance(v, pd.Timestamp):
        return None if pd.isna(v) else v.timestamp()
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def gather_bundle(run_id: str):
    """A :class:`mapsage.interop.bundle.RunBundle` of one run from the store."""
    import math

    import store

    row = store.run(run_id)
    if row is None:
        raise UserError(f"run {run_id} is not in the store; run `mapsage runs list` to see the known runs")
    sc = store.scalars(run_id)
    scalars = [{"split": r.split, "name": r.name, "epoch": None if _nan(r.epoch) else int(r.epoch),
                "step": None if _nan(r.step) else int(r.step), "value": r.value, "ts": r.ts}
               for r in sc.itertuples(index=False)]
    ev = store.metrics(run_id)
    pc = store.per_class(run_id, split=None, domain=None, variant=None, epoch=None)
    by_seq = {int(s): g for s, g in pc.groupby("seq")} if not pc.empty else {}
    evaluations = []
    for r in ev.itertuples(index=False):
        rows = by_seq.get(int(r.seq))
        classes = [] if rows is None else [
            {"name": c.class_name, "iou": c.iou, "acc": c.acc, "biou": c.biou} for c in rows.itertuples()]
        evaluations.append({
            "split": r.split, "domain": r.domain, "variant": r.variant,
            "epoch": None if _nan(r.epoch) else int(r.epoch), "ts": r.ts,
            "summary": {k: getattr(r, k) for k in SUMMARY_TO_MMSEG
                        if getattr(r, k) is not None and not (isinstance(getattr(r, k), float)
                                                              and math.isnan(getattr(r, k)))},
            "classes": classes})
    info = dict(row.get("info") or {})
    return RunBundle(run_id=run_id, name=row.get("name") or run_id, split=row.get("split") or "val",
                     dataset=row.get("dataset"), status=row.get("status"), config=row.get("config") or {},
                     info=info, scalars=scalars, evaluations=evaluations, started_at=_ts(row.get("started_at")),
                     ended_at=_ts(row.get("ended_at")))


def _nan(v) -> bool:
    try:
        return v is None or v != v
    except Exception:  # noqa: BLE001
        return False


def _artifact_files(run_id: str, bundle, folder: Path, report: bool) -> list[Path]:
    """Config, latest confusion matrix and per-class table (CSV) and the HTML report of a run, under ``folder``."""
    import pandas as pd

    import store

    out = []
    cfg = run_dir(run_id) / "config.yaml"
    if cfg.exists():
        dst = folder / "config.yaml"
        dst.write_bytes(cfg.read_bytes())
        out.append(dst)
    got = store.confusion_matrix(run_id, split=bundle.split, domain="all")
    if got is not None:
        m, names = got
        dst = folder / f"confusion_{bundle.split}.csv"
        pd.DataFrame(m, index=[f"label:{n}" for n in names], columns=[f"pred:{n}" for n in names]).to_csv(dst)
        out.append(dst)
    pc = store.per_class(run_id, split=bundle.split, domain="all")
    if not pc.empty:
        dst = folder / f"per_class_{bundle.split}.csv"
        pc[["class_id", "class_name", "iou", "acc", "precision", "f1", "biou", "excluded", "variant",
            "epoch"]].to_csv(dst, index=False)
        out.append(dst)
    if report:
        dst = folder / "report.html"
        dst.write_text(report_html([run_id], ingest=False, thumbs=2, n_boot=200), encoding="utf-8")
        out.append(dst)
    return out


def export_runs(run_ids, to: str, *, logdir: str | Path | None = None, tracking_uri: str | None = None,
                experiment: str | None = None, overwrite: bool = False, report: bool = True) -> list:
    """Export runs; returns one result per run (:class:`MlflowExport` or the TensorBoard event file)."""
    from tqdm import tqdm

    import store

    ids = resolve_run_ids(run_ids)
    store.ingest_all(wait=True, run_ids=ids)
    results = []
    for rid in tqdm(ids, desc=f"export to {to}", unit="run", file=sys.stderr, disable=len(ids) < 2):
        bundle = gather_bundle(rid)
        if to == "tensorboard":
            results.append(write_points(Path(logdir) / rid, export_points(bundle)))
        else:
            uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(
                workspace_root() / "mlflow")
            with tempfile.TemporaryDirectory(prefix="mapsage-mlflow-") as tmp:
                files = _artifact_files(rid, bundle, Path(tmp), report)
                results.append(export_run(bundle, tracking_uri=uri,
                                          experiment=experiment or f"mapsage-{bundle.dataset or 'runs'}",
                                          artifacts=files, overwrite=overwrite))
    return results


def export_command(args) -> int:
    target = args.to[0].lower()
    if target == "mlflow":
        if len(args.to) > 1:
            raise UserError("--to mlflow takes no folder; use --tracking-uri URI for another store")
        for r in export_runs(args.run_ids, "mlflow", tracking_uri=args.tracking_uri, experiment=args.experiment,
                             overwrite=args.overwrite, report=not args.no_report):
            print(f"{r.run_id} -> MLflow run {r.mlflow_run_id} (experiment {r.experiment_id}): {r.n_params} params, "
                  f"{r.n_metric_points} metric points in {r.n_metric_keys} series, artifacts: "
                  f"{', '.join(r.artifacts) or 'none'}")
        print(f"tracking URI: {r.tracking_uri}")
        return 0
    if target == "tensorboard":
        if len(args.to) != 2:
            raise UserError("--to tensorboard needs a folder: --to tensorboard DIR")
        for path in export_runs(args.run_ids, "tensorboard", logdir=args.to[1]):
            print(f"wrote {path}")
        print(f"view: tensorboard --logdir {args.to[1]}")
        return 0
    raise UserError(f"--to {args.to[0]}: export targets are 'mlflow' and 'tensorboard DIR'")


# ---------------------------------------------------------------------------------------------------------------
# import


def import_runs(path, *, dataset: str | None = None, split: str = "val", overwrite: bool = False) -> list[dict]:
    """Import every run under ``path`` (see the module doc); returns one row per source run."""
    import store

    found = find_runs(path)
    rows = []
    for run in found:
        rid, written = write_run_folder(run, runs_dir(), dataset=dataset, split=split, overwrite=overwrite)
        rows.append({"run_id": rid, "source": run.source, "path": str(run.path), "written": written,
                     "train_records": len(run.train), "validations": len(run.evals), "notes": run.notes})
    store.ingest_all(wait=True, run_ids=[r["run_id"] for r in rows])
    for r in rows:
        info = store.run(r["run_id"]) or {}
        r["best_val_miou"] = info.get("best_val_miou")
        r["dataset"] = info.get("dataset")
    return rows


def import_command(args) -> int:
    rows = import_runs(args.path, dataset=args.dataset, split=args.split, overwrite=args.overwrite)
    for r in rows:
        best = r.get("best_val_miou")
        state = "imported" if r["written"] else "already imported (--overwrite to redo)"
        print(f"{r['run_id']}: {state} from {r['source']} {r['path']} -- {r['train_records']} training records, "
              f"{r['validations']} validations, dataset {r['dataset']}, best mIoU ({args.split}) "
              f"{best * 100:.2f}" if best is not None and best == best else
              f"{r['run_id']}: {state} from {r['source']} {r['path']} -- {r['train_records']} training records, "
              f"{r['validations']} validations, dataset {r['dataset']}")
        for note in r["notes"]:
            print(f"  note: {note}", file=sys.stderr)
    return 0
