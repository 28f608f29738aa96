"""Check 6 — evaluation consistency: training-time validation and the final evaluation must see the same
preprocessing, window and TTA settings, or their numbers are not comparable.

The fingerprint of an evaluation setting covers what changes the numbers an evaluation produces:

* preprocessing: the normalisation mean/std actually used (resolved the way the data pipeline resolves it),
  how masks are decoded (dataset type, colour/value maps, ignore colours/values, ignore index, classes);
* window: whole image, or sliding window with its tile and stride (tile/stride only count in slide mode);
* TTA: scales and flips;
* the metric's Boundary IoU band.

The training config under test is the run named by ``stage.checkpoint`` (its resolved ``config.yaml``) or, without
one, this config itself (health templates inherit the training recipe they check). It is compared with every
final-evaluation template in ``health.eval_configs`` — or, when that is empty, every template under ``configs/``
of kind ``evaluate`` or ``tta_ab`` on the same dataset. TTA A/B templates evaluate their TTA variants on purpose;
their baseline (``eval.tta``) must still match validation."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from ..config import CONFIGS_DIR, Config, ConfigError, load_config, resolve_path
from .context import HealthRun
from .result import CheckResult
from .runref import training_config_under_test

FINAL_EVAL_KINDS = ("evaluate", "tta_ab")


def _normalisation(cfg: Config) -> dict:
    try:
        from ..data import get_normalization
        mean, std = get_normalization(cfg)
        return {"mean": [round(float(m), 6) for m in mean], "std": [round(float(s), 6) for s in std]}
    except Exception as exc:   # e.g. an encoder without known statistics: compare the config keys instead
        return {"mean": cfg.model.mean, "std": cfg.model.std, "encoder": cfg.model.encoder,
                "error": f"{type(exc).__name__}: {exc}"}


def eval_fingerprint(cfg: Config) -> dict[str, Any]:
    """The settings that decide what an evaluation measures, grouped (preprocessing, window, tta, metric)."""
    d, e = cfg.dataset, cfg.eval
    window: dict[str, Any] = {"mode": e.mode}
    if e.mode == "slide":
        window.update({"tile": list(e.tile), "stride": list(e.stride)})
    return {
        "preprocessing": {
            "normalisation": _normalisation(cfg),
            "mask_decoding": {"type": d.type, "classes": list(d.classes), "ignore_index": d.ignore_index,
                              "color_map": {k.upper(): v for k, v in sorted(d.color_map.items())},
                              "ignore_colors": sorted(c.upper() for c in d.ignore_colors),
                              "value_map": {str(k): v for k, v in sorted(d.value_map.items())},
                              "ignore_values": sorted(d.ignore_values)},
        },
        "window": window,
        "tta": {"scales": [float(s) for s in e.tta.scales], "hflip": bool(e.tta.hflip), "vflip": bool(e.tta.vflip)},
        "metric": {"boundary_px": e.boundary_px, "boundary_strip_px": e.boundary_strip_px},
    }


def fingerprint_hash(fp: dict) -> str:
    return hashlib.sha1(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("color_map", "value_map"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def fingerprint_diff(a: dict, b: dict) -> list[dict]:
    fa, fb = _flatten(a), _flatten(b)
    rows = []
    for key in sorted(set(fa) | set(fb)):
        if key.endswith("normalisation.error"):
            continue
        if fa.get(key) != fb.get(key):
            rows.append({"setting": key, "validation": fa.get(key), "final": fb.get(key)})
    return rows


def discover_eval_templates(dataset_name: str, configs_dir: Path = CONFIGS_DIR) -> list[Path]:
    """Templates under ``configs/`` (not ``_base_``) of a final-evaluation kind on the named dataset."""
    found = []
    for path in sorted(configs_dir.rglob("*.yaml")):
        if "_base_" in path.parts:
            continue
        try:
            c = load_config(path)
        except Exception:
            continue   # a template that does not load is config validation's business, not this check's
        if c.stage.kind in FINAL_EVAL_KINDS and c.dataset.name == dataset_name:
            found.append(path)
    return found


def check_eval_consistency(h: HealthRun, eval_configs: Optional[list[str]] = None) -> CheckResult:
    cfg = h.cfg
    train_cfg, train_source = training_config_under_test(cfg)
    val_fp = eval_fingerprint(train_cfg)
    val_hash = fingerprint_hash(val_fp)
    listed = list(eval_configs if eval_configs is not None else cfg.health.eval_configs)
    if listed:
        paths = [resolve_path(p) for p in listed]
        source = "health.eval_configs"
    else:
        paths = discover_eval_templates(train_cfg.dataset.name)
        source = f"templates of kind evaluate/tta_ab on dataset '{train_cfg.dataset.name}' under configs/"
    evidence: dict[str, Any] = {"training_config": train_source, "validation_fingerprint": val_hash,
                                "validation": val_fp, "compared_with": source, "finals": []}
    if not paths:
        return CheckResult("eval_consistency", "warn",
                           f"no final-evaluation config to compare with validation (fingerprint {val_hash}); list "
                           f"the evaluate/tta_ab templates in health.eval_configs", evidence)
    failures = []
    for path in paths:
        try:
            final_cfg = load_config(path)
        except ConfigError as exc:
            raise ConfigError(f"health.eval_configs: {path} does not load: {exc}") from exc
        fp = eval_fingerprint(final_cfg)
        diff = fingerprint_diff(val_fp, fp)
        row = {"config": str(path), "kind": final_cfg.stage.kind, "fingerprint": fingerprint_hash(fp),
               "differences": diff}
        if final_cfg.stage.kind == "tta_ab":
            row["tta_variants"] = [v.name for v in final_cfg.tta_ab.variants]
        if final_cfg.dataset.name != train_cfg.dataset.name:
            row["differences"].insert(0, {"setting": "dataset.name", "validation": train_cfg.dataset.name,
                                          "final": final_cfg.dataset.name})
        evidence["finals"].append(row)
        if row["differences"]:
            failures.append(row)
    if failures:
        first = failures[0]
        shown = "; ".join(f"{d['setting']}: validation {d['validation']} vs final {d['final']}"
                          for d in first["differences"][:3])
        more = len(first["differences"]) - 3
        return CheckResult("eval_consistency", "fail",
                           f"{len(failures)}/{len(paths)} final-evaluation config(s) differ from training-time "
                           f"validation ({Path(first['config']).name}: {shown}{f'; +{more} more' if more > 0 else ''})",
                           evidence)
    names = ", ".join(Path(p).name for p in paths)
    return CheckResult("eval_consistency", "pass",
                       f"training-time validation and {len(paths)} final-evaluation config(s) ({names}) share "
                       f"preprocessing, window and TTA (fingerprint {val_hash})", evidence)
