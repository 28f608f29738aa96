"""Export a run to MLflow through MLflow's own client (``mlflow.tracking.MlflowClient``), offline.

The default store is a local SQLite database (``sqlite:///<dir>/mlflow.db``, MLflow's recommended local backend;
the ``mlflow-skinny`` package plus ``sqlalchemy`` and ``alembic`` run it) with artifacts in a folder beside it. Any
tracking URI MLflow accepts works (``http://...`` for a team's server, ``file:...`` for the legacy folder store).

One MLflow run per workbench run, in experiment ``experiment``:

* params: the resolved config, flattened to dotted keys (``train.lr``, ``model.encoder`` ...);
* tags: ``mapsage.run_id``, ``mapsage.dataset``, ``mapsage.split``, ``mapsage.status``, ``mlflow.runName``,
  ``mlflow.source.git.commit``, and every scalar fact of the run row under ``mapsage.info.*``;
* metrics: :func:`mapsage.interop.bundle.export_points` (per step, per epoch, per-class IoU, mmseg names and units)
  with their wall-clock times;
* artifacts: whatever files the caller hands in (the config, confusion matrices, the report).

A run already exported to the experiment (same ``mapsage.run_id`` tag) is refused unless ``overwrite``: then the
old MLflow run is deleted first. MLflow's usage telemetry is switched off (``MLFLOW_DISABLE_TELEMETRY``) unless the
environment sets it.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import UserError
from .bundle import RunBundle, export_points, flatten_config
from .names import safe_key

MAX_PARAM_VALUE = 6000          # MLflow's limit on a param value (characters)
MAX_KEY = 250
BATCH_METRICS = 1000            # MLflow's per-request limits
BATCH_PARAMS = 100


class MlflowUnavailable(UserError):
    pass


@dataclass
class MlflowExport:
    run_id: str                  # the workbench run
    mlflow_run_id: str
    experiment_id: str
    tracking_uri: str
    n_params: int
    n_metric_points: int
    n_metric_keys: int
    artifacts: list[str]


def default_tracking_uri(folder: str | Path) -> str:
    """``sqlite:///<folder>/mlflow.db`` (absolute)."""
    return f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}"


def _client(tracking_uri: str):
    # the workbench works offline: MLflow's usage telemetry stays off unless the user turns it on
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise MlflowUnavailable("MLflow export needs MLflow's client: pip install mlflow-skinny sqlalchemy alembic "
                                "(or the full mlflow package)") from exc
    if tracking_uri.startswith("sqlite:"):
        try:
            import alembic  # noqa: F401
            import sqlalchemy  # noqa: F401
        except ImportError as exc:
            raise MlflowUnavailable(f"--tracking-uri {tracking_uri}: a SQLite MLflow store needs sqlalchemy and "
                                    f"alembic: pip install sqlalchemy alembic") from exc
        db = Path(tracking_uri.split(":///", 1)[-1])
        db.parent.mkdir(parents=True, exist_ok=True)
    if tracking_uri.startswith("file:") or "://" not in tracking_uri:
        # the user asked for MLflow's folder store by name: let MLflow open it (it refuses by default since 3.x)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=tracking_uri)


def _experiment(client, name: str, tracking_uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:"):
        db = Path(tracking_uri.split(":///", 1)[-1])
        location = (db.parent / "artifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def export_run(bundle: RunBundle, *, tracking_uri: str, experiment: str,
               artifacts: Optional[list[Path]] = None, overwrite: bool = False) -> MlflowExport:
    """Log ``bundle`` as one MLflow run (see the module doc). Returns what was written."""
    from mlflow.entities import Metric, Param

    client = _client(tracking_uri)
    try:
        exp_id = _experiment(client, experiment, tracking_uri)
    except Exception as exc:  # noqa: BLE001 - a bad URI, an unreachable server
        if isinstance(exc, UserError):
            raise
        raise UserError(f"--tracking-uri {tracking_uri}: MLflow could not open the store ({exc})") from exc
    old = client.search_runs([exp_id], filter_string=f"tags.`mapsage.run_id` = '{bundle.run_id}'",
                             max_results=10)
    if old:
        if not overwrite:
            raise UserError(f"run {bundle.run_id} is already in MLflow experiment {experiment!r} as run "
                            f"{old[0].info.run_id}; add --overwrite to replace it")
        for r in old:
            client.delete_run(r.info.run_id)

    start_ms = int((bundle.started_at or time.time()) * 1000)
    tags = {"mlflow.runName": bundle.name or bundle.run_id, "mapsage.run_id": bundle.run_id,
            "mapsage.dataset": str(bundle.dataset), "mapsage.split": bundle.split,
            "mapsage.status": str(bundle.status)}
    commit = (bundle.config.get("meta") or {}).get("code_commit") or bundle.info.get("code_commit")
    if commit:
        tags["mlflow.source.git.commit"] = str(commit)
    for k, v in bundle.info.items():
        if isinstance(v, (str, int, float, bool)) and v is not None:
            tags[safe_key(f"mapsage.info.{k}")[:MAX_KEY]] = str(v)[:MAX_PARAM_VALUE]
    params = {safe_key(k)[:MAX_KEY]: v[:MAX_PARAM_VALUE] for k, v in flatten_config(bundle.config).items()}
    run = client.create_run(exp_id, start_time=start_ms, tags=tags, run_name=bundle.name or bundle.run_id)
    rid = run.info.run_id
    try:
        plist = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(plist), BATCH_PARAMS):
            client.log_batch(rid, params=plist[i:i + BATCH_PARAMS])
        points = export_points(bundle)
        metrics = [Metric(p.tag[:MAX_KEY], float(p.value), int(p.wall_time * 1000), int(p.step)) for p in points]
        for i in range(0, len(metrics), BATCH_METRICS):
            client.log_batch(rid, metrics=metrics[i:i + BATCH_METRICS])
        logged = []
        for path in artifacts or []:
            path = Path(path)
            if path.is_file():
                client.log_artifact(rid, str(path))
                logged.append(path.name)
        end = bundle.ended_at
        status = {"succeeded": "FINISHED", "failed": "FAILED", "died": "FAILED",
                  "cancelled": "KILLED"}.get(str(bundle.status), "FINISHED")
        client.set_terminated(rid, status=status, end_time=int(end * 1000) if end else None)
    except Exception:
        client.set_terminated(rid, status="FAILED")
        raise
    return MlflowExport(run_id=bundle.run_id, mlflow_run_id=rid, experiment_id=exp_id, tracking_uri=tracking_uri,
                        n_params=len(params), n_metric_points=len(metrics),
                        n_metric_keys=len({m.key for m in metrics}), artifacts=logged)
