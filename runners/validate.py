"""What can be checked before a job is queued, checked at launch: a bad dataset root, an empty split, a missing or
unsafe checkpoint / weights file or an impossible GPU request fails ``mapsage run`` (and the app's Launch) at once
with a one-line :class:`~mapsage.errors.UserError`, instead of inside the detached job minutes later.

Checks, by what the stage kind reads:

* ``dataset.root`` exists and the dataset lists samples (root, globs, LoveDA folders); the splits the stage uses
  (train + val for training, the evaluated split otherwise) are not empty -- every kind but ``demo_job``;
* ``stage.checkpoint`` (evaluate, tta_ab, refine, health, ensemble members), ``model.pretrained``,
  ``distill.teacher.weights`` and a resume checkpoint: the file exists, is readable and loads safely
  (:func:`mapsage.safeload.check_file`; a ``latest:<template>`` reference is resolved when the job starts, as the
  template's run may still be queued);
* ``runtime.gpus`` fits the scheduler's GPU pool.
"""
from __future__ import annotations

from pathlib import Path

from mapsage.classify.data import check_launch
from mapsage.config import Config, ConfigError, resolve_path
from mapsage.errors import CheckpointError, DataError
from mapsage.health.runref import resolve_run_ref
from mapsage.registries import SEG_TRAINING_KINDS
from mapsage.safeload import check_file

from .settings import load_settings

LATEST = "latest:"
NO_DATA_KINDS = ("demo_job",)
TRAIN_KINDS = SEG_TRAINING_KINDS
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def _check_weights_file(value, key: str, what: str) -> None:
    if not value or str(value).strip().lower() in ("", "none", "null", "false", "random", "scratch"):
        return
    path = resolve_path(str(value))
    if not path.exists():
        raise CheckpointError(f"{key}: {what} file not found: {path}; set {key} to an existing local file")
    check_file(path, what=what, key=key)


def is_exported_model(ref) -> bool:
    """An ONNX file, or a TorchScript ``.pt`` with the export sidecar beside it (``mapsage export``)."""
    path = resolve_path(str(ref))
    return path.suffix == ".onnx" or (path.suffix == ".pt" and path.with_name(path.name + ".json").is_file())


def _check_checkpoint_ref(ref, key: str) -> None:
    """A checkpoint reference (file, run folder, run id): resolvable now, and its file loads safely."""
    from mapsage.infer.checkpoints import resolve_checkpoint

    if not ref or str(ref).strip().startswith(LATEST):
        return
    resolved = resolve_checkpoint(str(ref), key=key)
    check_file(resolved.path, key=key)


def _check_dataset(cfg: Config) -> None:
    from mapsage.data.dataset import available_splits, resolve_split
    from mapsage.data.samples import dataset_root, discover_samples

    ds = cfg.dataset
    root = dataset_root(ds)
    if not Path(root).is_dir():
        raise DataError(f"dataset.root: {root} is not a folder; set dataset.root to the dataset folder (relative "
                        f"paths start at the project root)")
    samples = discover_samples(ds)
    if not samples:
        raise DataError(f"dataset.root: no images under {root} match dataset.image_glob={ds.image_glob!r}; fix "
                        f"dataset.image_glob or dataset.root")
    counts = available_splits(cfg, samples)
    if cfg.stage.kind in TRAIN_KINDS:
        needed = [("dataset.train_split", ds.train_split), ("dataset.val_split", ds.val_split)]
    else:
        needed = [("eval.split", cfg.eval.split)]
    for key, split in needed:
        if not split:
            continue
        try:
            name = resolve_split(ds, split)
        except (ConfigError, DataError, ValueError) as exc:
            raise DataError(f"{key}: {exc}") from None
        if not counts.get(name, 0):
            have = ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
            raise DataError(f"{key}: split {split!r} of {ds.name} has no samples under {root} (samples per split: "
                            f"{have}); check {key}, dataset.split and dataset.root")


def _check_gpus(cfg: Config) -> None:
    want = int(cfg.runtime.gpus or 0)
    pool = list(load_settings().gpus)
    if want < 0:
        raise ConfigError(f"runtime.gpus must be 0 or more, got {want}")
    if pool and want > len(pool):
        raise ConfigError(f"runtime.gpus={want} but the scheduler has {len(pool)} GPU(s) ({','.join(pool)}); "
                          f"launch with --gpus {len(pool)} or fewer")


def validate_launch(cfg: Config, resume_from: str | Path | None = None) -> None:
    """Raise a one-line UserError for anything that would make the job fail at its start."""
    kind = cfg.stage.kind
    _check_gpus(cfg)
    if getattr(cfg, "task", "segmentation") == "classification":   # images + labels CSV/folders, local weights

        check_launch(cfg)
        return
    if kind not in NO_DATA_KINDS:
        _check_dataset(cfg)
    if resume_from and Path(resume_from).suffix in TORCH_SUFFIXES:
        check_file(resume_from, key="resume checkpoint")
    if (kind in TRAIN_KINDS and not resume_from) or kind == "health":
        _check_weights_file(cfg.model.pretrained, "model.pretrained", "pretrained weights")
    if kind in TRAIN_KINDS and cfg.model.max_params is not None:   # the budget: counted now, refused before training
        from mapsage.models.budget import check_max_params, model_facts

        check_max_params(cfg, model_facts(cfg, flops=False)["model_params"])
    if kind == "health" and cfg.stage.checkpoint and not str(cfg.stage.checkpoint).startswith(LATEST):
        # health checks accept a run folder without best*.pth (any checkpoint, or only its events)

        ref = resolve_run_ref(cfg.stage.checkpoint)
        if ref.checkpoint is not None and ref.run_dir is None:
            check_file(ref.checkpoint, key="stage.checkpoint")
    elif kind == "predict" and cfg.stage.checkpoint and is_exported_model(cfg.stage.checkpoint):
        from mapsage.export import read_sidecar  # an exported model is read by onnxruntime / torch.jit, never unpickled

        path = resolve_path(str(cfg.stage.checkpoint))
        if not path.is_file():
            raise CheckpointError(f"stage.checkpoint: {path}: exported model not found")
        read_sidecar(path)
    elif kind not in TRAIN_KINDS and kind not in NO_DATA_KINDS and kind != "ensemble" and cfg.stage.checkpoint:
        _check_checkpoint_ref(cfg.stage.checkpoint, "stage.checkpoint")
    if kind == "ensemble":
        for i, m in enumerate(cfg.ensemble.members or []):
            _check_checkpoint_ref(getattr(m, "checkpoint", None), f"ensemble.members[{i}].checkpoint")
    distill_on = kind == "distill" or bool(getattr(cfg.distill, "enabled", False))
    if distill_on:
        t = cfg.distill.teacher
        if t.kind == "timm":
            if t.weights:
                _check_weights_file(t.weights, "distill.teacher.weights", "teacher weights")
        else:
            _check_checkpoint_ref(t.weights, "distill.teacher.weights")


__all__ = ["validate_launch"]
