"""Config loading: YAML files with ``_base_`` inheritance, dotted overrides, typed validation.

Rules (mmsegmentation's spirit):

* ``_base_`` is a path or a list of paths, relative to the file that names them. Bases are merged left to right,
  then the file itself is merged on top.
* Merging is deep for mappings; lists and scalars are replaced. A mapping that contains ``_replace_: true``
  replaces the inherited sub-tree whole instead of being merged into it.
* Overrides are ``dotted.key=value`` strings; the value is parsed as YAML (``2``, ``1e-4``, ``[0.75, 1.0]``,
  ``null``, ``true``).
* Validation turns the merged mapping into the dataclasses of :mod:`mapsage.config.schema`. An unknown key is an
  error naming the file it came from, the full key path and the nearest valid key.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import subprocess
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from ..errors import UserError

BASE_KEY = "_base_"
REPLACE_KEY = "_replace_"


class ConfigError(UserError, ValueError):
    """A configuration problem, with the file and key path it concerns and how to fix it (a ``ValueError`` too,
    for callers that validate values)."""


# --------------------------------------------------------------------------------------------------------------
# Loading and merging


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:  # pragma: no cover - message passthrough
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level of a config must be a mapping, got {type(data).__name__}")
    return data


def _merge(dst: dict, src: dict, origins: dict, src_name: str, prefix: str = "") -> dict:
    """Deep-merge ``src`` into ``dst`` (in place) and record which file set each key path."""
    for key, value in src.items():
        if key == REPLACE_KEY:
            continue
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            replace = bool(value.get(REPLACE_KEY, False))
            if replace or not isinstance(dst.get(key), dict):
                dst[key] = {}
                for k in [o for o in origins if o == path or o.startswith(path + ".")]:
                    del origins[k]
            origins[path] = src_name
            _merge(dst[key], value, origins, src_name, path + ".")
        else:
            dst[key] = value
            for k in [o for o in origins if o.startswith(path + ".")]:
                del origins[k]
            origins[path] = src_name
    return dst


def load_raw(path: str | Path, _seen: tuple = ()) -> tuple[dict, dict]:
    """Resolve ``_base_`` inheritance of one file. Returns (merged mapping, origin of each key path)."""
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise ConfigError(f"{path}: circular _base_ inheritance: {chain}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list):
        raise ConfigError(f"{path}: {BASE_KEY} must be a path or a list of paths")
    merged: dict = {}
    origins: dict = {}
    for base in bases:
        base_path = (path.parent / base).resolve()
        if not base_path.exists():
            raise ConfigError(f"{path}: {BASE_KEY} entry '{base}' not found (looked at {base_path})")
        base_data, base_origins = load_raw(base_path, (*_seen, path))
        _merge(merged, base_data, origins, str(base_path))
        # keep the deeper origin information of the base
        for k, v in base_origins.items():
            if k in origins:
                origins[k] = v
    _merge(merged, data, origins, str(path))
    return merged, origins


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: an override must look like key.path=value (e.g. train.epochs=2)")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key path")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(data: dict, origins: dict, overrides: list[str] | None) -> dict:
    for item in overrides or []:
        key, value = parse_override(item)
        parts = key.split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                if part in node and node[part] is not None:
                    raise ConfigError(
                        f"--set {item}: '{'.'.join(parts[:i + 1])}' is a value, not a section; cannot set '{key}'"
                    )
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
        for k in [o for o in origins if o.startswith(key + ".")]:
            del origins[k]
        origins[key] = "--set"
    return data


# --------------------------------------------------------------------------------------------------------------
# Validation into dataclasses


def _origin_of(origins: dict, path: str) -> str:
    probe = path
    while probe:
        if probe in origins:
            return origins[probe]
        probe = probe.rpartition(".")[0]
    return "<config>"


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        return f"list of {_type_name(inner)}"
    if origin is dict:
        args = get_args(tp) or (str, Any)
        return f"mapping of {_type_name(args[1])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str, origins: dict) -> Any:
    where = _origin_of(origins, path)
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            hint = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"{where}: '{path}' must be one of {list(allowed)}, got {value!r}{extra}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: '{path}' must not be null (expected {_type_name(tp)})")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path, origins)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{where}: '{path}' must be {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{path}' must be a section (mapping), got {value!r}")
        return _build(tp, value, path, origins)
    if origin is list or tp is list:
        args = get_args(tp)
        inner = args[0] if args else Any
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: '{path}' must be a list ({_type_name(tp)}), got {value!r}")
        return [_convert(v, inner, f"{path}[{i}]", origins) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        args = get_args(tp)
        ktp, vtp = args if args else (Any, Any)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{path}' must be a mapping, got {value!r}")
        return {_convert(k, ktp, f"{path}.<key>", origins): _convert(v, vtp, f"{path}.{k}", origins)
                for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: '{path}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: '{path}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{where}: '{path}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{where}: '{path}' must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: dict, prefix: str, origins: dict):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            valid = sorted(n for n, f in fields.items() if not is_internal(f))
            near = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
            where = _origin_of(origins, path)
            hint = (f"did you mean '{prefix + '.' if prefix else ''}{near[0]}'?" if near
                    else f"valid keys here: {', '.join(valid)}")
            raise ConfigError(f"{where}: unknown config key '{path}'; {hint}")
        kwargs[key] = _convert(value, hints[key], path, origins)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        raise ConfigError(f"{_origin_of(origins, prefix)}: section '{prefix or '<root>'}' is missing required "
                          f"key(s) {missing}") from exc
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"{_origin_of(origins, prefix)}: '{prefix or '<root>'}': {exc}") from exc
    return obj


INTERNAL = "internal"


def is_internal(f: dataclasses.Field) -> bool:
    """An internal test hook (``field(metadata={"internal": True})``): accepted in a config, but not part of the
    schema users see."""
    return bool(f.metadata.get(INTERNAL))


def _at_default(f: dataclasses.Field, value: Any) -> bool:
    if f.default is not dataclasses.MISSING:
        return value == f.default
    if f.default_factory is not dataclasses.MISSING:
        return value == f.default_factory()
    return False


def public_fields(cls_or_obj: Any) -> list[str]:
    """The field names of a config section users see (internal test hooks left out)."""
    return [f.name for f in dataclasses.fields(cls_or_obj) if not is_internal(f)]


def to_dict(obj: Any) -> Any:
    """A plain (YAML/JSON-able) copy of a config dataclass tree. Internal test hooks appear only where set to
    something other than their default (so a resolved config shows the schema users see)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (is_internal(f) and _at_default(f, getattr(obj, f.name)))}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def config_hash(obj: Any) -> str:
    """A deterministic 12-hex-digit hash of the resolved config (key order and file layout do not matter)."""
    payload = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


def git_commit(cwd: str | Path | None = None) -> str:
    """The code's commit id (with ``+dirty`` when the tree has changes), or ``unversioned``."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "") if sha else "unversioned"
    except (OSError, subprocess.SubprocessError):
        return "unversioned"
