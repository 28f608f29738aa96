"""Each closed vocabulary is one list that the config schema, the code that implements it and the app read."""

from __future__ import annotations

import typing

import pytest

import store
from app.widgets import knobs, palette
from conftest_data import DUBAI_CONFIG as TEMPLATE
from mapsage import corruption_levels, metric_names, registries
from mapsage import palette as class_palette
from mapsage.config import ConfigError, load_config
from mapsage.config.schema import ModelCfg, ReliabilityCfg, TrainCfg
from mapsage.losses import TERMS
from mapsage.models import ARCHS
from mapsage.reliability import corruptions


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
    assert tuple(store.VERDICTS) == ("better", "worse", "same")
    assert palette.FALLBACK is class_palette.FALLBACK and palette.fallback_color is class_palette.fallback_color


def test_experiment_columns_come_from_the_registry():
    from mapsage.report import tables
    from runners import api
    from store import queries

    assert queries.EXPERIMENT_COLUMNS == tables.EXPERIMENT_COLUMNS == list(registries.EXPERIMENT_COLUMNS)
    template = next(t for t in api.list_templates() if not t["error"] and t["kind"] == "train")
    assert set(template["summary"]) <= set(registries.EXPERIMENT_COLUMNS) and template["summary"]
