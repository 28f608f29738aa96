"""Repeats and folds: one config launched as a group of runs -- ``--seeds N`` (``train.seed`` + 0..N-1) times
``--folds K`` (``dataset.split.folds=K``, ``dataset.split.fold`` = 0..K-1: grouped, stratified k-fold CV). Every
run of the group carries ``cv.group`` (the group id) and ``cv.repeat`` in its resolved config; the store and the
Runs page aggregate a group as mean ± sd with a 95 % interval (``store.groups``)."""
from __future__ import annotations

import secrets
import time
from pathlib import Path

from mapsage.config import ConfigError, load_config, run_name
from mapsage.errors import UserError
from mapsage.registries import TRAINING_KINDS


def group_overrides(cfg, seeds: int, folds: int, group_id: str) -> list[tuple[int, int, list[str]]]:
    """(repeat, fold, overrides) for every run of the group."""
    out = []
    base = run_name(cfg)
    for f in range(folds if folds else 1):
        for i in range(seeds):
            ov = [f"train.seed={int(cfg.train.seed) + i}", f"cv.group={group_id}", f"cv.repeat={i}"]
            suffix = f"_s{i}"
            if folds:
                ov += [f"dataset.split.folds={folds}", f"dataset.split.fold={f}"]
                suffix = f"_f{f}" + (suffix if seeds > 1 else "")
            ov.append(f"stage.name={(cfg.stage.name or base)}{suffix}")
            out.append((i, f, ov))
    return out


def launch_group(config_path: str | Path, overrides: list[str] | None = None, seeds: int = 1, folds: int = 0,
                 gpus: int | None = None) -> tuple[str, list[str]]:
    """Check every run of the group, then queue them all. Returns (group id, run ids)."""
    from .jobs import _preflight, submit

    seeds, folds = int(seeds), int(folds or 0)
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    if folds == 1 or folds < 0:
        raise UserError(f"--folds must be 0 (off) or at least 2, got {folds}")
    overrides = list(overrides or [])
    if gpus is not None:
        overrides.append(f"runtime.gpus={int(gpus)}")
    cfg = load_config(config_path, overrides)
    if cfg.stage.kind not in TRAINING_KINDS:
        raise ConfigError(f"{config_path}: --seeds/--folds repeat training runs; stage.kind is {cfg.stage.kind!r}")
    if folds and cfg.dataset.split.method != "by_group":
        raise ConfigError(f"--folds {folds}: dataset {cfg.dataset.name!r} uses split.method "
                          f"{cfg.dataset.split.method!r}; k-fold CV is for datasets split by groups (by_group), not "
                          f"for official splits")
    group_id = f"grp_{run_name(cfg)[:60]}_{time.strftime('%Y%m%d-%H%M%S')}_{secrets.token_hex(2)}"
    cfgs = []
    for _, _, ov in group_overrides(cfg, seeds, folds, group_id):
        c = load_config(config_path, overrides + ov)
        _preflight(c)
        cfgs.append(c)
    return group_id, [submit(c) for c in cfgs]
