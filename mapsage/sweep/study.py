"""The Optuna study of a sweep, kept in the workspace: ``workspace/sweeps/<sweep_id>/study.journal`` (Optuna's
journal file storage: several processes -- the driver and every trial -- append to it under a file lock, so it
works on a shared file system where SQLite would not)."""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import UserError
from ..runids import check_run_id
from ..workspace import workspace_root
from .space import grid_space

STUDY_FILE = "study.journal"


def sweeps_dir() -> Path:
    return workspace_root() / "sweeps"


def sweep_dir(sweep_id: str) -> Path:
    check_run_id(sweep_id)
    return sweeps_dir() / sweep_id


def _optuna():
    try:
        import optuna
    except ModuleNotFoundError as exc:  # pragma: no cover - a dependency in pyproject
        raise UserError("sweeps need the optuna package: pip install optuna") from exc
    optuna.logging.set_verbosity(logging.WARNING)
    return optuna


def storage(sweep_id: str):
    optuna = _optuna()
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = sweep_dir(sweep_id) / STUDY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def make_sampler(sweep_cfg, params):
    """``sweep.sampler`` (:data:`mapsage.registries.SWEEP_SAMPLERS`) as an Optuna sampler."""
    optuna = _optuna()
    build = {"tpe": lambda: optuna.samplers.TPESampler(seed=sweep_cfg.seed,
                                                       n_startup_trials=max(1, sweep_cfg.startup_trials)),
             "random": lambda: optuna.samplers.RandomSampler(seed=sweep_cfg.seed),
             "grid": lambda: optuna.samplers.GridSampler(grid_space(params), seed=sweep_cfg.seed)}
    return build[sweep_cfg.sampler]()


def make_pruner(sweep_cfg):
    """``sweep.pruner`` (:data:`mapsage.registries.SWEEP_PRUNERS`): median (after ``startup_trials`` complete
    trials, from epoch ``min_epochs``) | asha (Optuna's asynchronous successive halving, rung 0 at ``min_epochs``) |
    none."""
    optuna = _optuna()
    # steps are 0-based epochs: n_warmup_steps = min_epochs - 1 lets epoch index min_epochs-1 be judged
    build = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=int(sweep_cfg.startup_trials),
                                                           n_warmup_steps=max(0, int(sweep_cfg.min_epochs) - 1)),
             "asha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, int(sweep_cfg.min_epochs)),
                                                                    reduction_factor=3),
             "none": lambda: optuna.pruners.NopPruner()}
    return build[sweep_cfg.pruner]()


def create_study(sweep_id: str, sweep_cfg, params):
    optuna = _optuna()
    return optuna.create_study(study_name=sweep_id, storage=storage(sweep_id), load_if_exists=True,
                               direction=sweep_cfg.direction, sampler=make_sampler(sweep_cfg, params),
                               pruner=make_pruner(sweep_cfg))


def load_study(sweep_id: str, sweep_cfg=None, params=None):
    """The sweep's study (sampler and pruner rebuilt from ``sweep_cfg`` when given)."""
    optuna = _optuna()
    if not (sweep_dir(sweep_id) / STUDY_FILE).exists():
        raise UserError(f"sweep {sweep_id!r}: no study under {sweep_dir(sweep_id)} (see `mapsage sweep list`)")
    kw = {}
    if sweep_cfg is not None:
        kw["pruner"] = make_pruner(sweep_cfg)
        if params is not None:
            kw["sampler"] = make_sampler(sweep_cfg, params)
    return optuna.load_study(study_name=sweep_id, storage=storage(sweep_id), **kw)
