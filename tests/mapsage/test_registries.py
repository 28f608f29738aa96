"""Each closed vocabulary is one list that the config schema, the code that implements it and the app read."""

from __future__ import annotations

import argparse
import ast
import typing
from pathlib import Path

import pytest

import store
from app.widgets import knobs, palette
from mapsage import corruption_levels, metric_names, registries
from mapsage import palette as class_palette
from mapsage.config import ConfigError, load_config
from mapsage.config.schema import ModelCfg, ReliabilityCfg, StageCfg, SweepCfg, TrainCfg
from mapsage.losses import TERMS
from mapsage.models import ARCHS
from mapsage.reliability import corruptions
from tests.support.data import DUBAI_CONFIG as TEMPLATE


def _choices(cls, key):
    return typing.get_args(typing.get_type_hints(cls)[key])


def test_architectures_come_from_the_registry():
    assert _choices(ModelCfg, "arch") == registries.ARCH_NAMES == tuple(ARCHS)
    assert knobs.ARCHS == list(registries.ARCH_NAMES)                      # the launch form's selector
    with pytest.raises(ConfigError, match="model.arch"):
        load_config(TEMPLATE, ["model.arch=not-an-arch"])


def test_loss_terms_come_from_the_registry():
    assert set(TERMS) | {"boundary"} == set(registries.LOSS_TERMS)        # boundary: SegLoss's own term
    assert set(knobs.LOSS_TERMS) <= set(registries.LOSS_TERMS)
    with pytest.raises(ConfigError, match="unknown loss term"):
        load_config(TEMPLATE, ["loss.schedule=[{from_epoch: 0, terms: {ce: 1.0, nonsense: 1.0}}]"])


def test_metric_and_corruption_and_verdict_registries():
    assert _choices(TrainCfg, "save_best_by") == metric_names.SELECTABLE
    assert set(metric_names.SELECTABLE) <= set(metric_names.METRICS)
    assert corruptions.LEVELS is corruption_levels.LEVELS
    assert all(len(v) == corruption_levels.MAX_SEVERITY for v in corruption_levels.LEVELS.values())
    assert ReliabilityCfg().corruptions and set(ReliabilityCfg().corruptions) <= set(corruption_levels.CORRUPTIONS)
    assert store.VERDICTS is registries.VERDICTS
    assert palette.FALLBACK is class_palette.FALLBACK and palette.fallback_color is class_palette.fallback_color


def test_experiment_columns_come_from_the_registry():
    from mapsage.report import tables
    from runners import api
    from store import queries

    assert queries.EXPERIMENT_COLUMNS == tables.EXPERIMENT_COLUMNS == list(registries.EXPERIMENT_COLUMNS)
    template = next(t for t in api.list_templates() if not t["error"] and t["kind"] == "train")
    assert set(template["summary"]) <= set(registries.EXPERIMENT_COLUMNS) and template["summary"]


# ----------------------------------------------------------------------------------------------------------------
# stage kinds, sweep metrics, verdicts, the command line


def _cli_action(*path: str, dest: str) -> argparse.Action:
    """The argparse action ``dest`` of the ``mapsage`` subcommand ``path`` (e.g. ``"runs", "list"``)."""
    from runners.cli import build_parser

    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return next(a for a in parser._actions if a.dest == dest)


def test_stage_kinds_come_from_the_registry():
    from mapsage.errors import UserError
    from runners import stages

    kinds = registries.STAGE_KINDS
    assert len(set(kinds)) == len(kinds)
    assert _choices(StageCfg, "kind") == kinds
    assert set(stages.STAGES) == set(kinds)                               # each kind runs, and no other
    for role in (registries.SEG_TRAINING_KINDS, registries.TRAINING_KINDS, registries.CHECKPOINT_REQUIRED_KINDS,
                 registries.CHECKPOINT_KINDS, registries.DECIDING_KINDS, registries.MODEL_KINDS,
                 registries.VAL_SPLIT_KINDS):
        assert set(role) <= set(kinds), role
    with pytest.raises(UserError, match="not in the registry"):
        stages.register("not_a_kind", "mapsage.demo_stage:run")
    assert "not_a_kind" not in stages.STAGES
    with pytest.raises(ConfigError, match=r"'stage.kind' must be one of \['train', .*'classify'\].*did you mean 'train'"):
        load_config(TEMPLATE, ["stage.kind=trian"])
    assert _cli_action("runs", "list", dest="kind").choices == kinds      # mapsage runs list --kind


def test_stage_kind_roles_are_read_not_respelled():
    from app.widgets import decisions, deliver, knobs
    from runners import validate
    from store import ranked

    assert decisions.DECIDING_KINDS is ranked.DECIDING_KINDS is registries.DECIDING_KINDS
    assert all(f"'{k}'" in ranked.ROLES_SQL for k in registries.DECIDING_KINDS)
    assert deliver.MODEL_KINDS is registries.MODEL_KINDS
    assert knobs.TRAIN_KINDS is validate.TRAIN_KINDS is registries.SEG_TRAINING_KINDS


def test_sweep_metrics_come_from_the_registry():
    from app.widgets import sweep_form

    seg, cls = metric_names.SWEEP_METRICS["segmentation"], metric_names.SWEEP_METRICS["classification"]
    assert (seg, cls) == (metric_names.SWEEP_METRICS_SEG, metric_names.SWEEP_METRICS_CLS)
    assert set(seg) | set(cls) <= set(metric_names.METRICS) and not set(seg) & set(cls)
    assert set(cls) <= set(metric_names.CLASSIFICATION)
    assert _choices(SweepCfg, "metric") == seg + cls
    assert sweep_form.METRICS == list(seg)                                 # the knob form's sweep part
    with pytest.raises(ConfigError, match=f"segmentation sweep reports {seg[0]}, "):
        load_config(TEMPLATE, [f"sweep.metric={cls[0]}"])


