"""Loading local pretrained weights into a model's encoder.

Accepted files: ``.pth``/``.pt``/``.bin``/``.ckpt`` (``torch.save``) and ``.safetensors``, holding

* a plain state dict (timm classification weights, smp encoder or full-model weights, NVIDIA SegFormer ``mit_b*``),
* a training checkpoint that wraps it under ``state_dict`` / ``model`` / ``module`` / ``model_state`` /
  ``network`` / ``net`` (mmsegmentation, EarthVQA-style and other segmentation repositories, this workbench),
* mmsegmentation's own MiT layout (``backbone.layers.N.M...``, fused ``attn.in_proj``, 1×1-conv FFN), converted
  back to the NVIDIA/smp layout.

Keys are matched to the encoder after stripping wrapper prefixes (``module.``, ``backbone.``, ``encoder.``,
``model.``, ``_orig_mod.``, ...); a key whose only difference is ``.`` versus ``_`` (timm ``features_only``
renames ``stages.0`` to ``stages_0``) still matches. Tensors of a different shape are not loaded. The report lists
what loaded, what the encoder still misses and what the file had that the encoder does not use. Less than
``model.pretrained_min_loaded`` of the encoder's tensors loaded is refused unless ``model.force_pretrained``.

Nothing here downloads: ``pretrained: imagenet`` (or any hub name) fails with a message naming ``model.pretrained``.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

from ..config import resolve_path
from ..errors import CheckpointError
from ..safeload import load_file

WRAPPER_KEYS = ("state_dict", "model", "module", "model_state", "model_state_dict", "network", "net", "params")
PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.", "model.", "net.", "student.", "segmentor.",
            "student_model.")
HUB_NAMES = {"imagenet", "imagenet21k", "imagenet22k", "ssl", "swsl", "advprop", "noisy-student", "instagram",
             "true", "yes", "hub", "timm", "default", "pretrained", "coco", "ade20k", "cityscapes"}
SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".pkl", ".tar")


def check_pretrained_value(value: str | None) -> Path | None:
    """``none`` -> None; an existing local file -> its path; hub names or missing files -> CheckpointError."""
    if value is None:
        return None
    text = str(value).strip()
    if text.lower() in ("", "none", "null", "false", "random", "scratch"):
        return None
    path = resolve_path(text)
    if path.is_file():
        return path
    looks_like_path = ("/" in text or "\\" in text or text.lower().endswith(SUFFIXES))
    if text.lower() in HUB_NAMES or text.lower().startswith(("hf-hub:", "hf_hub:", "timm/", "http://", "https://")) \
            or not looks_like_path:
        raise CheckpointError(
            f"model.pretrained: '{text}' asks for weights from a model hub, and this workbench never downloads. "
            f"Download the weights yourself and set model.pretrained to the local file "
            f"(e.g. --set model.pretrained=/weights/mit_b2.pth), or set model.pretrained=none for random init.")
    raise CheckpointError(f"model.pretrained: weights file not found: {path}. Set model.pretrained to an existing "
                          f"local file (relative paths start at the project root) or to none.")


def read_weights(path: str | Path) -> dict:
    """Load a weights file into a dict (whatever its nesting). CheckpointError names the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")

    obj = load_file(path, what="weights", key="model.pretrained")
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict or a checkpoint dict, found {type(obj).__name__}")
    return obj


def extract_state_dict(obj: dict) -> "OrderedDict[str, torch.Tensor]":
    """Unwrap ``state_dict``/``model``/``module``... nesting down to the tensors."""
    seen = 0
    while seen < 6:
        seen += 1
        tensors = sum(isinstance(v, torch.Tensor) for v in obj.values())
        if tensors and tensors >= len(obj) / 2:
            break
        nested = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict) and obj.get(k)), None)
        if nested is None:
            # a dict whose single dict value holds the tensors
            dicts = [v for v in obj.values() if isinstance(v, dict) and v]
            if len(dicts) == 1:
                nested = dicts[0]
        if nested is None:
            break
        obj = nested
    return OrderedDict((str(k), v) for k, v in obj.items() if isinstance(v, torch.Tensor))


def strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in PREFIXES:
            if key.startswith(p):
                key = key[len(p):]
                changed = True
    return key


def _canonical(key: str) -> str:
    return strip_prefixes(key).replace(".", "_")


_MMSEG_MIT = re.compile(r"^layers\.(\d+)\.(\d+)\.(.*)$")


def is_mmseg_mit(keys) -> bool:
    return any(_MMSEG_MIT.match(strip_prefixes(k)) and ".attn.attn.in_proj_weight" in k for k in keys)


