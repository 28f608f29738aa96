"""The runner API the app (and scripts) use. Nothing here blocks on training work.

Jobs
    ``launch(config_path, overrides=None, gpus=None) -> run_id``; ``cancel(run_id, grace_s=None, wait=False)``;
    ``resume(run_id, overrides=None, gpus=None) -> new run_id``; ``wait(run_id, timeout=None)``;
    ``list_templates()``; ``settings()``.
Status
    ``refresh(ingest=True | "background" | False)`` runs the scheduler (finds dead jobs, escalates pending
    cancels, starts queued ones) and ingests new events (never waiting for another process's ingest;
    ``"background"``: in a thread); throttled to once per ``min_interval`` seconds per process.
    ``status(run_id)``: the live state from the run's event file (fresh, cheap: for progress bars).
    ``list_runs(...)``, ``run(run_id)`` and ``scalars(run_id, ...)`` delegate to ``store`` after a ``refresh()``;
    pages read everything else from ``store`` directly.
    ``logs(run_id, lines=200)``: the tail of the run's ``stdout.log``.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from mapsage.config import CONFIGS_DIR, ConfigError, load_config, run_name, to_dict
from mapsage.errors import UserError
from mapsage.registries import CHECKPOINT_KINDS, EXPERIMENT_COLUMNS
from mapsage.workspace import run_dir as _run_dir
from store.derive import experiment_columns

from . import jobs, scheduler
from .predict_spec import launch_predict
from .settings import Settings, load_settings

_last_refresh = 0.0
_bg_ingest: threading.Thread | None = None


def _ingest_quietly() -> None:
    import store

    try:
        store.ingest_all(wait=False)
    except Exception as exc:  # noqa: BLE001 - a background refresh must never take the caller down
        print(f"[mapsage] background ingest failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def refresh(min_interval: float = 1.0, ingest: bool | str = True) -> dict:
    """Run the scheduler and ingest new events. ``ingest``: True (in this call, without waiting for another
    process's ingest), ``"background"`` (in a daemon thread, so a page render never waits for it; the data shows
    on the next read), or False. Throttled to once per ``min_interval`` seconds per process. Returns what the
    scheduler did."""
    global _last_refresh, _bg_ingest
    now = time.monotonic()
    if now - _last_refresh < min_interval:
        return {"started": [], "ended": [], "throttled": True}
    _last_refresh = now
    try:
        result = scheduler.schedule()
    except OSError as exc:
        # a full disk (or a read-only one) must not take every read down: show what the store already has
        print(f"[mapsage] scheduler check skipped: {exc}", file=sys.stderr)
        result = {"started": [], "ended": [], "error": str(exc)}
    if ingest == "background":
        if _bg_ingest is None or not _bg_ingest.is_alive():
            _bg_ingest = threading.Thread(target=_ingest_quietly, name="mapsage-ingest", daemon=True)
            _bg_ingest.start()
    elif ingest:
        import store

        try:
            report = store.ingest_all(wait=False)
        except Exception as exc:  # noqa: BLE001 - reads go on with the store as it is; the next refresh retries
            print(f"[mapsage] ingest skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
            result["ingest_error"] = str(exc)
            return result
        result["ingested"] = report.events
        result["ingest_busy"] = report.busy
    return result


def launch(config_path: str | Path, overrides: list[str] | None = None, gpus: int | None = None) -> str:
    return jobs.launch(config_path, overrides, gpus=gpus)


def check_launch(config_path: str | Path, overrides: list[str] | None = None, gpus: int | None = None) -> None:
    """Everything :func:`launch` checks before it writes anything (config, files, executor), without queuing:
    raises the same one-line ``UserError``."""
    jobs.check_launch(config_path, overrides, gpus=gpus)


def predict(target: str, on: str | None = None, options: list[str] | None = None, gpus: int | None = None) -> str:
    """Queue a ``predict`` job with a run's model (or a predict config) on a split, image folder or raster."""

    return launch_predict(target, on, options, gpus=gpus)


def cancel(run_id: str, grace_s: float | None = None, wait: bool = False) -> str:
    """SIGTERM now; SIGKILL after the grace (``wait=False``: done by a later ``refresh``)."""
    return jobs.cancel(run_id, grace_s=grace_s, wait_for_end=wait)


def resume(run_id: str, overrides: list[str] | None = None, gpus: int | None = None,
           checkpoint: str | Path | None = None) -> str:
    return jobs.resume(run_id, overrides, gpus=gpus, checkpoint=checkpoint)


def wait(run_id: str, timeout: float | None = None) -> str:
    return jobs.wait(run_id, timeout=timeout)


