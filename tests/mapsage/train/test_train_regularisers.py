"""Regularisers: head dropout and stochastic depth are in the model, SWA's weights are the average of the
epochs' weights and its BatchNorm statistics are recomputed from training batches."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from tests.support.train import tiny_cfg


def test_head_dropout_active_in_training_only(one_thread):
    from mapsage.models import build_model
    base = build_model(tiny_cfg())
    model = build_model(tiny_cfg("model.dropout=0.5"))
    assert list(model.state_dict()) == list(base.state_dict())        # same keys: checkpoints interchange
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))


def test_drop_path_rates_rise_over_blocks(one_thread):
    from timm.layers import DropPath

    from mapsage.models import build_model
    model = build_model(tiny_cfg("model.drop_path=0.3"))
    enc = model.encoder
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for s in (enc.block1, enc.block2, enc.block3, enc.block4)
             for b in s]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3) and rates == sorted(rates)
    assert isinstance(enc.block4[-1].drop_path, DropPath)
    off = build_model(tiny_cfg("model.drop_path=0"))
    assert all(isinstance(b.drop_path, nn.Identity) for b in off.encoder.block4)
    from mapsage.config import ConfigError
    with pytest.raises(ConfigError, match="model.drop_path"):
        build_model(tiny_cfg("model.arch=unet", "model.encoder=resnet18", "model.drop_path=0.2"))


class TinyBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


def test_swa_weights_are_the_average_and_bn_is_recomputed():
    from mapsage.train.swa import Swa
    cfg = tiny_cfg("train.epochs=4", "train.swa.enabled=true", "train.swa.start_epoch=1")
    torch.manual_seed(0)
    model = TinyBN()
    swa = Swa(model, cfg)
    snaps = []
    for epoch in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        if swa.after_epoch(model, epoch):
            snaps.append({k: v.clone() for k, v in model.named_parameters()})
    assert swa.epochs == [1, 2, 3]
    avg = swa.module
    for name, p in avg.named_parameters():
        assert torch.allclose(p, torch.stack([s[name] for s in snaps]).mean(0), atol=1e-6)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(2, 3, 8, 8, generator=g) * 2 + 1 for _ in range(5)]
    used = swa.update_bn(iter(batches), torch.device("cpu"), max_batches=4)
    assert used == 4
    with torch.no_grad():
        feats = [avg.conv(b) for b in batches[:4]]
    # momentum=None during update_bn: the running mean is the average of the batch means
    want_mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    assert torch.allclose(avg.bn.running_mean, want_mean, atol=1e-5)
    assert not torch.allclose(avg.bn.running_mean, model.bn.running_mean)
    assert avg.bn.momentum == model.bn.momentum                         # restored after the update


def test_engine_saves_and_validates_swa(tmp_path, one_thread):
    from mapsage.events import EventWriter, read_events
    from mapsage.train import Trainer, load_checkpoint
    cfg = tiny_cfg("train.epochs=2", "train.swa.enabled=true", "train.swa.start_epoch=0", "train.ema.enabled=false",
                   "eval.max_tiles=1", "eval.save_predictions=false")
    tr = Trainer(cfg, run_dir=tmp_path, events=EventWriter(tmp_path), show_bar=False)
    tr.fit()
    recs, _ = read_events(tmp_path / "events.jsonl")
    logs = [r["message"] for r in recs if r["type"] == "log"]
    assert any(m.startswith("SWA: averaged the weights of epochs 0..1 (2 epoch(s))") for m in logs)
    assert any(r["type"] == "metrics" and r.get("variant") == "swa" for r in recs)
    ck = load_checkpoint(tmp_path / "checkpoints" / "swa.pth")
    assert ck["kind"] == "swa" and set(ck["model"]) == set(tr.model.state_dict())
