"""Layer-wise LR decay per encoder block: groups per block with the right multipliers for MiT (SegFormer), timm
(through timm's own group matcher) and smp ResNet encoders, and the optimiser's LRs follow them."""
from __future__ import annotations

import pytest

from tests.support.train import tiny_cfg


def _groups(*overrides):
    from mapsage.models import build_model
    from mapsage.train.optim import build_optimizer
    cfg = tiny_cfg(*overrides)
    model = build_model(cfg)
    opt, peak = build_optimizer(model, cfg)
    return model, opt, peak


def _block_mults(opt):
    per = {}
    for g in opt.param_groups:
        per.setdefault(g["block"], set()).add(g["lr_mult"])
    assert all(len(v) == 1 for v in per.values())          # decay and no-decay halves share the block's LR
    return {k: v.pop() for k, v in per.items()}


def test_mit_blocks_decay_per_block(one_thread):
    model, opt, peak = _groups("train.layer_decay=0.8", "train.head_lr_mult=1.0")
    enc = model.encoder
    ids_by_group = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert len(ids_by_group) == sum(1 for _ in model.parameters())          # every parameter in one group
    mults = _block_mults(opt)
    n = max(mults) + 1
    # MiT-B0: patch_embed + blocks + norm per stage: (1 + 2 + 1) x 4 = 16 blocks
    assert n == 16
    assert mults[-1] == 1.0
    for b in range(n):
        assert mults[b] == pytest.approx(0.8 ** (n - b))
    first = ids_by_group[id(enc.patch_embed1.proj.weight)]
    deepest = ids_by_group[id(enc.block4[-1].mlp.fc1.weight)]
    assert first["block"] == 0 and deepest["block"] == n - 2            # norm4 is the last block
    assert first["lr"] == pytest.approx(peak * 0.8 ** 16)
    stage2 = ids_by_group[id(enc.block2[0].attn.q.weight)]
    assert stage2["block"] == 5 and stage2["weight_decay"] > 0
    assert ids_by_group[id(enc.block2[0].attn.q.bias)]["weight_decay"] == 0.0


def test_explicit_tiers_split_blocks_shallow_to_deep(one_thread):
    model, opt, peak = _groups("train.layer_tiers=[0.25,0.5,1.0]", "train.head_lr_mult=1.5")
    mults = _block_mults(opt)
    enc_blocks = [mults[b] for b in sorted(mults) if b >= 0]
    assert enc_blocks == [0.25] * 6 + [0.5] * 5 + [1.0] * 5               # 16 blocks in three tiers
    assert mults[-1] == 1.5
    head_w = next(g for g in opt.param_groups if g["name"] == "head")
    assert head_w["lr"] == pytest.approx(peak * 1.5)


def test_timm_encoder_uses_timm_group_matcher(one_thread):
    from mapsage.train.llrd import encoder_blocks
    model, opt, _ = _groups("model.arch=unet", "model.encoder=tu-convnext_atto", "train.layer_decay=0.7")
    blocks, how = encoder_blocks(model.encoder, "tu-convnext_atto")
    assert how == "timm"
    names = dict(model.encoder.named_parameters())
    assert blocks["model.stem_0.weight"] == 0
    assert blocks["model.stages_3.blocks.1.mlp.fc2.weight"] == max(blocks.values())
    assert blocks["model.stages_1.blocks.0.conv_dw.weight"] < blocks["model.stages_2.blocks.0.conv_dw.weight"]
    mults = _block_mults(opt)
    n = max(mults) + 1
    assert [mults[b] for b in range(n)] == pytest.approx([0.7 ** (n - b) for b in range(n)])
    assert len(names) == sum(len(g["params"]) for g in opt.param_groups if g["block"] >= 0)


def test_smp_resnet_blocks_by_name(one_thread):
    from mapsage.train.llrd import encoder_blocks
    model, opt, _ = _groups("model.arch=unet", "model.encoder=resnet18", "train.layer_decay=0.9")
    blocks, how = encoder_blocks(model.encoder, "resnet18")
    assert how == "names"
    assert blocks["conv1.weight"] == 0 and blocks["bn1.weight"] == 1
    assert blocks["layer1.0.conv1.weight"] == 2 and blocks["layer4.1.bn2.bias"] == 9
    assert max(_block_mults(opt)) == 9


def test_training_applies_block_lrs(one_thread):
    """One optimiser step through the schedule: every group's LR is peak × its multiplier × schedule factor."""
    from mapsage.train.optim import build_scheduler
    model, opt, peak = _groups("train.layer_decay=0.5", "train.warmup_epochs=0", "train.epochs=2")
    _c = tiny_cfg
    sched = build_scheduler(opt, _c("train.layer_decay=0.5", "train.warmup_epochs=0", "train.epochs=2"), peak, 3)
    sched.step()
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(sched.current_lr * g["lr_mult"])
    assert len({g["lr"] for g in opt.param_groups}) > 10


def test_bad_decay_names_the_key():
    from mapsage.config import ConfigError
    with pytest.raises(ConfigError, match="train.layer_decay"):
        _groups("train.layer_decay=1.5")
