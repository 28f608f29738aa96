"""The sweep driver: Optuna asks, the scheduler runs, Optuna is told.

``start(config, overrides)`` validates the ``sweep:`` block, creates ``workspace/sweeps/<sweep_id>/`` (the Optuna
study as a journal file, ``sweep.json`` with the driver's bookkeeping, ``driver.log``) and runs :func:`drive` --
in the foreground (the CLI's ``--wait``) or as a detached process that outlives the app. Each trial is an ordinary
run: the sweep's config with the sampled values set, ``sweep.id`` / ``sweep.trial`` / ``sweep.trial_id`` recorded
in its resolved config (the link the store and the app read), queued through :func:`runners.jobs.submit`. The
driver keeps as many trials in flight as the scheduler has free slots for them (``sweep.parallel`` overrides),
stops asking when the trial, wall-clock or GPU-hour budget is spent, and tells Optuna each trial's outcome:
its best reported epoch (``succeeded``), ``PRUNED`` (the run's status ``pruned``), or ``FAIL``.

Torch is never imported here; optuna is (lazily)."""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import yaml

from mapsage.config import Config, ConfigError, config_from_dict, load_config, run_name, to_dict
from mapsage.errors import UserError
from mapsage.events import EVENTS_FILE, FINAL_STATUSES, read_events
from mapsage.registries import TRAINING_KINDS
from mapsage.sweep.space import apply_params, grid_size, parse_space, suggest
from mapsage.sweep.study import create_study, load_study, sweep_dir, sweeps_dir
from mapsage.workspace import run_dir, workspace_root

from . import procs
from .scheduler import last_status, read_job
from .settings import load_settings

STATE_FILE = "sweep.json"
LOG_FILE = "driver.log"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class SweepNotFound(UserError):
    pass


# ---------------------------------------------------------------------------------------------------------------
# bookkeeping


def _state_path(sweep_id: str) -> Path:
    return sweep_dir(sweep_id) / STATE_FILE


def read_state(sweep_id: str) -> dict:
    path = _state_path(sweep_id)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepNotFound(f"no sweep {sweep_id!r} under {sweeps_dir()} (see `mapsage sweep list`)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable sweep state ({exc})") from exc


def _write_state(sweep_id: str, state: dict) -> None:
    path = _state_path(sweep_id)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def sweep_config(sweep_id: str) -> Config:
    path = sweep_dir(sweep_id) / "config.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return config_from_dict(data, {k: str(path) for k in data})


