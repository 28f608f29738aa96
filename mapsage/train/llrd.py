"""Layer-wise learning-rate decay per encoder block (``train.layer_decay`` or ``train.layer_tiers``).

Every encoder parameter gets a block index, shallow (0) to deep (L-1):

* timm encoders (``tu-…``): timm's own grouping (``model.group_matcher(coarse=False)`` through
  ``timm.models.group_parameters``) of the same architecture, matched to the encoder's parameter names (smp wraps
  timm models in a ``FeatureListNet`` whose module names are flattened, ``stages.0`` → ``stages_0``);
* every other encoder (MiT / SegFormer, smp's ResNets, …) and timm models without a matcher: by name, in
  depth order (registration order; MiT: per stage its patch embedding, blocks and norm). A block is the module
  path up to its first numeric index (``block2.3`` of MiT, ``layer3.1`` of a ResNet), or up to the second below a
  stage list (``stages.1.blocks.2``), else its top module (``patch_embed1``, ``conv1``, ``pos_embed``).

Multipliers of the peak LR: with ``layer_decay = d``, block ``i`` gets ``head_lr_mult × d^(L - i)`` (the head is
"layer" L, as in BEiT / timm's ``param_groups_layer_decay``); with ``layer_tiers = [t0, …, tk]`` the blocks are
split into ``k + 1`` contiguous groups (shallow to deep) that get ``t0 … tk``; the head keeps ``head_lr_mult``.
Each block is split again into decayed and no-decay parameters.
"""
from __future__ import annotations

import re
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from ..config import ConfigError
from ..models import unwrap

_CONTAINERS = {"stages", "stage", "layers", "levels"}
_FLAT = re.compile(r"^([A-Za-z]+)_(\d+)(?=\.|$)")


def generic_block_key(name: str) -> str:
    parts = (name[len("model."):] if name.startswith("model.") else name).split(".")
    nums = [i for i, p in enumerate(parts[:-1]) if p.isdigit() or re.fullmatch(r"[A-Za-z]+_\d+", p)]
    stage_list = nums and (not parts[nums[0]].isdigit() or (nums[0] > 0 and parts[nums[0] - 1] in _CONTAINERS))
    if len(nums) >= 2 and stage_list:                # stages.1.blocks.2 / stages_1.blocks.2: the block inside
        return ".".join(parts[:nums[1] + 1])
    if nums:
        return ".".join(parts[:nums[0] + 1])
    return parts[0]


def _timm_layer_map(encoder: nn.Module, encoder_name: str) -> Optional[dict[str, int]]:
    """Parameter name → timm layer id for a ``tu-`` encoder, or None when timm's matcher does not apply."""
    inner = getattr(encoder, "model", None)
    if inner is None or not encoder_name.startswith("tu-"):
        return None
    try:
        import timm
        from timm.models import group_parameters
        with torch.device("meta"):
            ref = timm.create_model(encoder_name[3:], pretrained=False)
        if not hasattr(ref, "group_matcher"):
            return None
        ref_map = group_parameters(ref, ref.group_matcher(coarse=False), reverse=True)
    except Exception:                      # noqa: BLE001 -- any timm failure: fall back to names
        return None
    out: dict[str, int] = {}
    for name, _ in encoder.named_parameters():
        local = name[len("model."):] if name.startswith("model.") else name
        ref_name = _FLAT.sub(lambda m: f"{m.group(1)}.{m.group(2)}", local)
        if ref_name in ref_map:
            out[name] = int(ref_map[ref_name])
        elif local in ref_map:
            out[name] = int(ref_map[local])
        else:
            return None
    ids = sorted(set(out.values()))                       # dense 0..L-1
    dense = {v: i for i, v in enumerate(ids)}
    return {k: dense[v] for k, v in out.items()}


def encoder_blocks(encoder: nn.Module, encoder_name: str = "") -> tuple[dict[str, int], str]:
    """(parameter name → block index, how: "timm" or "names")."""
    timm_map = _timm_layer_map(encoder, encoder_name)
    if timm_map is not None:
        return timm_map, "timm"
    keys = {name: generic_block_key(name) for name, _ in encoder.named_parameters()}
    order = list(dict.fromkeys(keys.values()))                 # registration order
    if hasattr(encoder, "patch_embed1") and hasattr(encoder, "block1"):
        order.sort(key=_mit_rank)                              # MiT registers all patch embeddings first
    rank = {k: i for i, k in enumerate(order)}
    return {name: rank[k] for name, k in keys.items()}, "names"


