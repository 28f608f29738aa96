""""Sweep these knobs over …": the part of a training template's launch form that starts an Optuna sweep instead of
one run. The sweep is the template with the form's knob overrides plus a ``sweep:`` block built from the rows of a
small table (dotted config key, float/int range or comma-separated choices) -- the same ``--set`` items
``mapsage sweep start TEMPLATE`` takes, handed to the same :func:`runners.sweep.start`, which writes
``workspace/sweeps/<id>/`` and starts the detached driver.

The pure half (``default_rows``, ``rows_to_parameters``, ``sweep_overrides``, ``cli_command``) has no Streamlit in
it and is unit-tested."""
from __future__ import annotations

import math
import shlex
from typing import Any, Iterable, Optional

import pandas as pd
import streamlit as st
import yaml

from mapsage.config import Config, ConfigError
from mapsage.config.core import parse_override
from mapsage.errors import UserError
from mapsage.metric_names import SWEEP_METRICS
from mapsage.registries import SWEEP_PARAM_TYPES, SWEEP_PRUNERS, SWEEP_SAMPLERS
from mapsage.sweep.space import parse_space
from runners import sweep as sweeps

from .common import show_error
from .knobs import KnobError, _norm, override

TYPES = list(SWEEP_PARAM_TYPES)
SAMPLERS = list(SWEEP_SAMPLERS)
PRUNERS = list(SWEEP_PRUNERS)
METRICS = list(SWEEP_METRICS["segmentation"])   # the knob form's sweep part is for segmentation training kinds
COLUMNS = ["sweep", "key", "type", "low", "high", "log", "values"]


def _sig(x: float) -> float:
    return float(f"{x:.3g}")


def default_rows(cfg: Config) -> list[dict]:
    """The knobs a training template is usually swept over, ranged around its own values: the learning rate
    (÷10 … ×10, log), the first loss phase's Dice weight (0 … 2.5), the crop size (choices up to the template's)
    -- ticked -- and the weight decay (unticked)."""
    lr = float(cfg.train.lr)
    crop = int(cfg.augment.crop_size[0])
    crops = sorted({max(32, int(round(crop * f / 32)) * 32) for f in (0.5, 0.75, 1.0)})
    rows = [{"sweep": True, "key": "train.lr", "type": "float", "low": _sig(lr / 10), "high": _sig(lr * 10),
             "log": True, "values": ""},
            {"sweep": True, "key": "loss.schedule.0.terms.dice", "type": "float", "low": 0.0, "high": 2.5,
             "log": False, "values": ""},
            {"sweep": True, "key": "augment.crop_size", "type": "choice", "low": None, "high": None, "log": False,
             "values": ", ".join(str(c) for c in crops)}]
    wd = float(getattr(cfg.train, "weight_decay", 0.0) or 0.0)
    if wd > 0:
        rows.append({"sweep": False, "key": "train.weight_decay", "type": "float", "low": _sig(wd / 10),
                     "high": _sig(wd * 10), "log": True, "values": ""})
    return rows


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _choice_value(text: str) -> Any:
    """``128`` -> 128, ``1e-4`` -> 0.0001, ``true`` -> True, ``mit_b0`` -> "mit_b0"."""
    t = text.strip()
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    return t


def rows_to_parameters(rows: Iterable[dict]) -> dict[str, dict]:
    """The ticked rows as ``sweep.parameters`` (checked with :func:`mapsage.sweep.space.parse_space`). A row
    without a ``sweep`` column counts as ticked. One-line errors name the row's key."""

    params: dict[str, dict] = {}
    for row in rows:
        if row is None or _blank(row.get("key")):
            continue
        tick = row.get("sweep", True)
        if not _blank(tick) and not bool(tick):
            continue
        key = str(row["key"]).strip()
        kind = str(row.get("type") or "float").strip().lower()
        if kind not in TYPES:
            raise KnobError(f"sweep row '{key}': type must be float, int or choice, got {kind!r}")
        if key in params:
            raise KnobError(f"sweep row '{key}': the key is listed twice")
        if kind == "choice":
            vals = [_choice_value(v) for v in str(row.get("values") or "").split(",") if v.strip()]
            if not vals:
                raise KnobError(f"sweep row '{key}': a choice needs values separated by commas, e.g. 128, 192, 256")
            params[key] = {"type": "choice", "values": vals}
            continue
        if _blank(row.get("low")) or _blank(row.get("high")):
            raise KnobError(f"sweep row '{key}': a {kind} range needs low and high")
        low, high = float(row["low"]), float(row["high"])
        if kind == "int":
            low, high = int(low), int(high)
        params[key] = {"type": kind, "low": low, "high": high, "log": bool(row.get("log") or False)}
    if not params:
        raise KnobError("sweep: tick at least one knob to sweep (a row with a key and a range or choices)")
    parse_space(params)
    return params


