"""Stage kinds: kind -> ``"module:function"``. The same job lifecycle runs every kind; a kind's module is imported
only inside the worker that runs it (so launching never imports torch), and a missing module is a clear error.
The kinds themselves are the registry ``mapsage.registries.STAGE_KINDS`` (what ``stage.kind`` validates against);
this table maps each of them, and no other, to its function.

A stage function is ``run(ctx: mapsage.stage.StageContext) -> None``."""
from __future__ import annotations

import importlib
from typing import Callable

from mapsage.errors import UserError
from mapsage.registries import STAGE_KINDS

STAGES: dict[str, str] = {
    "train": "mapsage.train.stage:run",
    "evaluate": "mapsage.infer.stage:run_evaluate",
    "tta_ab": "mapsage.infer.stage:run_tta_ab",
    "health": "mapsage.health:run",
    "refine": "mapsage.refine.stage:run",
    "distill": "mapsage.train.stage:run",
    "ensemble": "mapsage.infer.stage:run_ensemble",
    "demo_job": "mapsage.demo_stage:run",
    "export": "mapsage.export.stage:run",
    "predict": "mapsage.deliver.stage:run_predict",
    "lr_find": "mapsage.train.lr_find:run",
    "reliability": "mapsage.reliability.stage:run",
    "classify": "mapsage.classify.stage:run",
}


def register(kind: str, target: str) -> None:
    """Point a registered stage kind at another function (``target`` is ``"package.module:function"``). A new kind
    is added to ``mapsage.registries.STAGE_KINDS`` first, so the config schema accepts it too."""
    if kind not in STAGE_KINDS:
        raise UserError(f"stage kind {kind!r} is not in the registry (mapsage/registries.py STAGE_KINDS: "
                        f"{', '.join(STAGE_KINDS)}); add it there first")
    if ":" not in target:
        raise UserError(f"stage kind {kind!r}: target must look like 'package.module:function', got {target!r}")
    STAGES[kind] = target


def check_kind(kind: str, registry: dict[str, str] | None = None) -> str:
    registry = STAGES if registry is None else registry
    if kind not in registry:
        raise UserError(f"stage.kind {kind!r} has no entry point; known kinds: {', '.join(sorted(registry))} "
                        f"(runners/stages.py)")
    return registry[kind]


def resolve(kind: str, registry: dict[str, str] | None = None) -> Callable:
    """Import and return the stage function of ``kind``."""
    target = check_kind(kind, registry)
    module_name, _, func_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or "?"
        if module_name == missing or module_name.startswith(missing + "."):
            raise UserError(f"stage kind {kind!r} runs {target}, but the module {module_name!r} does not exist in "
                            f"this installation (missing {missing!r}); build or install it, or choose another "
                            f"stage.kind") from exc
        raise UserError(f"stage kind {kind!r}: importing {module_name!r} failed because the package {missing!r} is "
                        f"not installed; install it into the environment (pip install ...)") from exc
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise UserError(f"stage kind {kind!r}: {module_name!r} has no function {func_name!r} (runners/stages.py "
                        f"maps the kind to {target})")
    return fn