def test_sweep_samplers_pruners_and_parameter_types_come_from_the_registry():
    """The schema, the two sweep forms and the Optuna builders read one list each: every name builds, in order."""
    import optuna

    from app.widgets import sweep_form
    from mapsage.sweep.space import parse_space
    from mapsage.sweep.study import make_pruner, make_sampler

    assert _choices(SweepCfg, "sampler") == registries.SWEEP_SAMPLERS
    assert _choices(SweepCfg, "pruner") == registries.SWEEP_PRUNERS
    assert (sweep_form.SAMPLERS, sweep_form.PRUNERS, sweep_form.TYPES) == (
        list(registries.SWEEP_SAMPLERS), list(registries.SWEEP_PRUNERS), list(registries.SWEEP_PARAM_TYPES))
    assert (SweepCfg().sampler, SweepCfg().pruner) == (registries.SWEEP_SAMPLERS[0], registries.SWEEP_PRUNERS[0])
    params = parse_space({"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                          "train.batch_size": {"type": "int", "low": 2, "high": 4},
                          "augment.crop_size": {"type": "choice", "values": [64, 96]}})
    assert tuple(p.type for p in params) == registries.SWEEP_PARAM_TYPES
    samplers = [make_sampler(SweepCfg(sampler=name, parameters={"augment.crop_size": [64, 96]}),
                             params[2:]) for name in registries.SWEEP_SAMPLERS]
    assert [type(s) for s in samplers] == [optuna.samplers.TPESampler, optuna.samplers.RandomSampler,
                                           optuna.samplers.GridSampler]
    pruners = [make_pruner(SweepCfg(pruner=name)) for name in registries.SWEEP_PRUNERS]
    assert [type(p) for p in pruners] == [optuna.pruners.MedianPruner, optuna.pruners.SuccessiveHalvingPruner,
                                          optuna.pruners.NopPruner]


def test_metric_groups_and_the_cli_read_the_metric_registry():
    from store import queries, scores

    assert set(metric_names.HEADLINE) <= set(metric_names.METRICS)
    assert set(metric_names.CLASSIFICATION) <= set(metric_names.METRICS)
    assert scores.METRICS == metric_names.HEADLINE
    assert set(queries.METRICS) | set(queries.JSON_METRICS) == set(metric_names.METRICS)
    assert not set(queries.METRICS) & set(queries.JSON_METRICS)
    assert _cli_action("runs", "score", dest="metric").choices == metric_names.HEADLINE
    for sub in ("list", "compare"):
        assert tuple(_cli_action("groups", sub, dest="metric").choices) == tuple(metric_names.METRICS)


def test_verdicts_come_from_the_registry():
    from app.widgets import review_tiles
    from store import queries, review

    assert review.VERDICTS is review_tiles.VERDICTS is queries.VERDICTS is registries.VERDICTS
    assert len(set(registries.VERDICTS)) == len(registries.VERDICTS) == 3


# ----------------------------------------------------------------------------------------------------------------
# no second list: a literal tuple/list/set of three or more names of one vocabulary outside its registry

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("mapsage", "store", "runners", "app")
REGISTRY_MODULES = {"mapsage/registries.py", "mapsage/metric_names.py"}
# literals that name a handful of figures for a reason of their own, or sit in code another change owns; each is
# (file, the literal's names in order). A new literal, or one of these moved to another file, fails the test.
ALLOWED = {
    # the figures a golden metric case pins (health check), not a list of the vocabulary
    ("mapsage/health/metric_check.py", ("miou", "macc", "aacc")),
}


def _vocabularies() -> dict[str, frozenset]:
    return {"stage kinds": frozenset(registries.STAGE_KINDS), "metric names": frozenset(metric_names.METRICS),
            "verdicts": frozenset(registries.VERDICTS), "architectures": frozenset(registries.ARCH_NAMES),
            "loss terms": frozenset(registries.LOSS_TERMS),
            "experiment columns": frozenset(registries.EXPERIMENT_COLUMNS),
            "sweep samplers": frozenset(registries.SWEEP_SAMPLERS), "sweep pruners": frozenset(registries.SWEEP_PRUNERS),
            "sweep parameter types": frozenset(registries.SWEEP_PARAM_TYPES)}


def _second_lists(source: str, rel: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.Tuple, ast.List, ast.Set)) or len(node.elts) < 3:
            continue
        if not all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            continue
        names = tuple(e.value for e in node.elts)
        for vocab, known in _vocabularies().items():
            if set(names) <= known and (rel, names) not in ALLOWED:
                found.append(f"{rel}:{node.lineno}: {list(names)} re-lists {vocab}")
    return found


def test_the_scan_finds_a_second_list():
    src = 'KINDS = ("train", "distill", "classify")\nok = ("train", "x", "distill")\nif m in ["miou", "mbiou", "mf1"]: pass\n'
    assert [f.split(": ", 1)[0] for f in _second_lists(src, "x.py")] == ["x.py:1", "x.py:3"]


def test_no_vocabulary_is_listed_twice():
    found = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in REGISTRY_MODULES:
                found += _second_lists(path.read_text(encoding="utf-8"), rel)
    assert not found, "read the registry (mapsage/registries.py, mapsage/metric_names.py) instead:\n" + "\n".join(found)
