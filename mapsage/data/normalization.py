"""Input normalisation from the backbone's pretraining, resolved without downloading anything.

Order of precedence (the first that answers wins; :func:`normalization_info` says which one did):

1. ``model.mean`` / ``model.std`` in the config (0..1 scale).
2. A ``config.json`` beside a local ``model.pretrained`` weights file (the layout of smp-hub / timm hub
   snapshots), or ``<weights stem>.json``, holding ``mean`` and ``std``.
3. timm's ``pretrained_cfg`` for timm backbones (``model.encoder: tu-<timm name>[.tag]`` as in smp, or a bare timm
   model name): ``timm.models.get_pretrained_cfg`` reads timm's local registry, no network.
4. smp's own encoders (``mit_b2``, ``resnet50``, ...): the values smp published in its ``pretrained_settings``
   up to 0.4 (table below: ImageNet statistics for most families; 0.5/0.5 for the Inception family, Xception,
   TF-Lite EfficientNets and AdvProp weights; DPN's Caffe-style values). smp 0.5+ keeps them in a ``config.json``
   on the HF hub; for an smp encoder outside the table that file is read from the local HF cache if present
   (never downloaded).

An encoder none of these knows is a ConfigError that names ``model.mean`` / ``model.std``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, resolve_path
from ..config.schema import Config

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
DPN_MEAN = (124 / 255, 117 / 255, 104 / 255)
DPN_STD = (1 / (0.0039 * 255),) * 3

# smp encoder families -> (mean, std) per weights name, as smp <= 0.4 published them in pretrained_settings.
_SMP_RULES: list[tuple[str, dict[str, tuple[tuple, tuple]]]] = [
    (r"^dpn\d+b?$", {"*": (DPN_MEAN, DPN_STD)}),
    (r"^(inceptionresnetv2|inceptionv4|xception)$", {"*": (HALF, HALF)}),
    (r"^timm-tf_efficientnet_lite\d$", {"*": (HALF, HALF)}),
    (r"^(timm-)?efficientnet-(b\d|l2)$", {"advprop": (HALF, HALF), "*": (IMAGENET_MEAN, IMAGENET_STD)}),
    (r"^(resnet\d+|resnext\d+_\d+x\d+d|vgg\d+(_bn)?|senet154|se_resnet\d+|se_resnext\d+_\d+x\d+d|densenet\d+|"
     r"mobilenet_v2|mit_b\d|mobileone_s\d|timm-skresnet\d+|timm-skresnext\d+_\d+x\d+d)$",
     {"*": (IMAGENET_MEAN, IMAGENET_STD)}),
]


def _as_triplet(values: Any, key: str) -> tuple[float, float, float]:
    vals = tuple(float(v) for v in values)
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise ConfigError(f"{key}: expected 3 values (R, G, B), got {list(values)}")
    return vals  # type: ignore[return-value]


def _check_scale(mean, std, key: str):
    if max(mean) > 1.5 or max(std) > 1.5:
        raise ConfigError(f"{key}: mean {list(mean)} / std {list(std)} look like 0..255 values; the workbench uses "
                          f"the 0..1 scale (divide by 255, e.g. mean [0.485, 0.456, 0.406])")
    if min(std) <= 0:
        raise ConfigError(f"{key}: std must be positive, got {list(std)}")


def _sidecar(pretrained: str) -> tuple[tuple, tuple, str] | None:
    if not pretrained or pretrained.lower() == "none":
        return None
    path = resolve_path(pretrained)
    candidates = [path.with_suffix(".json"), path.parent / "config.json"] if path.suffix else [path / "config.json"]
    for cand in candidates:
        if cand.is_file():
            try:
                data = json.loads(cand.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict):
                data = data.get("pretrained_cfg", data)
                if "mean" in data and "std" in data:
                    return (_as_triplet(data["mean"], str(cand)), _as_triplet(data["std"], str(cand)),
                            f"weights sidecar {cand}")
    return None


def _timm_cfg(name: str):
    try:
        import timm
    except ImportError:  # pragma: no cover - timm is a dependency
        return None
    try:
        pcfg = timm.models.get_pretrained_cfg(name)
    except Exception:
        pcfg = None
    if pcfg is None:
        return None
    mean, std = getattr(pcfg, "mean", None), getattr(pcfg, "std", None)
    if mean is None or std is None:
        return None
    tag = getattr(pcfg, "tag", None)
    arch = getattr(pcfg, "architecture", name)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std), f"timm pretrained_cfg {arch}.{tag}"


def _smp_encoders() -> dict:
    try:
        from segmentation_models_pytorch.encoders import encoders
    except Exception:  # pragma: no cover - smp is a dependency
        return {}
    return encoders


def _smp_cached_config(name: str, weights: str):
    """smp-hub's config.json for this encoder, only if already in the local HF cache (no download)."""
    info = _smp_encoders().get(name, {}).get("pretrained_settings", {}).get(weights)
    if not info or "repo_id" not in info:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
        path = try_to_load_from_cache(info["repo_id"], "config.json", revision=info.get("revision"))
    except Exception:
        return None
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return (_as_triplet(data["mean"], path), _as_triplet(data["std"], path),
                f"smp-hub config {info['repo_id']} (local cache)")
    except (OSError, KeyError, ValueError, json.JSONDecodeError):
        return None


