"""Internal test hooks (``stage.demo_*``, used by the runner tests' ``demo_job``) are accepted in a config but are
not part of the schema users see: not in a resolved template, not in the keys an error message suggests."""
from __future__ import annotations

from pathlib import Path

import pytest

from mapsage.config import ConfigError, config_from_dict, load_config, to_dict
from mapsage.config.core import public_fields
from mapsage.config.schema import StageCfg

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "configs" / "stage1_baselines"


def _template() -> Path:
    return sorted(p for p in TEMPLATE.glob("*.yaml"))[0]


def test_resolved_template_shows_no_internal_hooks():
    d = to_dict(load_config(_template()))
    assert not [k for k in d["stage"] if k.startswith("demo_")], d["stage"]
    assert not [k for k in public_fields(StageCfg) if k.startswith("demo_")]
    assert {"kind", "plan_stage", "title", "checkpoint"} <= set(public_fields(StageCfg))


def test_unknown_key_suggestions_leave_the_hooks_out():
    d = to_dict(load_config(_template()))
    with pytest.raises(ConfigError) as exc:
        config_from_dict({**d, "stage": {**d["stage"], "zzz": 1}})
    assert "valid keys here" in str(exc.value) and "demo_" not in str(exc.value)


def test_a_hook_set_by_a_test_still_works_and_travels_with_the_run():
    d = to_dict(load_config(_template()))
    cfg = config_from_dict({**d, "stage": {**d["stage"], "kind": "demo_job", "demo_steps": 3,
                                           "demo_ignore_stop": True}})
    assert (cfg.stage.demo_steps, cfg.stage.demo_ignore_stop) == (3, True)
    again = to_dict(cfg)["stage"]      # the run's config.yaml snapshot: what the worker reloads
    assert again["demo_steps"] == 3 and again["demo_ignore_stop"] is True and "demo_fail_at" not in again
    assert config_from_dict({**d, "stage": again}).stage.demo_steps == 3