def list_sweeps() -> list[dict]:
    out = []
    root = sweeps_dir()
    for d in sorted(root.glob("*/" + STATE_FILE)) if root.is_dir() else []:
        try:
            st = json.loads(d.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        out.append({k: st.get(k) for k in ("sweep_id", "name", "status", "created_at", "ended_at", "n_trials",
                                          "sampler", "pruner", "metric", "direction", "config_source")}
                   | {"launched": len(st.get("trials", {}))})
    return sorted(out, key=lambda r: r.get("created_at") or 0, reverse=True)


# ---------------------------------------------------------------------------------------------------------------
# start


def prepare(config_path: str | Path, overrides: list[str] | None = None) -> tuple[Config, list]:
    """Load and check a sweep config: its search space, each key against the config (one trial config is built
    and validated), the stage kind."""
    cfg = load_config(config_path, overrides)
    if cfg.stage.kind not in TRAINING_KINDS:
        raise ConfigError(f"{config_path}: a sweep runs training trials ({', '.join(TRAINING_KINDS)}); "
                          f"stage.kind is {cfg.stage.kind!r}")
    params = parse_space(cfg.sweep.parameters)
    if cfg.sweep.sampler == "grid" and grid_size(params) < 1:
        raise ConfigError("sweep.parameters: the grid is empty")
    import optuna

    probe = optuna.trial.FixedTrial({p.key: (p.values[0] if p.type == "choice" else
                                             (int(p.low) if p.type == "int" else p.low)) for p in params})
    try:
        _trial_config(cfg, suggest(probe, params), "probe", 0, 0)
    except ConfigError as exc:
        raise ConfigError(f"sweep.parameters: a trial's config does not validate: {exc}") from exc
    return cfg, params


def _trial_config(cfg: Config, values: dict, sweep_id: str, number: int, trial_id: int) -> Config:
    data = to_dict(cfg)
    data = apply_params(data, values)
    data["sweep"].update(id=sweep_id, trial=int(number), trial_id=int(trial_id))
    meta = dict(data.get("meta") or {})
    for key in ("config_hash", "code_commit", "resolved_at", "run_name"):
        meta.pop(key, None)
    meta["sweep_params"] = {k: v for k, v in values.items()}
    data["meta"] = meta
    source = str(cfg.meta.get("source", "")) or "sweep"
    trial_cfg = config_from_dict(data, {k: source for k in data})
    base = run_name(trial_cfg) if not cfg.stage.name else cfg.stage.name
    trial_cfg.stage.name = f"{base}_t{int(number):02d}"
    return trial_cfg


def start(config_path: str | Path, overrides: list[str] | None = None, detach: bool = True,
          launcher: Optional[Callable[[Config], str]] = None, progress: Optional[Callable[[dict], None]] = None
          ) -> str:
    """Create the sweep and run its driver (detached: returns at once). Returns the sweep id."""
    cfg, params = prepare(config_path, overrides)
    name = (cfg.stage.name or run_name(cfg))[:80]
    sweeps_dir().mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        sweep_id = f"sweep_{name}_{time.strftime('%Y%m%d-%H%M%S')}_{secrets.token_hex(2)}"
        try:
            sweep_dir(sweep_id).mkdir()
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover
        raise UserError(f"{sweeps_dir()}: could not create a unique sweep folder")
    d = sweep_dir(sweep_id)
    (d / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True),
                                   encoding="utf-8")
    n_trials = int(cfg.sweep.n_trials)
    if cfg.sweep.sampler == "grid":
        n_trials = min(n_trials, grid_size(params))
    state = {"sweep_id": sweep_id, "name": name, "status": "running", "created_at": time.time(), "ended_at": None,
             "config_source": str(config_path), "overrides": list(overrides or []), "n_trials": n_trials,
             "sampler": cfg.sweep.sampler, "pruner": cfg.sweep.pruner, "metric": cfg.sweep.metric,
             "direction": cfg.sweep.direction, "parameters": [p.__dict__ for p in params], "trials": {},
             "driver": None, "message": ""}
    _write_state(sweep_id, state)
    create_study(sweep_id, cfg.sweep, params)
    if detach:
        spawn_driver(sweep_id)
    else:
        drive(sweep_id, launcher=launcher, progress=progress)
    return sweep_id


def spawn_driver(sweep_id: str) -> int:
    d = sweep_dir(sweep_id)
    env = dict(os.environ)

    env["MAPSAGE_WORKSPACE"] = str(workspace_root())
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    with open(d / LOG_FILE, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "runners.sweep", sweep_id], cwd=str(PROJECT_ROOT), env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    state = read_state(sweep_id)
    state["driver"] = {"pid": proc.pid, "ticks": procs.start_ticks(proc.pid), "host": procs.HOST,
                       "started_at": time.time()}
    _write_state(sweep_id, state)
    return proc.pid


# ---------------------------------------------------------------------------------------------------------------
# the loop


