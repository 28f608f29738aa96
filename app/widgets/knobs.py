"""The key knobs of a template, editable before launch, turned into ``--set`` overrides.

The pure half (``defaults``, ``to_overrides``, the loss-schedule and TTA-variant conversions, ``parse_extra``) has
no Streamlit in it and is unit-tested; ``render`` draws the editors. Only knobs whose value differs from the
template become overrides, so a run launched with untouched knobs resolves to exactly the template's config.
Every override is validated by resolving the config with :func:`mapsage.config.load_config` before launch."""
from __future__ import annotations

import json
import math
import typing
from typing import Any, Iterable

import yaml

from mapsage.config import Config, ConfigError, load_config
from mapsage.config.core import parse_override
from mapsage.config.schema import ModelCfg
from mapsage.errors import UserError
from mapsage.registries import LOSS_TERMS as _LOSS_TERMS
from mapsage.registries import SEG_TRAINING_KINDS

LOSS_TERMS = list(_LOSS_TERMS)          # the loss-schedule editor's columns: every term loss.schedule accepts
ARCHS = list(typing.get_args(typing.get_type_hints(ModelCfg)["arch"]))

TRAIN_KINDS = SEG_TRAINING_KINDS        # segmentation training: its knobs and the sweep part of the form


class KnobError(UserError):
    """A knob value that cannot become a valid override; the message names the knob and the config key."""


# ------------------------------------------------------------------------------------------------------------
# value formatting


def format_value(value: Any) -> str:
    """A YAML value that ``--set`` parses back to ``value`` (flow style, one line)."""
    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value and "\n" not in value and value.strip() == value and value:
                return value
        except yaml.YAMLError:
            pass
        return json.dumps(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise KnobError(f"{value!r} is not a finite number")
        text = repr(value)
        return text
    return json.dumps(value, separators=(", ", ": "))


def override(key: str, value: Any) -> str:
    item = f"{key}={format_value(value)}"
    k, v = parse_override(item)          # round-trip check: what the CLI will read
    if _norm(v) != _norm(value):
        raise KnobError(f"{key}: the value {value!r} does not survive as an override ({item!r})")
    return item


def _norm(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 10)
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _norm(v) for k, v in value.items()}
    return value


# ------------------------------------------------------------------------------------------------------------
# loss schedule <-> editable rows


def schedule_to_rows(cfg: Config) -> list[dict]:
    rows = []
    for phase in cfg.loss.schedule:
        row = {"from_epoch": int(phase.from_epoch)}
        for term in LOSS_TERMS:
            row[term] = float(phase.terms.get(term, 0.0))
        rows.append(row)
    return rows


def rows_to_schedule(rows: Iterable[dict]) -> list[dict]:
    """Editable rows (from_epoch + one weight column per term) -> ``loss.schedule``. Zero or empty weights drop
    the term; rows without any weight are dropped; phases are sorted by ``from_epoch``."""
    out = []
    for row in rows:
        if row is None:
            continue
        raw_epoch = row.get("from_epoch")
        terms = {}
        for term in LOSS_TERMS:
            w = row.get(term)
            if w is None or (isinstance(w, float) and math.isnan(w)):
                continue
            w = float(w)
            if w < 0:
                raise KnobError(f"loss schedule: weight of '{term}' is negative ({w}); set loss.schedule "
                                f"weights >= 0")
            if w > 0:
                terms[term] = round(w, 6)
        if not terms:
            continue
        if raw_epoch is None or (isinstance(raw_epoch, float) and math.isnan(raw_epoch)):
            raise KnobError("loss schedule: every phase needs a from_epoch (loss.schedule[].from_epoch)")
        out.append({"from_epoch": int(raw_epoch), "terms": terms})
    if not out:
        raise KnobError("loss schedule: at least one phase with a positive weight is needed (loss.schedule)")
    out.sort(key=lambda p: p["from_epoch"])
    epochs = [p["from_epoch"] for p in out]
    if epochs[0] != 0:
        raise KnobError(f"loss schedule: the first phase must start at epoch 0, not {epochs[0]} "
                        f"(loss.schedule[0].from_epoch)")
    if len(set(epochs)) != len(epochs):
        raise KnobError(f"loss schedule: two phases start at the same epoch {epochs} (loss.schedule)")
    return out


