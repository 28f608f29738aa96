"""Model factory, local pretrained weights (timm / smp / mmsegmentation layouts), freezing, checkpointing."""
from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch

from mapsage.config import ConfigError
from mapsage.errors import CheckpointError
from mapsage.models import FreezeSchedule, build_model, encoder_units
from mapsage.models.pretrained import mmseg_mit_to_nvidia
from tests.support.train import tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

ARCH_ENCODERS = [
    ("segformer", "mit_b0"),
    ("unet", "resnet18"),
    ("unetplusplus", "tu-mobilenetv3_small_100"),
    ("deeplabv3plus", "tu-resnet18"),
    ("upernet", "mit_b0"),
    ("fpn", "tu-convnext_atto"),
    ("dpt", "tu-vit_tiny_patch16_dinov3_qkvb"),        # plain ViT (the DINOv3 track) under smp's DPT
]


@pytest.mark.parametrize("arch,encoder", ARCH_ENCODERS)
def test_each_arch_gives_logits_at_input_resolution(arch, encoder):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(f"model.arch={arch}", f"model.encoder={encoder}"))
    x = torch.randn(2, 3, 70, 90)                       # not a multiple of the output stride
    out = model(x)
    assert out.shape == (2, 7, 70, 90)
    out.mean().backward()                               # trains in train mode with a batch of 2
    assert any(p.grad is not None for p in model.encoder.parameters())
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 7, 70, 90)


def test_boundary_head_and_features():
    model = build_model(tiny_cfg("model.boundary_head=true", "model.decoder_channels=64"))
    out = model(torch.randn(2, 3, 64, 96), return_features=True)
    assert out["seg"].shape == (2, 7, 64, 96) and out["boundary"].shape == (2, 1, 64, 96)
    assert [f.shape[1] for f in out["features"]] == [32, 64, 160, 256]      # MiT-B0 stages
    assert out["decoder"].shape[1] == 64


def test_unknown_encoder_and_arch_are_config_errors():
    with pytest.raises(ConfigError, match="model.encoder"):
        build_model(tiny_cfg("model.encoder=mit_b9"))
    with pytest.raises(ConfigError, match="model.encoder"):
        build_model(tiny_cfg("model.arch=unetplusplus", "model.encoder=mit_b0"))


def test_grad_checkpointing_same_outputs_and_keys():
    torch.manual_seed(0)
    plain = build_model(tiny_cfg())
    ckpt = build_model(tiny_cfg("model.grad_checkpointing=true"))
    assert list(plain.state_dict()) == list(ckpt.state_dict())
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    a = plain(x)
    a.square().mean().backward()
    torch.manual_seed(1)
    b = ckpt(x)
    b.square().mean().backward()
    assert torch.allclose(a, b, atol=1e-5)
    ga = plain.encoder.block1[0].attn.q.weight.grad
    gb = ckpt.encoder.block1[0].attn.q.weight.grad
    assert torch.allclose(ga, gb, atol=1e-5)
    timm_model = build_model(tiny_cfg("model.encoder=tu-convnext_atto", "model.arch=fpn",
                                      "model.grad_checkpointing=true"))
    assert timm_model(torch.randn(2, 3, 64, 64)).shape[-2:] == (64, 64)
    with pytest.raises(ConfigError, match="model.grad_checkpointing"):
        build_model(tiny_cfg("model.arch=unet", "model.encoder=resnet18", "model.grad_checkpointing=true"))


# --------------------------------------------------------------------------------------------- pretrained


def test_pretrained_with_prefix_and_wrapper_loads_everything(tmp_path):
    torch.manual_seed(3)
    src = build_model(tiny_cfg())
    sd = {f"module.backbone.{k}": v for k, v in src.encoder.state_dict().items()}
    sd["decode_head.conv_seg.weight"] = torch.zeros(7, 256, 1, 1)         # a segmentation head: unexpected
    path = tmp_path / "segformer_loveda.pth"
    torch.save({"meta": {"epoch": 5}, "state_dict": sd}, path)
    torch.manual_seed(4)
    model = build_model(tiny_cfg(f"model.pretrained={path}"))
    rep = model.pretrained_report
    assert rep["loaded_share"] == 1.0 and rep["missing"] == []
    assert rep["unexpected"] == ["decode_head.conv_seg.weight"]
    for k, v in src.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[k], v), k