def sweep_overrides(params: dict, n_trials: int, sampler: str = "tpe", pruner: str = "median", min_epochs: int = 1,
                    metric: str = "miou", max_wall_h: Optional[float] = None, parallel: int = 0) -> list[str]:
    """``--set`` items of the ``sweep:`` block (each checked to read back as itself)."""
    if int(n_trials) < 1:
        raise KnobError(f"sweep.n_trials must be at least 1, got {n_trials}")
    out = [_space_override(params), override("sweep.n_trials", int(n_trials)),
           override("sweep.sampler", sampler), override("sweep.pruner", pruner),
           override("sweep.min_epochs", int(min_epochs)), override("sweep.metric", metric)]
    if max_wall_h:
        out.append(override("sweep.max_wall_h", float(max_wall_h)))
    if parallel:
        out.append(override("sweep.parallel", int(parallel)))
    return out


def _space_override(params: dict) -> str:
    """``sweep.parameters={...}`` in YAML flow style (JSON would write 6e-05, which YAML reads as text), checked
    to read back as ``params``."""


    item = "sweep.parameters=" + yaml.safe_dump(params, default_flow_style=True, sort_keys=False,
                                                width=1 << 30).strip()
    if _norm(parse_override(item)[1]) != _norm(params):
        raise KnobError(f"sweep.parameters: {params!r} does not survive as an override ({item!r})")
    return item


def cli_command(template_rel: str, overrides: list[str]) -> str:
    return f"mapsage sweep start {shlex.quote(template_rel)}" + "".join(f" \\\n  --set {shlex.quote(o)}"
                                                                         for o in overrides)


# ------------------------------------------------------------------------------------------------------------
# Streamlit


def fields(key: str, cfg: Config) -> dict:
    """Draw the sweep part inside the template's ``st.form``; returns its values and ``go`` (its button)."""
    with st.expander("Sweep these knobs over … (Optuna: every trial is a run of this form's settings)",
                     icon=":material/tune:"):
        st.caption("Tick the knobs to sweep; a dotted config key per row (`train.lr`, "
                   "`loss.schedule.0.terms.dice`, `augment.crop_size`, `model.encoder` …), a float/int range "
                   "(`log` for a log scale) or comma-separated choices. Trial values are the best validation epoch; "
                   "the pruner stops unpromising trials (status `pruned`).")
        space = st.data_editor(
            pd.DataFrame(default_rows(cfg), columns=COLUMNS), key=f"{key}:sweep_space", num_rows="dynamic",
            hide_index=True, width="stretch", placeholder="–",
            column_config={"sweep": st.column_config.CheckboxColumn("sweep", default=True),
                           "key": st.column_config.TextColumn("config key", required=True),
                           "type": st.column_config.SelectboxColumn("type", options=TYPES, default="float"),
                           "low": st.column_config.NumberColumn("low", format="%g"),
                           "high": st.column_config.NumberColumn("high", format="%g"),
                           "log": st.column_config.CheckboxColumn("log", default=False),
                           "values": st.column_config.TextColumn("choices (comma-separated)")})
        c1, c2, c3, c4, c5, c6 = st.columns(6)
        out = {
            "rows": space.to_dict("records") if isinstance(space, pd.DataFrame) else list(space or []),
            "n_trials": int(c1.number_input("Trials", 1, 10000, 12, key=f"{key}:sweep_n", help="sweep.n_trials")),
            "sampler": c2.selectbox("Sampler", SAMPLERS, key=f"{key}:sweep_sampler", help="sweep.sampler"),
            "pruner": c3.selectbox("Pruner", PRUNERS, key=f"{key}:sweep_pruner", help="sweep.pruner"),
            "min_epochs": int(c4.number_input("Epochs before pruning", 0, 10000, 1, key=f"{key}:sweep_min_ep",
                                              help="sweep.min_epochs")),
            "parallel": int(c5.number_input("Trials at once (0 = free slots)", 0, 1000, 0,
                                            key=f"{key}:sweep_parallel", help="sweep.parallel")),
            "max_wall_h": float(c6.number_input("Wall-clock budget (h, 0 = none)", 0.0, 10000.0, 0.0, step=0.5,
                                                key=f"{key}:sweep_wall", help="sweep.max_wall_h")),
            "metric": st.selectbox("Metric (validation, per epoch; maximised)",
                                   list(SWEEP_METRICS.get(cfg.task, METRICS)), key=f"{key}:sweep_metric",
                                   help="sweep.metric"),
        }
        out["go"] = st.form_submit_button("Start sweep", icon=":material/tune:",
                                          help="start the sweep's driver (detached): it launches the trials as "
                                               "ordinary runs, as many at once as the scheduler has slots")
    return out


def start(template_rel: str, template_path, overrides: list[str], spec: dict) -> Optional[dict]:
    """Start the sweep (the driver detached) through :func:`runners.sweep.start`; errors are shown. Returns
    ``{sweep_id, command, n_trials, keys, sampler, pruner}`` or None."""


    try:
        params = rows_to_parameters(spec["rows"])
        extra = sweep_overrides(params, spec["n_trials"], spec["sampler"], spec["pruner"], spec["min_epochs"],
                                spec["metric"], spec.get("max_wall_h"), spec.get("parallel", 0))
        every = list(overrides) + extra
        sid = sweeps.start(template_path, every, detach=True)
    except (UserError, ConfigError) as exc:
        show_error(exc, "Starting the sweep")
        return None
    return {"sweep_id": sid, "command": cli_command(template_rel, every), "n_trials": spec["n_trials"],
            "keys": list(params), "sampler": spec["sampler"], "pruner": spec["pruner"]}