def describe_schedule(schedule: list[dict]) -> str:
    parts = []
    for p in schedule:
        mix = " + ".join(f"{k.upper() if k == 'ce' else k.capitalize()} {v:g}" for k, v in p["terms"].items())
        parts.append(f"{mix} from epoch {p['from_epoch']}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------------------------
# TTA


def parse_scales(text: str, key: str) -> list[float]:
    try:
        scales = [float(s) for s in str(text).replace(";", ",").split(",") if s.strip()]
    except ValueError:
        raise KnobError(f"{key}: scales must be numbers separated by commas, e.g. 0.75, 1.0, 1.25; got {text!r}") from None
    if not scales or any(s <= 0 or s > 4 for s in scales):
        raise KnobError(f"{key}: scales must be positive and at most 4, e.g. 0.75, 1.0, 1.25; got {text!r}")
    return scales


def variants_to_rows(cfg: Config) -> list[dict]:
    return [{"name": v.name, "scales": ", ".join(f"{s:g}" for s in v.scales), "hflip": bool(v.hflip),
             "vflip": bool(v.vflip)} for v in cfg.tta_ab.variants]


def rows_to_variants(rows: Iterable[dict]) -> list[dict]:
    out, names = [], set()
    for i, row in enumerate(rows):
        if row is None or not str(row.get("name") or "").strip():
            continue
        name = str(row["name"]).strip()
        if name in names:
            raise KnobError(f"tta_ab.variants: the name '{name}' is used twice; give each variant its own name")
        names.add(name)
        out.append({"name": name, "scales": parse_scales(row.get("scales") or "1.0", f"tta_ab.variants[{i}].scales"),
                    "hflip": bool(row.get("hflip")), "vflip": bool(row.get("vflip"))})
    if not out:
        raise KnobError("tta_ab.variants: at least one named variant is needed")
    return out


# ------------------------------------------------------------------------------------------------------------
# knobs of a template


def applicable(cfg: Config) -> list[str]:
    """The knob keys shown for a template of this stage kind."""
    kind = cfg.stage.kind
    if kind in TRAIN_KINDS:
        keys = ["model.arch", "model.encoder", "model.pretrained", "loss.schedule", "augment.crop_size",
                "train.epochs", "train.steps_per_epoch", "dataset.max_samples", "eval.tta", "runtime.gpus"]
    elif kind == "tta_ab":
        keys = ["stage.checkpoint", "tta_ab.variants", "tta_ab.threshold", "eval.max_tiles", "runtime.gpus"]
    elif kind == "evaluate":
        keys = ["stage.checkpoint", "eval.tta", "eval.max_tiles", "runtime.gpus"]
    elif kind == "refine":
        keys = ["stage.checkpoint", "refine.max_tiles", "refine.sam.checkpoint", "runtime.gpus"]
    elif kind == "health":
        keys = ["stage.checkpoint", "runtime.gpus"]
    else:
        keys = ["runtime.gpus"]
    return keys


def defaults(cfg: Config) -> dict[str, Any]:
    """The template's current value of every knob (in the editors' shapes)."""
    return {
        "model.arch": cfg.model.arch,
        "model.encoder": cfg.model.encoder,
        "model.pretrained": cfg.model.pretrained,
        "loss.schedule": rows_to_schedule(schedule_to_rows(cfg)),
        "augment.crop_size": [int(c) for c in cfg.augment.crop_size],
        "train.epochs": int(cfg.train.epochs),
        "train.steps_per_epoch": cfg.train.steps_per_epoch,
        "dataset.max_samples": cfg.dataset.max_samples,
        "eval.tta": {"scales": [float(s) for s in cfg.eval.tta.scales], "hflip": bool(cfg.eval.tta.hflip)},
        "eval.max_tiles": cfg.eval.max_tiles,
        "runtime.gpus": int(cfg.runtime.gpus),
        "stage.checkpoint": cfg.stage.checkpoint,
        "tta_ab.variants": rows_to_variants(variants_to_rows(cfg)),
        "tta_ab.threshold": float(cfg.tta_ab.threshold),
        "refine.max_tiles": cfg.refine.max_tiles,
        "refine.sam.checkpoint": cfg.refine.sam.checkpoint,
    }


def to_overrides(cfg: Config, values: dict[str, Any]) -> list[str]:
    """``--set`` items for the knobs whose value differs from the template's."""
    base = defaults(cfg)
    out: list[str] = []
    for key, value in values.items():
        if key not in base:
            raise KnobError(f"unknown knob {key!r}")
        if isinstance(value, str):
            value = value.strip()
            if key in ("stage.checkpoint", "refine.sam.checkpoint") and value == "":
                value = None
            if key == "model.pretrained" and value == "":
                value = "none"
        if _norm(value) == _norm(base[key]):
            continue
        if key == "eval.tta":
            if _norm(value["scales"]) != _norm(base[key]["scales"]):
                out.append(override("eval.tta.scales", value["scales"]))
            if bool(value["hflip"]) != base[key]["hflip"]:
                out.append(override("eval.tta.hflip", bool(value["hflip"])))
            continue
        if key == "augment.crop_size":
            if len(value) != 2 or any(int(v) < 32 for v in value):
                raise KnobError(f"augment.crop_size: two sizes of at least 32 px are needed, got {value}")
            value = [int(v) for v in value]
        if key in ("train.epochs", "runtime.gpus") and int(value) < 1:
            raise KnobError(f"{key}: must be at least 1, got {value}")
        out.append(override(key, value))
    return out


def parse_extra(text: str) -> list[str]:
    """Free-form overrides, one ``key=value`` a line (``#`` starts a comment). Each is checked for form."""
    items = []
    for line in (text or "").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("--set "):
            line = line[len("--set "):].strip()
        parse_override(line)                 # ConfigError with the item when malformed
        items.append(line)
    return items


def resolve(template_path, overrides: list[str]) -> Config:
    """Resolve the template with the overrides exactly as a launch would; ConfigError names the key."""
    return load_config(template_path, overrides)


__all__ = ["KnobError", "ConfigError", "LOSS_TERMS", "ARCHS", "applicable", "defaults", "to_overrides",
           "parse_extra", "resolve", "schedule_to_rows", "rows_to_schedule", "describe_schedule",
           "variants_to_rows", "rows_to_variants", "parse_scales", "format_value", "override"]
