"""How a ``predict`` job is launched from a run or a config: ``(config path, overrides)`` for ``jobs.launch``.

A run id (or a unique prefix) predicts with that run's checkpoint and its own resolved config (so its dataset,
classes and inference settings); a config file is used as it is (a predict template names ``stage.checkpoint``).
``on`` (a split, a folder or a raster) becomes ``predict.source``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from mapsage.config import resolve_path
from mapsage.errors import UserError
from mapsage.workspace import runs_dir
from runners.commands.runs_cmd import resolve_run_id


def _yaml_scalar(value: str) -> str:
    """Quote a path so ``--set`` parsing keeps it a string (``2024`` or ``null`` are folder names too)."""
    text = str(value)
    return "'" + text.replace("'", "''") + "'"


def predict_spec(target: str, on: Optional[str] = None, options: Optional[list[str]] = None) -> tuple[Path, list[str]]:
    """``target``: a run id / prefix or a config file; ``on``: a split, folder or raster; ``options``: more
    ``key=value`` overrides. Returns the config path and the overrides of the job."""

    overrides: list[str] = []
    path = Path(target).expanduser()
    if path.suffix.lower() in (".yaml", ".yml"):
        if not path.is_file():
            path = resolve_path(target)
        if not path.is_file():
            raise UserError(f"{target}: config file not found; give a run id or a predict config "
                            "(configs/stage3_inference/predict_*.yaml)")
        config = path
        overrides.append("stage.kind=predict")
    else:
        rid = resolve_run_id(target)
        config = runs_dir() / rid / "config.yaml"
        if not config.is_file():
            raise UserError(f"run {rid} has no config.yaml in {runs_dir() / rid}; it was not made by the workbench")
        overrides += ["stage.kind=predict", f"stage.checkpoint={rid}", "stage.plan_stage=3", "stage.name=null",
                      f"stage.title={_yaml_scalar('Predict with ' + rid)}"]
    if on:
        local = Path(on).expanduser()
        value = str(local.resolve()) if local.exists() else on
        overrides.append(f"predict.source={_yaml_scalar(value)}")
    overrides += list(options or [])
    return config, overrides


def launch_predict(target: str, on: Optional[str] = None, options: Optional[list[str]] = None,
                   gpus: Optional[int] = None) -> str:
    """Queue a ``predict`` job; returns its run id."""
    from runners import jobs

    config, overrides = predict_spec(target, on, options)
    return jobs.launch(config, overrides, gpus=gpus)