def status(run_id: str) -> dict:
    """Fresh status of one run from its event file (runs the scheduler first, so a dead job shows as died)."""
    refresh(min_interval=0.0, ingest=False)
    return jobs.live_status(run_id)


def logs(run_id: str, lines: int = 200) -> str:
    return jobs.log_tail(run_id, lines)


def settings() -> Settings:
    return load_settings()


def find_checkpoint(run_id: str) -> Path | None:
    return jobs.find_checkpoint(run_id)


# ---------------------------------------------------------------------------------------------------------------
# store reads, after a refresh; a run id is checked first (mapsage.runids): never a path


def _store():
    import store

    refresh()
    return store


def list_runs(**filters):
    return _store().list_runs(**filters)


def run(run_id: str):
    _run_dir(run_id)          # RunIdError for a path, '..' or a symlink out of workspace/runs
    return _store().run(run_id)


def scalars(run_id, **kw):
    _run_dir(run_id)          # RunIdError for a path, '..' or a symlink out of workspace/runs
    return _store().scalars(run_id, **kw)


# ---------------------------------------------------------------------------------------------------------------
# templates


def _knobs(d: dict) -> dict:
    """The keys a launch form offers, as dotted key -> value (values usable as ``--set key=value``)."""
    g = lambda *ks: _get(d, ks)  # noqa: E731
    knobs = {
        "model.arch": g("model", "arch"), "model.encoder": g("model", "encoder"),
        "model.pretrained": g("model", "pretrained"), "train.epochs": g("train", "epochs"),
        "train.batch_size": g("train", "batch_size"), "train.lr": g("train", "lr"),
        "augment.crop_size": g("augment", "crop_size"), "loss.schedule": g("loss", "schedule"),
        "eval.mode": g("eval", "mode"), "eval.tta.scales": g("eval", "tta", "scales"),
        "eval.tta.hflip": g("eval", "tta", "hflip"), "runtime.gpus": g("runtime", "gpus"),
    }
    kind = g("stage", "kind")
    if kind == "tta_ab":
        knobs["tta_ab.variants"] = g("tta_ab", "variants")
        knobs["tta_ab.threshold"] = g("tta_ab", "threshold")
    if kind in CHECKPOINT_KINDS:
        knobs["stage.checkpoint"] = g("stage", "checkpoint")
    if kind == "refine":
        knobs["refine.chains"] = g("refine", "chains")
        knobs["refine.sam.checkpoint"] = g("refine", "sam", "checkpoint")
    if kind == "distill" or g("distill", "enabled"):
        knobs["distill.teacher.model"] = g("distill", "teacher", "model")
        knobs["distill.teacher.weights"] = g("distill", "teacher", "weights")
    if kind == "demo_job":
        knobs = {"stage.demo_steps": g("stage", "demo_steps"),
                 "stage.demo_step_seconds": g("stage", "demo_step_seconds")}
    return knobs


def _get(d, keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def list_templates(root: str | Path | None = None) -> list[dict]:
    """Plan templates: ``configs/stage*/**/*.yaml``, sorted by plan stage then path. Each: ``path`` (relative to
    the configs folder), ``abs_path``, ``plan_stage``, ``kind``, ``title``, ``description``, ``run_name``,
    ``knobs`` (dotted key -> value), ``summary`` (the experiment-table columns) and ``error`` (a template that
    does not load shows why instead of disappearing)."""

    root = Path(root) if root else CONFIGS_DIR
    out = []
    for path in sorted(root.glob("stage*/**/*.yaml")):
        folder = path.relative_to(root).parts[0]
        digits = "".join(ch for ch in folder.removeprefix("stage")[:1] if ch.isdigit())
        item = {"path": str(path.relative_to(root)), "abs_path": str(path),
                "plan_stage": int(digits) if digits else None, "kind": None, "title": path.stem,
                "description": "", "run_name": None, "knobs": {}, "summary": {}, "error": None}
        try:
            cfg = load_config(path)
            d = to_dict(cfg)
            item.update(plan_stage=cfg.stage.plan_stage, kind=cfg.stage.kind, title=cfg.stage.title or path.stem,
                        description=cfg.stage.description, run_name=run_name(cfg), knobs=_knobs(d),
                        summary={k: v for k, v in experiment_columns(d).items()
                                 if k in EXPERIMENT_COLUMNS})
        except (ConfigError, UserError) as exc:
            item["error"] = str(exc)
        out.append(item)
    out.sort(key=lambda t: (t["plan_stage"] if t["plan_stage"] is not None else 99, t["path"]))
    return out


__all__ = ["refresh", "launch", "check_launch", "predict", "cancel", "resume", "wait", "status", "logs", "settings",
           "find_checkpoint", "list_runs", "run", "scalars", "list_templates"]