def _smp_rule(name: str, weights: str):
    for pattern, table in _SMP_RULES:
        if re.match(pattern, name):
            mean, std = table.get(weights, table["*"])
            return mean, std, f"smp encoder {name} ({weights} weights; smp pretrained_settings)"
    return None


def normalization_info(cfg: Config) -> dict:
    """``{"mean": (r, g, b), "std": (r, g, b), "source": str}`` in the 0..1 scale."""
    m = cfg.model
    if m.mean is not None or m.std is not None:
        if m.mean is None or m.std is None:
            raise ConfigError("model.mean and model.std override the backbone's normalisation together; set both "
                              "(or neither)")
        mean, std = _as_triplet(m.mean, "model.mean"), _as_triplet(m.std, "model.std")
        _check_scale(mean, std, "model.mean/model.std")
        return {"mean": mean, "std": std, "source": "config model.mean/model.std"}
    found = _sidecar(m.pretrained)
    if found is None:
        enc = m.encoder
        if enc.startswith("tu-"):
            found = _timm_cfg(enc[3:])
        else:
            # smp's own encoder families first (no import of smp needed), then smp's registry for families this
            # table does not know (their hub config, if cached), then timm's registry for bare timm names
            found = _smp_rule(enc, "imagenet")
            if found is None:
                smp = _smp_encoders()
                if enc in smp:
                    settings = smp[enc].get("pretrained_settings") or {}
                    weights = "imagenet" if "imagenet" in settings or not settings else next(iter(settings))
                    found = _smp_cached_config(enc, weights)
                else:
                    found = _timm_cfg(enc)
    if found is None:
        raise ConfigError(f"model.encoder: no pretrained normalisation is known for {m.encoder!r} (not an smp encoder, "
                          f"not a timm model with a pretrained_cfg); set model.mean and model.std (0..1 scale)")
    mean, std, source = found
    _check_scale(mean, std, source)
    return {"mean": tuple(mean), "std": tuple(std), "source": source}


def get_normalization(cfg: Config) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """``(mean, std)`` in the 0..1 scale for the config's backbone (see the module docstring)."""
    info = normalization_info(cfg)
    return info["mean"], info["std"]


def normalize_image(image: np.ndarray, mean, std):
    """``uint8 [H, W, 3]`` -> float32 tensor ``[3, H, W]`` normalised with ``mean``/``std`` (0..1 scale)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(torch.float32).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return t.sub_(m).div_(s)


def denormalize(image_tensor, cfg) -> np.ndarray:
    """A normalised ``[3, H, W]`` tensor (or array; ``[1, 3, H, W]`` accepted) back to ``uint8 [H, W, 3]``.

    ``cfg`` is a Config, or a ``(mean, std)`` pair."""
    if isinstance(cfg, Config):
        mean, std = get_normalization(cfg)
    else:
        mean, std = cfg
    try:
        import torch
        if isinstance(image_tensor, torch.Tensor):
            image_tensor = image_tensor.detach().to("cpu", torch.float32).numpy()
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(image_tensor, dtype=np.float32)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"denormalize expects a [3, H, W] image, got shape {arr.shape}")
    arr = arr * np.asarray(std, np.float32).reshape(3, 1, 1) + np.asarray(mean, np.float32).reshape(3, 1, 1)
    return np.clip(np.rint(arr.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