def free_slots(cfg: Config) -> int:
    """Trials the scheduler can run at once for this config (``sweep.parallel`` wins when set)."""
    if int(cfg.sweep.parallel) > 0:
        return int(cfg.sweep.parallel)
    s = load_settings()
    gpus = int(cfg.runtime.gpus)
    if gpus > 0 and s.gpus and (cfg.runtime.executor or s.executor) in (None, "local"):
        return max(1, len(s.gpus) // gpus)
    return max(1, int(s.cpu_jobs))


def _default_launcher(cfg: Config) -> str:
    from .jobs import submit

    return submit(cfg)


def _run_status(rid: str) -> str | None:
    return last_status(rid)[0]


class _Follower:
    """The last status of each trial's run, read incrementally from its event file (the driver polls while the
    trials train: re-parsing whole event files at every poll would take CPU from them)."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[int, str | None]] = {}

    def status(self, rid: str) -> str | None:
        offset, status = self.seen.get(rid, (0, None))
        records, offset = read_events(run_dir(rid) / EVENTS_FILE, offset)
        for r in records:
            if r.get("type") == "status":
                status = r.get("status")
        self.seen[rid] = (offset, status)
        return status


def _gpu_hours(state: dict, gpus: int, now: float) -> float:
    total = 0.0
    for t in state["trials"].values():
        started = read_job(t["run_id"]).get("started_at") if t.get("run_id") else None
        if started:
            total += (float(t.get("ended_at") or now) - float(started)) * max(1, gpus) / 3600.0
    return total


def _budget_left(cfg: Config, state: dict, now: float) -> str | None:
    """Why no further trial may start (None: budget left)."""
    if len(state["trials"]) >= int(state["n_trials"]):
        return f"trial budget spent ({state['n_trials']} trials)"
    if cfg.sweep.max_wall_h is not None and now - state["created_at"] >= cfg.sweep.max_wall_h * 3600:
        return f"wall-clock budget spent ({cfg.sweep.max_wall_h} h)"
    if cfg.sweep.max_gpu_h is not None and int(cfg.runtime.gpus) > 0 \
            and _gpu_hours(state, int(cfg.runtime.gpus), now) >= cfg.sweep.max_gpu_h:
        return f"GPU-hour budget spent ({cfg.sweep.max_gpu_h} GPU-h)"
    return None


def _tell(study, t: dict, status: str, direction: str) -> tuple[str, float | None]:
    import optuna
    from optuna.trial import TrialState

    frozen = next((ft for ft in study.get_trials(deepcopy=False) if ft.number == t["number"]), None)
    values = dict(frozen.intermediate_values) if frozen is not None else {}
    try:
        if status == "succeeded" and values:
            best = max(values.values()) if direction == "maximize" else min(values.values())
            study.tell(t["number"], best)
            return "complete", best
        if status == "pruned":
            study.tell(t["number"], state=TrialState.PRUNED)
            return "pruned", None
        study.tell(t["number"], state=TrialState.FAIL)
        return "fail", None
    except (RuntimeError, ValueError, optuna.exceptions.OptunaError):
        # told already (a restarted driver), or told and then the grid sampler's ``study.stop()`` complained
        # outside ``optimize``: the stored trial says what it is now
        frozen = next((ft for ft in study.get_trials(deepcopy=False) if ft.number == t["number"]), None)
        name = frozen.state.name.lower() if frozen is not None else "fail"
        if name == "complete":
            return "complete", frozen.value
        return (name if name in ("pruned", "fail") else "fail"), None


def drive(sweep_id: str, launcher: Optional[Callable[[Config], str]] = None, poll: float = 1.0,
          progress: Optional[Callable[[dict], None]] = None) -> dict:
    """Run the sweep to its end; returns the final state. Safe to call again on a sweep whose driver died (it
    picks up the trials in flight). Between checks it sleeps ``poll`` seconds; it follows the trials' event files
    incrementally and writes ``sweep.json`` only when something changed, and records its own CPU time
    (``driver_cpu_s``: what the driver took from the machine the trials run on)."""
    cpu0 = time.process_time()
    follow = _Follower()
    launcher = launcher or _default_launcher
    cfg = sweep_config(sweep_id)
    params = parse_space(cfg.sweep.parameters)
    study = load_study(sweep_id, cfg.sweep, params)
    stop = {"asked": False}

    def _on_signal(signum, _frame):
        stop["asked"] = True

    if launcher is _default_launcher:
        try:
            signal.signal(signal.SIGTERM, _on_signal)
        except ValueError:      # not the main thread
            pass
    state = read_state(sweep_id)
    state.update(status="running", message="")
    written = None
    slots = free_slots(cfg)
    from .scheduler import schedule

    while True:
        now = time.time()
        # settle the trials in flight
        for _key, t in state["trials"].items():
            if t.get("state") not in (None, "running"):
                continue
            if not t.get("run_id"):          # a driver that died between ask and launch: the trial never ran
                t.update(state=_tell(study, t, "refused", cfg.sweep.direction)[0], status="refused", ended_at=now)
                continue
            status = follow.status(t["run_id"])
            if status in FINAL_STATUSES:
                t["status"] = status
                t["ended_at"] = now
                t_tell = time.perf_counter()
                t["state"], t["value"] = _tell(study, t, status, cfg.sweep.direction)
                t["driver_s"] = float(t.get("driver_s") or 0.0) + time.perf_counter() - t_tell
                if progress:
                    progress(dict(t))
        in_flight = [t for t in state["trials"].values() if t.get("state") in (None, "running")]
        why = "cancelled on request" if stop["asked"] else _budget_left(cfg, state, now)
        if why is None and len(in_flight) < slots:
            t_ask = time.perf_counter()
            trial = study.ask()
            values = suggest(trial, params, grid=cfg.sweep.sampler == "grid")
            t = {"number": trial.number, "trial_id": trial._trial_id, "params": values, "launched_at": now,
                 "state": "running", "run_id": None, "status": "queued", "value": None}
            state["trials"][str(trial.number)] = t
            try:
                tcfg = _trial_config(cfg, values, sweep_id, trial.number, trial._trial_id)
                t["driver_s"] = time.perf_counter() - t_ask       # ask + sample + the trial's config
                t["run_id"] = launcher(tcfg)
            except UserError as exc:
                from optuna.trial import TrialState

                study.tell(trial.number, state=TrialState.FAIL)
                t.update(state="fail", status="refused", message=str(exc), ended_at=now)
            _write_state(sweep_id, state)
            written = json.dumps(state, sort_keys=True, default=str)
            continue            # fill every free slot before sleeping
        now_json = json.dumps(state, sort_keys=True, default=str)
        if now_json != written:
            _write_state(sweep_id, state)
            written = now_json
        if not in_flight and (why is not None):
            state["message"] = why
            break
        if stop["asked"]:
            from .jobs import cancel

            for t in in_flight:
                if t.get("run_id"):
                    try:
                        cancel(t["run_id"], wait_for_end=False)
                    except UserError:
                        pass
        schedule()
        time.sleep(poll)
    state["status"] = "cancelled" if stop["asked"] else "finished"
    state["ended_at"] = time.time()
    state["driver_cpu_s"] = float(state.get("driver_cpu_s") or 0.0) + time.process_time() - cpu0
    _write_state(sweep_id, state)
    return state


def resume(sweep_id: str) -> int:
    """Start a new driver for a sweep whose driver is gone (it picks up the trials in flight). Returns its pid."""
    state = read_state(sweep_id)
    drv = state.get("driver") or {}
    if drv.get("pid") and procs.pid_alive(drv["pid"], drv.get("ticks")):
        raise UserError(f"sweep {sweep_id}: its driver (pid {drv['pid']}) is still running")
    if state.get("status") == "finished":
        raise UserError(f"sweep {sweep_id} has finished; raise sweep.n_trials in a new sweep to go on")
    return spawn_driver(sweep_id)


def cancel(sweep_id: str) -> str:
    """Stop the sweep's driver (it cancels its trials in flight and records ``cancelled``)."""
    state = read_state(sweep_id)
    drv = state.get("driver") or {}
    if state.get("status") != "running":
        return state.get("status") or "?"
    if drv.get("pid") and procs.pid_alive(drv["pid"], drv.get("ticks")):
        os.kill(int(drv["pid"]), signal.SIGTERM)
        return "cancelling"
    state.update(status="cancelled", ended_at=time.time(), message="the driver was gone; marked cancelled")
    _write_state(sweep_id, state)
    return "cancelled"


# ---------------------------------------------------------------------------------------------------------------
# reading


def trials_frame(sweep_id: str):
    """One row per trial: number, run_id, state (complete | pruned | fail | running), run status, value (best
    reported epoch), epochs reported, the parameters (one column each, ``p:<key>``), best-so-far."""
    import pandas as pd

    state = read_state(sweep_id)
    cfg = sweep_config(sweep_id)
    try:
        study = load_study(sweep_id)
        frozen = {ft.number: ft for ft in study.get_trials(deepcopy=False)}
    except UserError:
        frozen = {}
    rows = []
    for key, t in sorted(state["trials"].items(), key=lambda kv: int(kv[0])):
        ft = frozen.get(int(key))
        inter = dict(ft.intermediate_values) if ft is not None else {}
        row = {"trial": int(key), "run_id": t.get("run_id"), "state": t.get("state"),
               "status": _run_status(t["run_id"]) if t.get("run_id") else t.get("status"),
               "value": t.get("value"), "epochs": len(inter),
               "last_reported": inter[max(inter)] if inter else None}
        for k, v in (t.get("params") or {}).items():
            row[f"p:{k}"] = json.dumps(v) if isinstance(v, (list, dict)) else v
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        better = max if cfg.sweep.direction == "maximize" else min
        best, out = None, []
        for v in df["value"]:
            if v is not None and v == v:
                best = v if best is None else better(best, v)
            out.append(best)
        df["best_so_far"] = out
    return df


def intermediate_frame(sweep_id: str):
    """Per trial and epoch: the reported value (for learning curves of the trials)."""
    import pandas as pd

    study = load_study(sweep_id)
    rows = [{"trial": ft.number, "epoch": int(step) + 1, "value": v, "state": ft.state.name.lower()}
            for ft in study.get_trials(deepcopy=False) for step, v in sorted(ft.intermediate_values.items())]
    return pd.DataFrame(rows, columns=["trial", "epoch", "value", "state"])


def importances(sweep_id: str) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) over the completed trials; {} with fewer than two."""
    import optuna
    from optuna.trial import TrialState

    study = load_study(sweep_id)
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if len(done) < 2 or len({json.dumps(t.params, sort_keys=True, default=str) for t in done}) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def best(sweep_id: str) -> dict:
    state = read_state(sweep_id)
    cfg = sweep_config(sweep_id)
    done = [t for t in state["trials"].values() if t.get("state") == "complete" and t.get("value") is not None]
    if not done:
        raise UserError(f"sweep {sweep_id}: no trial has completed yet; nothing to promote")
    pick = max if cfg.sweep.direction == "maximize" else min
    return pick(done, key=lambda t: t["value"])


def promote(sweep_id: str, out: str | Path | None = None) -> Path:
    """Write a template with the best trial's values: the sweep's config with those values set and the
    ``sweep:`` block reset. Validated by loading it back. Returns its path."""
    cfg = sweep_config(sweep_id)
    top = best(sweep_id)
    data = apply_params(to_dict(cfg), top["params"])
    data.pop("sweep", None)
    meta = {k: v for k, v in (data.get("meta") or {}).items()
            if k not in ("config_hash", "code_commit", "resolved_at", "run_name", "source")}
    meta.update(promoted_from_sweep=sweep_id, promoted_trial=top["number"], promoted_run=top.get("run_id"),
                promoted_value=top["value"], promoted_params=top["params"])
    data["meta"] = meta
    data["stage"]["name"] = None
    data["stage"]["title"] = f"Best of sweep {sweep_id} (trial {top['number']})"
    out = Path(out) if out else PROJECT_ROOT / "configs" / "sweeps" / f"{read_state(sweep_id)['name']}_best.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Promoted from sweep {sweep_id}: trial {top['number']} (run {top.get('run_id')}), "
              f"{cfg.sweep.metric} {top['value']:.4f}.\n# Values: "
              + ", ".join(f"{k}={v}" for k, v in top["params"].items()) + "\n")
    out.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    load_config(out)             # the template validates
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m runners.sweep SWEEP_ID", file=sys.stderr)
        return 2
    sweep_id = argv[0]
    print(f"[sweep driver {os.getpid()}] {time.strftime('%H:%M:%S')} driving {sweep_id}", flush=True)
    try:
        state = drive(sweep_id, progress=lambda t: print(
            f"[sweep driver] trial {t['number']} {t['state']} ({t['status']}) value={t.get('value')}", flush=True))
    except BaseException as exc:  # noqa: BLE001 - record why the driver ended
        try:
            st = read_state(sweep_id)
            st.update(status="failed", ended_at=time.time(), message=f"{type(exc).__name__}: {exc}")
            _write_state(sweep_id, st)
        finally:
            raise
    print(f"[sweep driver] {state['status']}: {state['message']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
