"""Decoder add-ons by registry: the built-in multi-scale attention is applied to the decoder output, starts as the
identity, trains, counts its parameters and follows EMA copies; unknown names are refused."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from tests.support.train import tiny_cfg


def test_msa_addon_is_applied_counted_and_starts_as_identity(one_thread):
    from mapsage.models import build_model
    torch.manual_seed(0)
    base = build_model(tiny_cfg())
    torch.manual_seed(0)
    model = build_model(tiny_cfg("model.addons=[msa]"))
    rep = model.addon_report
    assert rep[0]["name"] == "msa"
    assert rep[0]["params"] == sum(p.numel() for p in model.addons.parameters()) > 0
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in base.parameters())
    assert extra == rep[0]["params"]
    assert all(k.startswith("addons.") for k in set(model.state_dict()) - set(base.state_dict()))
    x = torch.randn(1, 3, 64, 64)
    base.eval()
    model.eval()
    model.load_state_dict(base.state_dict(), strict=False)
    with torch.no_grad():
        assert torch.allclose(model(x), base(x), atol=1e-6)          # scale 0: the identity at the start
        model.addons[0].scale.fill_(1.0)
        assert not torch.allclose(model(x), base(x), atol=1e-4)      # and it is in the path
        ema = copy.deepcopy(model)
        ema.addons[0].scale.fill_(0.0)                               # the copy calls its own add-on
        assert torch.allclose(ema(x), base(x), atol=1e-6)
        assert not torch.allclose(model(x), base(x), atol=1e-4)


def test_addon_gets_gradients_and_head_lr(one_thread):
    from mapsage.models import build_model
    from mapsage.train.optim import param_groups
    cfg = tiny_cfg("model.addons=[msa]")
    model = build_model(cfg)
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert model.addons[0].scale.grad is not None and float(model.addons[0].scale.grad.abs()) > 0
    head = {id(p) for g in param_groups(model, cfg) if g["name"].startswith("head") for p in g["params"]}
    assert all(id(p) in head for p in model.addons.parameters())


def test_unknown_addon_names_the_key():
    from mapsage.config import ConfigError
    from mapsage.models import build_model
    with pytest.raises(ConfigError, match="model.addons"):
        build_model(tiny_cfg("model.addons=[nope]"))


def test_registry_accepts_new_addons(one_thread):
    from mapsage.models import build_model
    from mapsage.models.addons import ADDONS, register_addon

    @register_addon("test_scale")
    def _f(channels):
        return nn.Conv2d(channels, channels, 1)
    try:
        m = build_model(tiny_cfg("model.addons=[test_scale, msa]"))
        assert [r["name"] for r in m.addon_report] == ["test_scale", "msa"]
        assert m.addon_report[0]["params"] == 256 * 256 + 256
    finally:
        ADDONS.pop("test_scale", None)
