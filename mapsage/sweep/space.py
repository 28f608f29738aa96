"""The search space of a ``sweep:`` block and how sampled values land in a config.

A parameter is a dotted config key (numeric parts index lists: ``loss.schedule.0.terms.dice``) mapped to

* ``{type: float, low, high, log: false, step: null}`` or ``{type: int, low, high, log: false, step: 1}``
* ``{type: choice, values: [...]}`` (a plain YAML list means the same)

A scalar sampled for a key whose current value is a list of two numbers (``augment.crop_size``) is set as
``[v, v]`` (a square crop). Torch-free."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError


class SweepSpaceError(UserError):
    pass


@dataclass
class Param:
    key: str
    type: str                      # float | int | choice
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    values: list = field(default_factory=list)

    def grid_values(self) -> list:
        if self.type == "choice":
            return list(self.values)
        if self.type == "int":
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.step:
            n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
            return [round(self.low + i * self.step, 12) for i in range(n)]
        raise SweepSpaceError(f"sweep.parameters.{self.key}: a grid needs discrete values; give `step` or use "
                              f"{{type: choice, values: [...]}}")


def _num(key: str, name: str, v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise SweepSpaceError(f"sweep.parameters.{key}.{name} must be a number, got {v!r}") from None


def parse_space(parameters: dict[str, Any]) -> list[Param]:
    """Validate ``sweep.parameters`` into :class:`Param` objects (one-line errors naming the key)."""
    if not parameters:
        raise SweepSpaceError("sweep.parameters is empty; add at least one dotted config key, e.g. "
                              "`train.lr: {type: float, low: 1e-4, high: 1e-2, log: true}`")
    out = []
    for key, spec in parameters.items():
        if isinstance(spec, list):
            spec = {"type": "choice", "values": spec}
        if not isinstance(spec, dict):
            raise SweepSpaceError(f"sweep.parameters.{key}: expected {{type: float|int|choice, ...}} or a list of "
                                  f"values, got {spec!r}")
        kind = str(spec.get("type", "choice" if "values" in spec else "float")).lower()
        unknown = set(spec) - {"type", "low", "high", "log", "step", "values"}
        if unknown:
            raise SweepSpaceError(f"sweep.parameters.{key}: unknown field(s) {sorted(unknown)}; use type, low, "
                                  f"high, log, step or values")
        if kind in ("choice", "categorical"):
            values = spec.get("values")
            if not isinstance(values, list) or not values:
                raise SweepSpaceError(f"sweep.parameters.{key}: a choice needs a non-empty `values` list")
            out.append(Param(key, "choice", values=list(values)))
            continue
        if kind not in ("float", "int"):
            raise SweepSpaceError(f"sweep.parameters.{key}.type must be float, int or choice, got {kind!r}")
        if "low" not in spec or "high" not in spec:
            raise SweepSpaceError(f"sweep.parameters.{key}: a {kind} range needs `low` and `high`")
        low, high = _num(key, "low", spec["low"]), _num(key, "high", spec["high"])
        if not low < high:
            raise SweepSpaceError(f"sweep.parameters.{key}: low ({low}) must be below high ({high})")
        log = bool(spec.get("log", False))
        if log and low <= 0:
            raise SweepSpaceError(f"sweep.parameters.{key}: a log range needs low > 0, got {low}")
        step = spec.get("step")
        step = None if step is None else _num(key, "step", step)
        if log and step:
            raise SweepSpaceError(f"sweep.parameters.{key}: `log` and `step` cannot be combined (Optuna)")
        if kind == "int" and (low != int(low) or high != int(high)):
            raise SweepSpaceError(f"sweep.parameters.{key}: int bounds must be whole numbers")
        out.append(Param(key, kind, low=low, high=high, log=log, step=step))
    return out


def grid_space(params: list[Param]) -> dict[str, list]:
    return {p.key: p.grid_values() for p in params}


def grid_size(params: list[Param]) -> int:
    n = 1
    for p in params:
        n *= len(p.grid_values())
    return n


def suggest(trial, params: list[Param], grid: bool = False) -> dict[str, Any]:
    """Draw one value per parameter on an Optuna ``trial`` (a grid draws every key as a categorical)."""
    out = {}
    for p in params:
        if grid or p.type == "choice":
            values = p.grid_values() if grid else p.values
            out[p.key] = trial.suggest_categorical(p.key, [_hashable(v) for v in values])
            out[p.key] = _unhashable(out[p.key])
        elif p.type == "int":
            out[p.key] = trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            out[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
    return out


def _hashable(v):
    """Optuna's categorical values must be None/bool/int/float/str: a list (``[256, 256]``) travels as text."""
    if isinstance(v, (list, tuple, dict)):
        import json

        return json.dumps(v)
    return v


def _unhashable(v):
    if isinstance(v, str) and v[:1] in "[{":
        import json

        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``key`` (dots; numeric parts index lists) in a plain config dict; unknown paths are a one-line
    error."""
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, key, parts[:i + 1])
    last = parts[-1]
    if isinstance(node, list):
        idx = _index(node, last, key)
        old = node[idx]
        node[idx] = _shape_like(old, value)
        return
    if not isinstance(node, dict):
        raise SweepSpaceError(f"sweep.parameters.{key}: '{'.'.join(parts[:-1])}' is a value, not a section")
    old = node.get(last)
    node[last] = _shape_like(old, value)


def _child(node: Any, part: str, key: str, path: list[str]) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, key)]
    if isinstance(node, dict):
        if part not in node or node[part] is None:
            raise SweepSpaceError(f"sweep.parameters.{key}: the config has no section '{'.'.join(path)}' "
                                  f"(check the key against `mapsage config show`)")
        return node[part]
    raise SweepSpaceError(f"sweep.parameters.{key}: '{'.'.join(path[:-1])}' is a value, not a section")


def _index(node: list, part: str, key: str) -> int:
    try:
        idx = int(part)
    except ValueError:
        raise SweepSpaceError(f"sweep.parameters.{key}: '{part}' indexes a list; use a number") from None
    if not -len(node) <= idx < len(node):
        raise SweepSpaceError(f"sweep.parameters.{key}: index {idx} is outside the list of {len(node)}")
    return idx


def _shape_like(old: Any, value: Any) -> Any:
    if isinstance(old, list) and len(old) == 2 and not isinstance(value, (list, tuple)) \
            and all(isinstance(x, (int, float)) for x in old):
        return [value, value]
    return value


def apply_params(cfg_dict: dict, params: dict[str, Any]) -> dict:
    """A copy of the resolved config dict with the sampled ``params`` set."""
    data = copy.deepcopy(cfg_dict)
    for key, value in params.items():
        set_dotted(data, key, value)
    return data