def test_pretrained_mmseg_mit_layout_is_converted(tmp_path):
    torch.manual_seed(5)
    src = build_model(tiny_cfg())
    nv = src.encoder.state_dict()
    # mmsegmentation's tools/model_converters/mit2mmseg.py layout, written here from its documented rules
    mm = OrderedDict()
    for k, v in nv.items():
        m = re.match(r"(patch_embed|block|norm)(\d)\.(.*)", k)
        kind, s, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "patch_embed":
            mm[f"backbone.layers.{s - 1}.0.{rest.replace('proj.', 'projection.')}"] = v
        elif kind == "norm":
            mm[f"backbone.layers.{s - 1}.2.{rest}"] = v
        else:
            j, _, sub = rest.partition(".")
            base = f"backbone.layers.{s - 1}.1.{j}."
            if sub.startswith("attn.q."):
                kv = nv[k.replace("attn.q.", "attn.kv.")]
                mm[base + "attn.attn.in_proj_" + sub.split(".")[-1]] = torch.cat([v, kv], 0)
            elif sub.startswith("attn.kv."):
                continue
            elif sub.startswith("attn.proj."):
                mm[base + "attn.attn.out_proj." + sub.split(".")[-1]] = v
            elif sub.startswith("mlp."):
                t = sub[4:].replace("fc1.", "0.").replace("dwconv.dwconv.", "1.").replace("fc2.", "4.")
                vv = v.reshape(*v.shape, 1, 1) if t in ("0.weight", "4.weight") else v
                mm[base + "ffn.layers." + t] = vv
            else:
                mm[base + sub] = v
    back = mmseg_mit_to_nvidia(mm)
    assert set(back) == set(nv)
    path = tmp_path / "mmseg_mit_b0.pth"
    torch.save({"state_dict": mm}, path)
    model = build_model(tiny_cfg(f"model.pretrained={path}"))
    assert model.pretrained_report["converted"] == "mmseg-mit"
    assert model.pretrained_report["loaded_share"] == 1.0
    x = torch.randn(1, 3, 64, 64)
    src.eval(), model.eval()
    with torch.no_grad():
        fa, fb = src.encoder(x), model.encoder(x)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(fa, fb))


def test_pretrained_timm_classification_checkpoint(tmp_path):
    import timm
    torch.manual_seed(6)
    clf = timm.create_model("resnet18", pretrained=False, num_classes=10)
    path = tmp_path / "resnet18_timm.pth"
    torch.save(clf.state_dict(), path)
    model = build_model(tiny_cfg("model.arch=unet", "model.encoder=tu-resnet18", f"model.pretrained={path}"))
    rep = model.pretrained_report
    assert rep["loaded_share"] == 1.0
    assert sorted(rep["unexpected"]) == ["fc.bias", "fc.weight"]
    assert torch.equal(model.encoder.model.conv1.weight, clf.conv1.weight)


def test_pretrained_refusals_and_messages(tmp_path):
    src = build_model(tiny_cfg())
    items = list(src.encoder.state_dict().items())
    half = dict(items[: len(items) // 3])
    path = tmp_path / "partial.pth"
    torch.save(half, path)
    with pytest.raises(CheckpointError, match="force_pretrained") as err:
        build_model(tiny_cfg(f"model.pretrained={path}"))
    assert "pretrained_min_loaded" in str(err.value) and str(path) in str(err.value)
    forced = build_model(tiny_cfg(f"model.pretrained={path}", "model.force_pretrained=true"))
    assert forced.pretrained_report["forced"] and forced.pretrained_report["loaded_share"] < 0.5
    lenient = build_model(tiny_cfg(f"model.pretrained={path}", "model.pretrained_min_loaded=0.2"))
    assert not lenient.pretrained_report["forced"]
    with pytest.raises(CheckpointError, match="model.pretrained: weights file not found"):
        build_model(tiny_cfg(f"model.pretrained={tmp_path / 'nope.pth'}"))
    for hub in ("imagenet", "timm/mit_b0", "hf-hub:smp-hub/mit_b0.imagenet"):
        with pytest.raises(CheckpointError, match="model.pretrained") as err:
            build_model(tiny_cfg(f"model.pretrained={hub}"))
        assert "local file" in str(err.value) and "never downloads" in str(err.value)


# --------------------------------------------------------------------------------------------- freezing


def test_freeze_then_unfreeze_one_group_every_n_epochs():
    model = build_model(tiny_cfg())
    units = [n for n, _ in encoder_units(model.encoder)]
    assert units[:5] == ["patch_embed1", "block1.0", "block1.1", "norm1", "patch_embed2"]   # forward order
    sched = FreezeSchedule(model.encoder, ratio=0.5, unfreeze_every=2, groups=4)
    assert [sched.frozen_at(e) for e in range(6)] == [2, 2, 1, 1, 0, 0]
    assert sched.apply(0)
    first, last = model.encoder.patch_embed1.proj.weight, model.encoder.block4[0].attn.q.weight
    stage2 = model.encoder.block2[0].attn.q.weight
    stage3 = model.encoder.block3[0].attn.q.weight
    assert not first.requires_grad and not stage2.requires_grad and stage3.requires_grad and last.requires_grad
    assert all(p.requires_grad for p in model.net.decoder.parameters())
    assert not sched.apply(1)                            # nothing changes within the interval
    assert sched.apply(2) and stage2.requires_grad and not first.requires_grad
    assert sched.apply(4) and first.requires_grad
    d = sched.describe(0)
    assert d["frozen_groups"] == 2 and 0 < d["frozen_share"] < 0.5       # early stages hold few parameters
