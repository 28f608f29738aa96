"""The plan's gate before training: stage-0 health checks must pass before a training stage is trusted.

:func:`gate_for` looks up the latest health run (``stage.kind: health``) on the same dataset (same ``dataset.name``
and resolved ``dataset.root``) in the workspace and says whether a training launch (kinds ``train`` / ``distill``)
may go ahead:

* ``passed`` -- its checks all pass (warnings pass too);
* ``failed`` -- a check failed (they are named) or the health run itself failed / died before finishing;
* ``missing`` -- no health run on this dataset; ``running`` -- one is queued or running.

The CLI (``mapsage run``) refuses a launch after a failed health run unless ``--no-health-gate`` is given (on a
terminal it asks instead) and prints a warning when none ever ran; the app asks for confirmation in both cases.
Torch-free: it reads run folders (``config.yaml``, event files) only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mapsage.config import load_config, resolve_path
from mapsage.events import FINAL_STATUSES
from mapsage.health.result import health_records
from mapsage.workspace import runs_dir

TRAINING_KINDS = ("train", "distill")


@dataclass
class GateResult:
    state: str                              # passed | failed | missing | running
    dataset: str
    run_id: Optional[str] = None
    failing: list[str] = field(default_factory=list)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "passed"

    @property
    def blocks(self) -> bool:
        return self.state == "failed"

    def message(self) -> str:
        if self.state == "passed":
            return f"health gate: the last health run on {self.dataset} ({self.run_id}) passed"
        if self.state == "missing":
            return (f"health gate: no health run on dataset {self.dataset} yet; the plan runs the stage-0 checks "
                    f"before training (launch configs/stage0_*/ first)")
        if self.state == "running":
            return (f"health gate: the health run {self.run_id} on {self.dataset} has not finished; its checks are "
                    f"not known yet")
        what = f"failing checks: {', '.join(self.failing)}" if self.failing else self.detail
        return (f"health gate: the last health run on dataset {self.dataset} ({self.run_id}) failed -- {what}; "
                f"fix the data or config and rerun the health checks")


def _same_dataset(a: dict, cfg) -> bool:
    ds = (a or {}).get("dataset") or {}
    if ds.get("name") != cfg.dataset.name:
        return False
    try:
        return Path(resolve_path(ds.get("root", ""))).resolve() == Path(resolve_path(cfg.dataset.root)).resolve()
    except (OSError, ValueError):
        return False


def health_runs(cfg) -> list[Path]:
    """Run folders of health runs on ``cfg``'s dataset, newest first."""
    import yaml

    root = runs_dir()
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        f = d / "config.yaml"
        if not f.is_file():
            continue
        try:
            data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        if ((data.get("stage") or {}).get("kind")) == "health" and _same_dataset(data, cfg):
            found.append((f.stat().st_mtime, d))
    return [d for _, d in sorted(found, key=lambda x: x[0], reverse=True)]


def evaluate(cfg) -> GateResult:
    """The gate's state for ``cfg``'s dataset (whatever ``cfg``'s kind)."""
    from runners import jobs
    name = cfg.dataset.name
    runs = health_runs(cfg)
    if not runs:
        return GateResult("missing", name)
    d = runs[0]
    rid = d.name
    status = (jobs.live_status(rid) or {}).get("status")
    if status not in FINAL_STATUSES:
        return GateResult("running", name, rid)
    records = health_records(d)
    failing = [r.get("check") for r in records if r.get("status") == "fail"]
    if failing:
        return GateResult("failed", name, rid, failing)
    if status != "succeeded":
        return GateResult("failed", name, rid, [], f"the health run ended '{status}' before its checks finished")
    return GateResult("passed", name, rid)


def gate_for(config_path, overrides: Optional[list[str]] = None) -> Optional[GateResult]:
    """The gate for launching ``config_path`` with ``overrides``; None when it is not a training stage."""
    cfg = load_config(config_path, list(overrides or []))
    if cfg.stage.kind not in TRAINING_KINDS:
        return None
    return evaluate(cfg)


def confirm_cli(config_path, overrides: Optional[list[str]] = None, stdin=None, err=None,
                deferred: Optional[list[str]] = None) -> bool:
    """``mapsage run``'s gate: True to launch. A failed health run asks on a terminal and refuses otherwise
    (``--no-health-gate`` skips the gate); a missing or unfinished one prints a warning only (or appends it to
    ``deferred``, for the caller to print once the launch itself has passed its checks)."""
    import sys
    stdin = stdin or sys.stdin
    err = err or sys.stderr
    gate = gate_for(config_path, overrides)
    if gate is None or gate.ok:
        return True
    if not gate.blocks:
        if deferred is not None:
            deferred.append(f"warning: {gate.message()}")
        else:
            print(f"warning: {gate.message()}", file=err)
        return True
    print(f"warning: {gate.message()}", file=err)
    if stdin is not None and hasattr(stdin, "isatty") and stdin.isatty():
        print("launch the training anyway? [y/N] ", end="", file=err, flush=True)
        answer = (stdin.readline() or "").strip().lower()
        return answer in ("y", "yes")
    print("not launched: pass --no-health-gate to launch anyway", file=err)
    return False