def mmseg_mit_to_nvidia(sd: dict) -> "OrderedDict[str, torch.Tensor]":
    """Inverse of mmsegmentation's ``tools/model_converters/mit2mmseg.py``: ``layers.i.0`` (patch embed),
    ``layers.i.1.j`` (blocks, fused q/kv in ``attn.attn.in_proj``, FFN as 1×1 convs), ``layers.i.2`` (norm) back to
    ``patch_embed{i+1}``, ``block{i+1}.j``, ``norm{i+1}``. Keys that are not MiT backbone keys pass unchanged."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for raw_key, v in sd.items():
        key = strip_prefixes(raw_key)
        m = _MMSEG_MIT.match(key)
        if not m:
            out[raw_key] = v
            continue
        stage, part, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        s = stage + 1
        if part == 0:
            out[f"patch_embed{s}.{rest.replace('projection.', 'proj.')}"] = v
        elif part == 2:
            out[f"norm{s}.{rest}"] = v
        elif part == 1:
            j, _, sub = rest.partition(".")
            prefix = f"block{s}.{j}."
            if sub.startswith("attn.attn.in_proj_"):
                kind = sub[len("attn.attn.in_proj_"):]             # weight | bias
                dim = v.shape[0] // 3
                out[prefix + f"attn.q.{kind}"] = v[:dim]
                out[prefix + f"attn.kv.{kind}"] = v[dim:]
            elif sub.startswith("attn.attn.out_proj."):
                out[prefix + "attn.proj." + sub[len("attn.attn.out_proj."):]] = v
            elif sub.startswith("attn."):
                out[prefix + sub] = v                                # attn.sr.*, attn.norm.*
            elif sub.startswith("ffn.layers."):
                idx, _, tail = sub[len("ffn.layers."):].partition(".")
                name = {"0": "mlp.fc1.", "1": "mlp.dwconv.dwconv.", "4": "mlp.fc2."}.get(idx)
                if name is None:
                    out[raw_key] = v
                    continue
                if idx in ("0", "4") and tail == "weight" and v.ndim == 4:
                    v = v.reshape(v.shape[0], v.shape[1])
                out[prefix + name + tail] = v
            else:
                out[prefix + sub] = v                                # norm1, norm2
        else:
            out[raw_key] = v
    return out


def match_to_module(sd: dict, module: nn.Module) -> dict:
    """Match a state dict's keys to ``module``'s. Returns dict with ``state`` (ready to load), ``loaded``,
    ``missing``, ``unexpected`` and ``mismatched`` key lists."""
    target = module.state_dict()
    by_key = {k: k for k in target}
    by_stripped = {}
    by_canon = {}
    for k in target:
        by_stripped.setdefault(strip_prefixes(k), k)
        by_canon.setdefault(_canonical(k), k)
    state, loaded, unexpected, mismatched = {}, [], [], []
    for src, v in sd.items():
        dst = by_key.get(src) or by_stripped.get(strip_prefixes(src)) or by_canon.get(_canonical(src))
        if dst is None:
            unexpected.append(src)
            continue
        if tuple(target[dst].shape) != tuple(v.shape):
            mismatched.append(f"{src}: file {tuple(v.shape)} vs model {tuple(target[dst].shape)}")
            continue
        if dst in state:
            unexpected.append(src)          # a second source for the same tensor (e.g. ema + raw copies)
            continue
        state[dst] = v.to(target[dst].dtype)
        loaded.append(dst)
    missing = [k for k in target if k not in state]
    return {"state": state, "loaded": loaded, "missing": missing, "unexpected": unexpected,
            "mismatched": mismatched, "total": len(target)}


def load_pretrained(model: nn.Module, path: str | Path, min_loaded: float = 0.9, force: bool = False) -> dict:
    """Load ``path`` into ``model.encoder``. Returns a report dict; CheckpointError when too little loaded."""
    path = Path(path)
    sd = extract_state_dict(read_weights(path))
    if not sd:
        raise CheckpointError(f"{path}: no tensors found in the file (model.pretrained)")
    encoder = model.encoder
    converted = None
    if is_mmseg_mit(sd.keys()) and hasattr(encoder, "patch_embed1"):
        sd = mmseg_mit_to_nvidia(sd)
        converted = "mmseg-mit"
    res = match_to_module(sd, encoder)
    # count only real tensors (buffers such as BatchNorm's num_batches_tracked do not carry weights)
    weight_keys = [k for k in encoder.state_dict() if not k.endswith("num_batches_tracked")]
    loaded_w = [k for k in res["loaded"] if not k.endswith("num_batches_tracked")]
    share = len(loaded_w) / max(1, len(weight_keys))
    report = {
        "file": str(path),
        "converted": converted,
        "encoder_tensors": len(weight_keys),
        "loaded": len(loaded_w),
        "loaded_share": round(share, 4),
        "missing": res["missing"],
        "unexpected": res["unexpected"],
        "mismatched": res["mismatched"],
        "forced": False,
    }
    if share < min_loaded:
        if not force:
            sample = ", ".join(res["missing"][:5])
            raise CheckpointError(
                f"{path}: only {len(loaded_w)} of {len(weight_keys)} encoder tensors ({share:.0%}) matched "
                f"model.encoder='{getattr(model, 'encoder_name', '?')}' (model.pretrained_min_loaded="
                f"{min_loaded}). Missing e.g. {sample}; {len(res['unexpected'])} unexpected and "
                f"{len(res['mismatched'])} shape-mismatched keys. Check that model.pretrained matches the encoder, "
                f"or set model.force_pretrained=true to load the partial weights anyway.")
        report["forced"] = True
    # smp's MiT / timm encoders override load_state_dict with key rewriting meant for their hub files; the keys
    # here are already the module's own, so call nn.Module's loader directly.
    nn.Module.load_state_dict(encoder, {**encoder.state_dict(), **res["state"]}, strict=True)
    return report


def summarize_report(report: dict | None) -> str:
    if not report:
        return "random init (model.pretrained: none)"
    text = (f"{report['file']}: {report['loaded']}/{report['encoder_tensors']} encoder tensors loaded "
            f"({report['loaded_share']:.0%}); missing {len(report['missing'])}, unexpected "
            f"{len(report['unexpected'])}, shape-mismatched {len(report['mismatched'])}")
    if report.get("converted"):
        text += f"; converted from {report['converted']}"
    if report.get("forced"):
        text += "; below model.pretrained_min_loaded, loaded because model.force_pretrained=true"
    return text
