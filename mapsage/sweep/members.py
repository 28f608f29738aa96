"""Ensemble members picked by rule (``ensemble.from_sweep`` + ``top_k``, ``ensemble.pattern``), resolved when the
ensemble stage starts; the stage records the members it used."""
from __future__ import annotations

import fnmatch
import json
import re
from typing import Callable, Optional

from ..config import ConfigError
from ..config.schema import EnsembleMember
from ..workspace import runs_dir
from .study import sweep_dir

_SCORE = re.compile(r"_[a-z_]+(\d+\.\d+)_(?:raw|ema)\.pth$")


def _has_checkpoint(run_id: str) -> bool:
    d = runs_dir() / run_id / "checkpoints"
    return d.is_dir() and any(p.suffix == ".pth" for p in d.iterdir())


def named_score(run_id: str) -> Optional[float]:
    """The score in the run's named best checkpoint (``checkpoints/named/..._miou0.6312_ema.pth``)."""
    d = runs_dir() / run_id / "checkpoints" / "named"
    scores = [float(m.group(1)) for p in (d.glob("*.pth") if d.is_dir() else []) if (m := _SCORE.search(p.name))]
    return max(scores) if scores else None


def sweep_top(sweep_id: str, k: int) -> list[str]:
    path = sweep_dir(sweep_id) / "sweep.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"ensemble.from_sweep: no sweep {sweep_id!r} in this workspace ({path} is missing)") from None
    done = [t for t in state.get("trials", {}).values()
            if t.get("state") == "complete" and t.get("value") is not None and t.get("run_id")
            and _has_checkpoint(t["run_id"])]
    done.sort(key=lambda t: t["value"], reverse=state.get("direction", "maximize") == "maximize")
    return [t["run_id"] for t in done[:k]]


def pattern_runs(pattern: str, k: int = 0) -> list[str]:
    root = runs_dir()
    ids = sorted(d.name for d in root.iterdir() if d.is_dir() and fnmatch.fnmatch(d.name, pattern)
                 and _has_checkpoint(d.name)) if root.is_dir() else []
    if k:
        ids.sort(key=lambda r: -(named_score(r) or float("-inf")))
        ids = ids[:k]
    return ids


def expand_members(cfg, log: Optional[Callable[[str], None]] = None) -> list[EnsembleMember]:
    ens = cfg.ensemble
    out = list(ens.members)
    picked: list[str] = []
    if ens.from_sweep:
        k = int(ens.top_k or 3)
        picked += sweep_top(ens.from_sweep, k)
        if not picked:
            raise ConfigError(f"ensemble.from_sweep: sweep {ens.from_sweep} has no complete trial with a checkpoint")
    if ens.pattern:
        got = pattern_runs(ens.pattern, int(ens.top_k or 0))
        if not got:
            raise ConfigError(f"ensemble.pattern {ens.pattern!r} matches no run with a checkpoint under {runs_dir()}")
        picked += [r for r in got if r not in picked]
    have = {m.checkpoint for m in out}
    out += [EnsembleMember(checkpoint=r) for r in picked if r not in have]
    if picked and log:
        log(f"ensemble members picked by rule ({'sweep ' + ens.from_sweep if ens.from_sweep else ''}"
            f"{' pattern ' + ens.pattern if ens.pattern else ''}, top_k {ens.top_k or 'all'}): {', '.join(picked)}")
    return out
