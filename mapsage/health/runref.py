"""The run under test: ``stage.checkpoint`` names a checkpoint file or a run id (a folder under the workspace's
``runs/``). Health checks read that run's resolved config and its latest evaluation from its event file (the
source of truth the store ingests); without one they check the config itself."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from ..config import Config, ConfigError, config_from_dict, resolve_path
from ..errors import CheckpointError
from ..events import EVENTS_FILE, read_events
from ..runids import is_run_id
from ..safeload import load_file
from ..workspace import run_dir as workspace_run_dir


@dataclass
class RunRef:
    run_dir: Optional[Path]          # the run folder, when known
    checkpoint: Optional[Path]       # a checkpoint file, when one was named (or found in the run)
    spec: str


def resolve_run_ref(spec: str) -> RunRef:
    """What ``stage.checkpoint`` names, in the forms the evaluation stages accept
    (:mod:`mapsage.infer.checkpoints`): a run id or run folder, ``latest:<template>``, ``<run id>/<file>`` or a
    checkpoint file. A run needs no checkpoint here: its event file is enough for the per-class check."""
    from ..infer.checkpoints import LATEST, best_checkpoint, latest_run, resolve_checkpoint

    ref = str(spec).strip()
    folder = None
    if ref.startswith(LATEST):
        template, _, filename = ref[len(LATEST):].partition(":")
        folder = workspace_run_dir(latest_run(template.strip()))
        if filename:
            return RunRef(folder, resolve_checkpoint(ref).path, ref)
    else:
        for cand in ([workspace_run_dir(ref)] if is_run_id(ref) else []) + [resolve_path(ref)]:
            if cand.is_dir() and ((cand / EVENTS_FILE).exists() or (cand / "config.yaml").exists()):
                folder = cand
                break
    if folder is not None:
        try:
            ckpt = best_checkpoint(folder)
        except CheckpointError:
            found = sorted((folder / "checkpoints").glob("*.pth")) if (folder / "checkpoints").is_dir() else []
            ckpt = found[-1] if found else None
        return RunRef(folder, ckpt, ref)
    resolved = resolve_checkpoint(ref)           # a file or <run id>/<file>; CheckpointError names the key
    run = workspace_run_dir(resolved.run_id) if resolved.run_id else None
    if run is None:
        parent = resolved.path.parent
        cand = parent.parent if parent.name == "checkpoints" else parent
        run = cand if (cand / EVENTS_FILE).exists() or (cand / "config.yaml").exists() else None
    return RunRef(run, resolved.path, ref)


def _config_from_yaml(path: Path) -> Config:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return config_from_dict(data)


def training_config_under_test(cfg: Config) -> tuple[Config, str]:
    """(the training config whose validation is checked, where it came from)."""
    spec = cfg.stage.checkpoint
    if not spec:
        return cfg, f"this config ({cfg.meta.get('source', 'in memory')})"
    ref = resolve_run_ref(spec)
    if ref.run_dir is not None and (ref.run_dir / "config.yaml").exists():
        return _config_from_yaml(ref.run_dir / "config.yaml"), str(ref.run_dir / "config.yaml")
    if ref.checkpoint is not None:
        state = load_file(ref.checkpoint, key="stage.checkpoint")
        if isinstance(state, dict) and isinstance(state.get("config"), dict):
            return config_from_dict(state["config"]), f"{ref.checkpoint} (config stored in the checkpoint)"
        raise ConfigError(f"stage.checkpoint: {ref.checkpoint} holds no 'config'; point stage.checkpoint at a "
                          f"workbench run or checkpoint")
    raise ConfigError(f"stage.checkpoint: {spec} has no config.yaml and no checkpoint")


def latest_evaluation(run_dir: Path) -> Optional[dict]:
    """The latest ``metrics`` record of the whole split (domain 'all') in a run's event file: a final
    evaluation (epoch null) wins over training-time validations; among those, the last written."""
    records, _ = read_events(Path(run_dir) / EVENTS_FILE)
    metrics = [r for r in records if r.get("type") == "metrics" and r.get("domain", "all") == "all"]
    if not metrics:
        return None
    finals = [r for r in metrics if r.get("epoch") is None]
    return (finals or metrics)[-1]
