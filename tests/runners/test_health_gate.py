"""The health gate before training: a training launch on a dataset whose last health run failed is refused by
``mapsage run`` (asked on a terminal; ``--no-health-gate`` skips it), one with no health run warns, and a passing
health run lets it through. The health runs are real (the ids check on the LoveDA sample tiles)."""
from __future__ import annotations

import io

import pytest

from tests.support.app import PROJECT_ROOT, run_in_process

HEALTH = "configs/stage0_health/health_loveda_samples.yaml"
TRAIN = PROJECT_ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_loveda-samples.yaml"
QUICK_HEALTH = ["health.checks=[ids]", "health.scan_max_masks=2", "runtime.device=cpu"]


class Tty(io.StringIO):
    def isatty(self):
        return True


def _runs(ws):
    return sorted(p.name for p in (ws / "runs").iterdir()) if (ws / "runs").is_dir() else []


def test_cli_gate_blocks_after_a_failed_health_run(tmp_workspace, capsys):
    from runners import cli
    from runners.health_gate import confirm_cli, gate_for

    g = gate_for(TRAIN)
    assert g.state == "missing"
    err = io.StringIO()
    assert confirm_cli(TRAIN, [], stdin=io.StringIO(), err=err) is True          # warns, launches
    assert "no health run on dataset" in err.getvalue()
    assert gate_for(HEALTH) is None                                               # not a training stage

    with pytest.raises(AssertionError):                                           # the health run fails
        run_in_process(HEALTH, QUICK_HEALTH + ["loss.ignore_index=0"])
    g = gate_for(TRAIN)
    assert g.state == "failed" and g.failing == ["ids"] and g.run_id
    assert "failing checks: ids" in g.message()

    err = io.StringIO()
    assert confirm_cli(TRAIN, [], stdin=io.StringIO(), err=err) is False         # no terminal: refused
    assert "--no-health-gate" in err.getvalue() and "failing checks: ids" in err.getvalue()
    assert confirm_cli(TRAIN, [], stdin=Tty("y\n"), err=io.StringIO()) is True   # a terminal asks
    assert confirm_cli(TRAIN, [], stdin=Tty("\n"), err=io.StringIO()) is False

    before = _runs(tmp_workspace)
    capsys.readouterr()
    assert cli.main(["run", str(TRAIN), "--set", "train.epochs=1"]) == 2
    out = capsys.readouterr()
    assert "failing checks: ids" in out.err and _runs(tmp_workspace) == before    # nothing queued

    run_in_process(HEALTH, QUICK_HEALTH)                                          # fixed: the checks pass
    g = gate_for(TRAIN)
    assert g.state == "passed" and g.ok
    assert confirm_cli(TRAIN, [], stdin=io.StringIO(), err=io.StringIO()) is True


def test_no_health_gate_flag_is_parsed():
    from runners.cli import build_parser
    args = build_parser().parse_args(["run", str(TRAIN), "--no-health-gate"])
    assert args.health_gate is False
    assert build_parser().parse_args(["run", str(TRAIN)]).health_gate is True
