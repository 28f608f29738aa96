"""Warm start of a whole segmentation model from a finished run: the warm-started model scores the source run's
validation mIoU before any training step; partial matches are reported; files are read weights-only."""
from __future__ import annotations

import pytest
import torch

from tests.support.train import DUBAI_CFG, tiny_cfg


class Payload:
    """An arbitrary object: a file holding one needs full unpickling."""


FAST_VAL = ["eval.max_tiles=1", "eval.save_predictions=false"]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    from mapsage.events import EventWriter
    from mapsage.train import Trainer
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("src")
    tr = Trainer(tiny_cfg("train.epochs=1", *FAST_VAL), run_dir=d, events=EventWriter(d), show_bar=False)
    tr.fit()
    return d, dict(tr.best)


def _eval_before_training(*overrides, base=None):
    from mapsage.train import Trainer
    kw = {"base": base} if base else {}
    tr = Trainer(tiny_cfg(*FAST_VAL, *overrides, **kw), show_bar=False)
    tr._setup_runtime()
    tr._setup_data()
    tr._setup_model()
    assert tr.global_step == 0
    return tr, tr._evaluate(tr.model, "raw", -1)


@pytest.mark.parametrize("weights,key", [("raw", "raw"), pytest.param("ema", "ema", marks=pytest.mark.slow)])
def test_warm_start_reproduces_source_validation_miou(source_run, weights, key, one_thread):
    src, best = source_run
    tr, res = _eval_before_training(f"model.init_from={src}", f"model.init_weights={weights}")
    assert res.miou == pytest.approx(best[key], abs=1e-9)
    r = tr.warm_report
    assert r["loaded"] == r["total"] and not r["mismatched"] and r["weights"] == weights
    assert r["path"].endswith("best.pth" if weights == "raw" else "best_ema.pth")
    _, cold = _eval_before_training()
    assert cold.miou != pytest.approx(best[key], abs=1e-6)      # an untrained model scores differently


def test_other_class_count_keeps_own_head_and_reports_it(source_run, one_thread):
    from mapsage.models import build_model
    from mapsage.models.warm_start import describe, warm_start
    src, _ = source_run
    cfg = tiny_cfg("model.decoder_channels=256", base=DUBAI_CFG)      # 5 classes instead of LoveDA's 7
    model = build_model(cfg)
    r = warm_start(model, str(src))
    assert r["mismatched"] and all("segmentation_head" in m for m in r["mismatched"])
    assert r["param_share"] > 0.95
    text = describe(r)
    assert "shape-mismatched" in text and "[7, " in text
    enc_w = torch.load(str(src / "checkpoints" / "best_ema.pth"), weights_only=True)["ema"]
    assert torch.equal(model.state_dict()["net.encoder.block1.0.attn.q.weight"],
                       enc_w["net.encoder.block1.0.attn.q.weight"])


def test_files_are_read_weights_only(tmp_path):
    from mapsage.errors import CheckpointError
    from mapsage.models import build_model
    from mapsage.models.warm_start import warm_start
    bad = tmp_path / "evil.pth"
    torch.save({"model": {"x": Payload()}}, bad)
    model = build_model(tiny_cfg())
    with pytest.raises(CheckpointError, match="refused to load|weights only"):
        warm_start(model, str(bad))
    with pytest.raises(CheckpointError, match="model.init_from"):
        warm_start(model, "no-such-run-id")
    plain = tmp_path / "plain.pth"
    torch.save(model.net.state_dict(), plain)         # a bare smp state dict (no "net." prefix)
    other = build_model(tiny_cfg())
    r = warm_start(other, str(plain))
    assert r["loaded"] == r["total"] and r["weights"] == "state dict"
