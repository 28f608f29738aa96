"""The health stage as a job: ``run(ctx)`` writes one ``health`` event per check, prints the check table to stdout
and into a ``log`` event (which ``mapsage run --wait`` shows in the terminal), passes with warnings and fails the
job only when a check fails. The slow test runs the bundled demo template end to end through the command line and
finds every check passed in the store."""
from __future__ import annotations

import signal

import pytest

from mapsage.events import EventWriter, read_events
from mapsage.health import HealthChecksFailed, print_run_health, run
from mapsage.stage import StageContext
from tests.support.health import HEALTH_DUBAI, PROJECT_ROOT, dubai_cfg

DEMO_TRAIN = PROJECT_ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml"


def _ctx(cfg, tmp_path, rid="health-test"):
    rdir = tmp_path / rid
    return StageContext(cfg=cfg, run_id=rid, run_dir=rdir, events=EventWriter(rdir), heartbeat_every_s=0.0)


def test_stage_writes_events_prints_the_table_and_passes_with_a_warning(tmp_path, capsys):
    cfg = dubai_cfg("health.checks=[metric, normalisation]",
                    "model.mean=[0.5,0.5,0.5]", "model.std=[0.5,0.5,0.5]")   # an override: a warning, not a failure
    ctx = _ctx(cfg, tmp_path)
    run(ctx)                                                                # no exception: the job succeeds
    out = capsys.readouterr().out
    assert "health PASSED: 1 pass, 1 warn, 0 fail" in out
    records = read_events(ctx.run_dir / "events.jsonl")[0]
    health = [r for r in records if r["type"] == "health"]
    assert [(r["check"], r["status"]) for r in health] == [("metric", "pass"), ("normalisation", "warn")]
    assert all(r["verdict"] and isinstance(r["evidence"], dict) for r in health)
    logs = [r for r in records if r["type"] == "log"]
    assert logs and "health PASSED" in logs[-1]["message"] and "normalisation" in logs[-1]["message"]
    beats = [r for r in records if r["type"] == "heartbeat" and r.get("progress")]
    assert beats and beats[-1]["progress"]["frac"] == 1.0
    assert print_run_health(ctx.run_dir) is True
    assert "normalisation" in capsys.readouterr().out


def test_stage_fails_the_job_when_a_check_fails(tmp_path, capsys):
    final = tmp_path / "evaluate_whole.yaml"
    final.write_text(f"_base_: {DEMO_TRAIN}\nstage: {{kind: evaluate, plan_stage: 3}}\neval: {{mode: whole}}\n")
    cfg = dubai_cfg("health.checks=[metric, eval_consistency]", f"health.eval_configs=[{final}]")
    ctx = _ctx(cfg, tmp_path)
    with pytest.raises(HealthChecksFailed, match=r"1 of 2 health check\(s\) failed: eval_consistency"):
        run(ctx)
    out = capsys.readouterr().out
    assert "health FAILED: 1 pass, 0 warn, 1 fail" in out
    assert "window.mode: validation slide vs final whole" in out


@pytest.mark.slow
def test_demo_health_job_passes_end_to_end_through_the_cli(tmp_workspace, monkeypatch, capsys):
    """``mapsage run configs/stage0_health/health_dubai.yaml --wait``: the worker process runs all nine checks on
    the demo recipe; the terminal shows the table; every check is in the store as passed."""
    import store
    from runners import api, cli, procs, scheduler
    from store import schema as store_schema

    monkeypatch.setenv("MAPSAGE_GPUS", "none")
    monkeypatch.setenv("MAPSAGE_HEARTBEAT_S", "1")
    store_schema.forget_checked()
    api._last_refresh = 0.0
    try:
        code = cli.main(["run", str(HEALTH_DUBAI), "--set", "runtime.threads=1", "--wait"])
        captured = capsys.readouterr()
        assert code == 0, captured.err[-3000:]
        rid = captured.out.strip().splitlines()[0]
        assert "health PASSED: 9 pass, 0 warn, 0 fail" in captured.err       # the table, in the terminal
        for check in ("ids", "label_ids", "per_class", "normalisation", "alignment", "splits", "eval_consistency",
                      "metric", "sanity"):
            assert f"\n{check} " in captured.err
        rows = store.health(rid)
        assert sorted(rows["check_name"]) == sorted(["ids", "label_ids", "per_class", "normalisation", "alignment",
                                                     "splits", "eval_consistency", "metric", "sanity"])
        assert set(rows["status"]) == {"pass"}
    finally:
        for _rid, entry in scheduler.load_state()["active"].items():
            procs.signal_group(entry.get("pgid"), signal.SIGKILL)