def _mit_rank(key: str) -> tuple[int, int, int]:
    """Depth order of MiT's modules: per stage s, patch_embed{s}, block{s}.0 …, norm{s}."""
    m = re.fullmatch(r"(patch_embed|block|norm)(\d+)(?:\.(\d+))?", key)
    if not m:
        return (0, -1, 0)
    kind = {"patch_embed": 0, "block": 1, "norm": 2}[m.group(1)]
    return (int(m.group(2)), kind, int(m.group(3) or 0))


def block_multipliers(n_blocks: int, head_mult: float, decay: Optional[float] = None,
                      tiers: Optional[list[float]] = None) -> list[float]:
    if tiers:
        split = np.array_split(np.arange(n_blocks), len(tiers))
        mults = [0.0] * n_blocks
        for tier, idx in zip(tiers, split):
            for i in idx:
                mults[int(i)] = float(tier)
        return mults
    d = float(decay)
    return [float(head_mult) * d ** (n_blocks - i) for i in range(n_blocks)]


def llrd_param_groups(model: nn.Module, cfg, no_decay_fn) -> tuple[list[dict], dict]:
    """Parameter groups per encoder block (and decayed / no-decay) plus the head's two groups; and a summary
    (``how``, ``blocks``, ``mults``) for the run's log."""
    t = cfg.train
    decay, tiers = t.layer_decay, list(t.layer_tiers or [])
    if decay is not None and not 0 < float(decay) <= 1:
        raise ConfigError(f"train.layer_decay must be in (0, 1], got {decay}")
    if any(float(x) < 0 for x in tiers):
        raise ConfigError(f"train.layer_tiers must be non-negative multipliers, got {tiers}")
    m = unwrap(model)
    enc = m.encoder
    enc_name = getattr(m, "encoder_name", "") or cfg.model.encoder
    blocks, how = encoder_blocks(enc, enc_name)
    n = max(blocks.values()) + 1 if blocks else 0
    if tiers and len(tiers) > n:
        raise ConfigError(f"train.layer_tiers has {len(tiers)} tiers but the encoder has {n} blocks")
    mults = block_multipliers(n, float(t.head_lr_mult), decay, tiers)
    wd = float(t.weight_decay)
    enc_params = dict(enc.named_parameters())
    enc_ids = {id(p) for p in enc_params.values()}
    buckets: dict[tuple[str, int, bool], list] = {}
    for name, p in enc_params.items():
        buckets.setdefault(("backbone", blocks[name], no_decay_fn(name, p)), []).append(p)
    for name, p in m.named_parameters():
        if id(p) not in enc_ids:
            buckets.setdefault(("head", -1, no_decay_fn(name, p)), []).append(p)
    groups = []
    for (part, b, nd), ps in sorted(buckets.items(), key=lambda kv: (kv[0][0] != "backbone", kv[0][1], kv[0][2])):
        mult = mults[b] if part == "backbone" else float(t.head_lr_mult)
        label = f"backbone.b{b}" if part == "backbone" else "head"
        groups.append({"params": ps, "name": label + ("_no_decay" if nd else ""), "lr_mult": mult,
                       "weight_decay": 0.0 if nd else wd, "block": b})
    return groups, {"how": how, "blocks": n, "mults": mults}


def describe_groups(param_groups: list[dict]) -> str:
    """One log line from an optimiser's groups: each encoder block's LR multiplier, shallow to deep."""
    per = {}
    for g in param_groups:
        b = g.get("block")
        if b is not None and b >= 0:
            per[int(b)] = float(g.get("lr_mult", 1.0))
    head = [float(g.get("lr_mult", 1.0)) for g in param_groups if g.get("block") == -1]
    mults = [per[k] for k in sorted(per)]
    shown = mults if len(mults) <= 8 else mults[:4] + mults[-4:]
    text = " ".join(f"×{x:.3g}" for x in shown[:4]) + (" …" if len(mults) > 8 else "") + \
        ("" if len(mults) <= 4 else " " + " ".join(f"×{x:.3g}" for x in shown[4:]))
    return (f"layer-wise LR over {len(mults)} encoder blocks (shallow to deep): {text}; head "
            f"×{head[0]:.3g}" if head else f"layer-wise LR over {len(mults)} encoder blocks: {text}")
