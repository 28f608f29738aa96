"""Configs: ``load_config(path, overrides)`` -> typed :class:`Config`; run names; config hash; saving."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import yaml

from .core import ConfigError, _build, apply_overrides, git_commit, load_raw, to_dict
from .core import config_hash as _raw_hash
from .schema import Config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIGS_DIR = PROJECT_ROOT / "configs"

__all__ = ["Config", "ConfigError", "load_config", "config_from_dict", "config_hash", "run_name", "to_dict",
           "save_resolved", "git_commit", "resolve_path", "PROJECT_ROOT", "CONFIGS_DIR", "cfg_source"]


def resolve_path(path: str | Path, base: Path | None = None) -> Path:
    """Resolve a path from a config: absolute as is, relative to the project root (or ``base``)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return (base or PROJECT_ROOT) / p


def config_from_dict(data: dict, origins: dict | None = None) -> Config:
    data = dict(data)
    data.pop("_base_", None)
    if "dataset" not in data:
        raise ConfigError("config has no 'dataset' section: every config (or one of its _base_ files) must "
                          "define the dataset")
    return _build(Config, data, "", origins or {})


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML config with ``_base_`` inheritance and ``--set`` overrides, validated into a Config."""
    path = Path(path)
    if not path.exists() and not path.is_absolute() and (CONFIGS_DIR / path).exists():
        path = CONFIGS_DIR / path
    data, origins = load_raw(path)
    apply_overrides(data, origins, overrides)
    cfg = config_from_dict(data, origins)
    cfg.meta.setdefault("source", str(path))
    return cfg


def cfg_source(cfg: Config) -> str:
    return str(cfg.meta.get("source", ""))


def _slug(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-." else "-" for c in str(text).lower())
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-")


def run_name(cfg: Config) -> str:
    """mmsegmentation-style name: ``{model}_{backbone}_{gpus}xb{batch}-{epochs}e_{dataset}-{crop}``.

    Stages other than training prefix their kind (``tta-ab_segformer_...``)."""
    if cfg.stage.name:
        return _slug(cfg.stage.name)
    if getattr(cfg, "task", "segmentation") == "classification":      # cls_{model}_{gpus}xb{batch}-{epochs}e_{data}-{size}
        return (f"cls_{_slug(cfg.classify.model).replace('_', '-')}_{cfg.runtime.gpus}xb{cfg.train.batch_size}-"
                f"{cfg.train.epochs}e_{_slug(cfg.dataset.name)}-{cfg.classify.img_size}")
    crop = "x".join(str(c) for c in cfg.augment.crop_size)
    name = (f"{_slug(cfg.model.arch)}_{_slug(cfg.model.encoder).replace('_', '-')}_"
            f"{cfg.runtime.gpus}xb{cfg.train.batch_size}-{cfg.train.epochs}e_{_slug(cfg.dataset.name)}-{crop}")
    if cfg.distill.enabled or cfg.stage.kind == "distill":
        name = "distill_" + name
    if cfg.stage.kind not in ("train", "distill"):
        name = f"{cfg.stage.kind.replace('_', '-')}_{name}"
    return name


def save_resolved(cfg: Config, run_dir: str | Path) -> Path:
    """Write ``config.yaml`` (resolved, with provenance) into the run folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = to_dict(cfg)
    data["meta"] = dict(data.get("meta") or {})
    data["meta"].update({
        "config_hash": config_hash(cfg),
        "code_commit": git_commit(),
        "resolved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run_name": run_name(cfg),
    })
    out = run_dir / "config.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return out


def _without_meta(cfg: Config) -> dict:
    data = to_dict(cfg)
    data.pop("meta", None)
    return data


def config_hash(cfg: Config) -> str:
    """Deterministic 12-hex hash of the resolved config, ignoring free-form ``meta`` (provenance does not change
    what a run computes). Key order, file layout and inheritance do not matter."""
    return _raw_hash(_without_meta(cfg))
