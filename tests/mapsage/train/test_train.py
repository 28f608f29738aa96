"""The training engine: LR schedule, layer-wise groups, EMA, sampling, CutMix/MixUp, resume, NaN handling,
validation through mapsage.infer, checkpoints and load_for_inference -- on the bundled LoveDA tiles."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from mapsage.errors import CheckpointError, TrainingError
from mapsage.events import EventWriter, read_events
from mapsage.schedules import LRSchedule
from mapsage.stage import StageContext
from mapsage.train import (
    BatchMixer,
    EpochSampler,
    ModelEma,
    Trainer,
    build_optimizer,
    class_aware_weights,
    effective_lr,
    load_for_inference,
)
from mapsage.train.checkpoint import load_checkpoint
from mapsage.train.mixing import cutmix_partners
from tests.support.train import tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

# ---------------------------------------------------------------------------------------------- optimisation


def test_warmup_cosine_values():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p], "lr_mult": 0.65}], lr=1.0)
    s = LRSchedule(opt, peak_lr=1e-3, total_steps=110, warmup_steps=10, warmup_ratio=0.1, min_lr_ratio=0.01)
    assert s.lr_at(0) == pytest.approx(1e-4)
    assert s.lr_at(5) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert s.lr_at(10) == pytest.approx(1e-3)
    assert s.lr_at(10 + 99 // 2) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 49 / 99))))
    assert s.lr_at(109) == pytest.approx(1e-5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.65e-4)          # the group's multiplier applies
    for _ in range(10):
        s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.65e-3)
    lrs = [s.lr_at(t) for t in range(110)]
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11])) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    s2 = LRSchedule(opt, 1e-3, 110, 10, warmup_ratio=0.1, min_lr_ratio=0.01)
    s2.load_state_dict(s.state_dict())
    assert s2.current_lr == s.current_lr


def test_layerwise_groups_and_linear_lr_scaling():
    from mapsage.models import build_model
    cfg = tiny_cfg("train.batch_size=8", "train.accumulate=2", "train.base_batch=8", "train.lr=6e-5")
    assert effective_lr(cfg, world_size=2) == pytest.approx(6e-5 * 4)
    assert effective_lr(tiny_cfg("train.scale_lr=false", "train.batch_size=8"), 4) == pytest.approx(6e-4)
    model = build_model(cfg)
    opt, peak = build_optimizer(model, cfg, world_size=1)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert groups["backbone"]["lr_mult"] == 0.65 and groups["head"]["lr_mult"] == 1.0
    assert groups["backbone"]["lr"] == pytest.approx(peak * 0.65)
    assert groups["head_no_decay"]["weight_decay"] == 0.0 and groups["head"]["weight_decay"] == 0.01
    enc = {id(p) for p in model.encoder.parameters()}
    assert all(id(p) in enc for p in groups["backbone"]["params"] + groups["backbone_no_decay"]["params"])
    assert all(p.ndim > 1 for p in groups["backbone"]["params"])
    n = sum(len(g["params"]) for g in opt.param_groups)
    assert n == len(list(model.parameters()))


def test_ema_update_rule():
    net = nn.Linear(3, 2)
    ema = ModelEma(net, decay=0.9, warmup=False)
    before = ema.module.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    assert ema.update(net) == pytest.approx(0.9)
    assert torch.allclose(ema.module.weight, 0.9 * before + 0.1 * net.weight)
    warm = ModelEma(net, decay=0.999, warmup=True)
    assert warm.decay_at(0) == pytest.approx(0.1) and warm.decay_at(90) == pytest.approx(0.91)
    assert warm.decay_at(10 ** 6) == pytest.approx(0.999)
    assert not any(p.requires_grad for p in warm.module.parameters())


# ---------------------------------------------------------------------------------------------- sampling, mixing


def test_epoch_sampler_shards_and_is_deterministic():
    s0 = EpochSampler(10, 24, seed=3, rank=0, world_size=2)
    s1 = EpochSampler(10, 24, seed=3, rank=1, world_size=2)
    s0.set_epoch(4), s1.set_epoch(4)
    a, b = list(s0), list(s1)
    assert len(a) == len(b) == 12
    merged = sorted(a + b)
    assert merged == sorted(s0.global_indices().tolist())
    assert all(merged.count(i) in (2, 3) for i in range(10))          # whole passes over the data
    again = EpochSampler(10, 24, seed=3, rank=0, world_size=2)
    again.set_epoch(4)
    assert list(again) == a
    again.set_epoch(5)
    assert list(again) != a
    again.set_epoch(4, start_index=5)
    assert list(again) == a[5:] and len(again) == 7


def test_class_aware_weights_favour_rare_classes():
    from mapsage.data import build_dataset
    from mapsage.train.sampler import cached_sample_class_counts
    counts = np.array([[1000, 0, 0], [900, 100, 0], [800, 150, 50], [1000, 0, 0]])
    w = class_aware_weights(counts, temperature=0.1)
    assert w.sum() == pytest.approx(1.0)
    assert w[2] > w[1] > w[0] and w[0] == pytest.approx(w[3])
    cfg = tiny_cfg()
    ds = build_dataset(cfg, "train", train=False)
    real = cached_sample_class_counts(ds, cfg)
    assert real.shape == (2, 7) and real.sum() > 0
    assert np.array_equal(cached_sample_class_counts(ds, cfg), real)    # from the cache file
    rw = class_aware_weights(real, cfg.augment.class_aware_temp)
    assert rw.shape == (2,) and rw.sum() == pytest.approx(1.0)


def test_cutmix_mixes_only_within_a_domain():
    g = torch.Generator().manual_seed(0)
    domains = ["Urban", "Rural", "Urban", "Rural", "Rural", "Urban"]
    for _ in range(20):
        partners = cutmix_partners(domains, [True] * 6, g, same_domain=True)
        assert all(domains[j] == domains[i] and j != i for i, j in enumerate(partners))
    lone = cutmix_partners(["Urban", "Rural"], [True, True], g, same_domain=True)
    assert lone == [None, None]
    free = cutmix_partners(["", ""], [True, True], g, same_domain=True)       # no domain tags: mix freely
    assert free == [1, 0]
    cfg = tiny_cfg("augment.cutmix_p=1.0")
    mixer = BatchMixer(cfg.augment)
    mixer.seed(1)
    n = 6
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous()
    masks = torch.arange(n).view(n, 1, 1).expand(n, 32, 32).contiguous()
    out, targets, info = mixer(images, masks, domains)
    assert info["cutmix"] > 0
    for i in range(n):
        vals = set(torch.unique(targets.mask[i]).tolist())
        assert vals <= {j for j in range(n) if domains[j] == domains[i]}
        assert set(torch.unique(out[i]).tolist()) == {float(v) for v in vals}
    assert any(len(torch.unique(targets.mask[i])) == 2 for i in range(n))


def test_mixup_gives_soft_targets():
    cfg = tiny_cfg("augment.mixup_p=1.0", "augment.mixup_alpha=0.2")
    mixer = BatchMixer(cfg.augment)
    mixer.seed(2)
    images = torch.stack([torch.full((3, 8, 8), float(i)) for i in range(4)])
    masks = torch.arange(4).view(4, 1, 1).expand(4, 8, 8).contiguous()
    masks[0, 0, 0] = 255
    out, t, info = mixer(images, masks)
    assert t.is_soft and 0.5 <= t.lam < 1.0 and info["mixup"] == t.lam
    partner = t.mask_b[:, 1, 1]
    assert torch.allclose(out[:, 0, 1, 1], t.lam * torch.arange(4.0) + (1 - t.lam) * partner.float())
    q = t.soft(4)
    assert not t.valid()[0, 0, 0] and q[0, :, 0, 0].sum() == 0
    assert q[:, :, 1, 1].sum(1).allclose(torch.ones(4))


# ---------------------------------------------------------------------------------------------- engine runs


def _stop_when(path):
    return lambda: path.exists()


def test_resume_continues_with_identical_state(tmp_path):
    cfg = tiny_cfg("train.epochs=2", "augment.cutmix_p=0.5", "augment.mixup_p=0.5", "train.accumulate=2",
                   "train.steps_per_epoch=2")
    full = Trainer(cfg, run_dir=tmp_path / "full", events=EventWriter(tmp_path / "full"), validate=False,
                   show_bar=False)
    full.fit()
    part_dir = tmp_path / "part"
    first = Trainer(cfg, run_dir=part_dir, events=EventWriter(part_dir), validate=False, show_bar=False,
                    should_stop=_stop_when(part_dir / "checkpoints" / "last.pth"))
    out = first.fit()
    assert out["stopped"] == "cancelled" and out["epochs_done"] == 1
    assert load_checkpoint(part_dir / "checkpoints" / "last.pth")["epoch"] == 0
    second = Trainer(cfg, run_dir=part_dir, events=EventWriter(part_dir), validate=False, show_bar=False)
    out2 = second.fit(resume_from=part_dir / "checkpoints" / "last.pth")
    assert out2["epochs_done"] == 2 and out2["global_step"] == 4
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pth")
    b = load_checkpoint(part_dir / "checkpoints" / "last.pth")
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert a["scheduler"] == b["scheduler"] and a["global_step"] == b["global_step"] == 4
    assert a["ema_updates"] == b["ema_updates"] == 4
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)
    assert [g["lr"] for g in a["optimizer"]["param_groups"]] == [g["lr"] for g in b["optimizer"]["param_groups"]]
    msgs = [r["message"] for r in read_events(part_dir / "events.jsonl")[0] if r["type"] == "log"]
    assert any(m.startswith("resumed from") for m in msgs)


class _NaNAtEpoch(nn.Module):
    """A distillation-hook style extra loss that turns NaN at a given epoch."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch
        self.calls = 0

    def forward(self, batch, outputs):
        self.calls += 1
        assert set(batch) >= {"images", "targets", "ids", "domains", "epoch", "step"}
        value = outputs.sum() * 0.0
        return value + float("nan") if batch["epoch"] >= self.epoch else value


def test_nan_loss_fails_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_cfg("train.epochs=3")
    run = tmp_path / "nan"
    hook = _NaNAtEpoch(1)
    trainer = Trainer(cfg, run_dir=run, events=EventWriter(run), validate=False, show_bar=False,
                      extra_losses={"probe": hook})
    with pytest.raises(TrainingError) as err:
        trainer.fit()
    msg = str(err.value)
    assert "epoch 1, step 0" in msg and "train.lr" in msg and "train.grad_clip" in msg and "last.pth" in msg
    assert hook.calls == 3                                  # 2 good steps, then the NaN one
    ckpt = load_checkpoint(run / "checkpoints" / "last.pth")
    assert ckpt["epoch"] == 0 and all(torch.isfinite(v).all() for v in ckpt["model"].values()
                                      if v.dtype.is_floating_point)
    records, _ = read_events(run / "events.jsonl")
    assert any(r["type"] == "log" and r["level"] == "error" and "non-finite" in r["message"] for r in records)


def test_stage_run_validates_through_infer_and_checkpoints_agree(tmp_path):
    from mapsage.data import build_dataset
    from mapsage.infer import evaluate
    from mapsage.train.stage import run
    cfg = tiny_cfg("train.epochs=2", "train.val_every=2", "model.boundary_head=true",
                   "loss.schedule=[{from_epoch: 0, terms: {ce: 0.7, dice: 0.3}}, "
                   "{from_epoch: 1, terms: {ce: 0.6, dice: 0.3, boundary: 0.1}}]",
                   "augment.class_aware_sampling=true")
    rdir = tmp_path / "run"
    beats = []
    ctx = StageContext(cfg=cfg, run_id="run", run_dir=rdir, events=EventWriter(rdir), heartbeat_every_s=0.0)
    orig = ctx.progress
    ctx.progress = lambda **kw: (beats.append(kw), orig(**kw))
    summary = run(ctx)
    assert summary["epochs_done"] == 2
    records, _ = read_events(rdir / "events.jsonl")
    metrics = [r for r in records if r["type"] == "metrics" and r["domain"] == "all"]
    assert sorted((r["epoch"], r["variant"]) for r in metrics) == [(1, "ema"), (1, "raw")]     # val_every=2
    assert all(r["split"] == "val" and r["n_images"] == 1 for r in metrics)
    assert {len(r["classes"]) for r in metrics} == {7} and all("mbiou" in r["summary"] for r in metrics)
    assert sum(r["type"] == "tiles" for r in records) == 2
    epoch_scalars = [r["values"] for r in records if r["type"] == "scalars" and r["split"] == "train_epoch"]
    for key in ("loss", "ce", "dice", "lr", "grad_norm", "epoch_time", "data_time", "peak_mem_mb",
                "images_per_s", "loss_w/ce"):
        assert key in epoch_scalars[0], key
    assert "val_time" in epoch_scalars[1] and "val_time" not in epoch_scalars[0]
    assert "boundary" in epoch_scalars[1] and "boundary_head" in epoch_scalars[1]
    step_scalars = [r for r in records if r["type"] == "scalars" and r["split"] == "train"]
    assert len(step_scalars) == 4 and all("grad_norm" in r["values"] for r in step_scalars)
    logs = [r["message"] for r in records if r["type"] == "log"]
    assert any("loss = ce 0.6 + dice 0.3 + boundary 0.1" in m for m in logs)
    assert any("class-aware sampling" in m for m in logs)
    assert any(r["type"] == "run_info" and r.get("steps_per_epoch") == 2 for r in records)
    assert beats and beats[-1]["epoch"] == 1 and 0 < beats[-1]["frac"] <= 1.0
    ckdir = rdir / "checkpoints"
    assert {p.name for p in ckdir.iterdir()} >= {"last.pth", "best.pth", "best_ema.pth"}
    # the checkpoint's weights give the number training logged, through the same evaluate path
    best = load_checkpoint(ckdir / "best_ema.pth")
    model, cfg2 = load_for_inference(ckdir / "best_ema.pth", weights="ema")
    assert model.weights_variant == "ema" and cfg2.model.boundary_head
    val = build_dataset(cfg2, "val")
    res = evaluate(model, val, cfg2, split="val", variant="check", device="cpu", show_bar=False)
    logged = next(r for r in metrics if r["variant"] == "ema" and r["epoch"] == best["epoch"])
    assert res.miou == pytest.approx(logged["summary"]["miou"], abs=1e-9)
    assert np.array_equal(np.asarray(res.confusion), np.asarray(logged["confusion"]))
    raw_model, _ = load_for_inference(rdir, weights="raw")                  # a run folder works too
    assert raw_model.weights_variant == "raw"
    with pytest.raises(CheckpointError, match="weights"):
        load_for_inference(ckdir / "best.pth", weights="fp16")


def test_early_stopping_and_no_ema(tmp_path):
    cfg = tiny_cfg("train.epochs=4", "train.lr=0.0", "train.ema.enabled=false", "train.early_stop.patience=1",
                   "train.early_stop.min_delta=0.0")
    rdir = tmp_path / "es"
    out = Trainer(cfg, run_dir=rdir, events=EventWriter(rdir), show_bar=False).fit()
    assert out["stopped"] == "early_stop" and out["epochs_done"] == 2           # lr 0: nothing improves
    assert out["best"]["raw_epoch"] == 0 and out["best"]["ema"] is None
    assert not (rdir / "checkpoints" / "best_ema.pth").exists()
    with pytest.raises(CheckpointError, match="no EMA weights"):
        load_for_inference(rdir / "checkpoints" / "best.pth", weights="ema")
    m, _ = load_for_inference(rdir / "checkpoints" / "best.pth", weights="auto")
    assert m.weights_variant == "raw"
    logs = [r["message"] for r in read_events(rdir / "events.jsonl")[0] if r["type"] == "log"]
    assert any("early stopping at epoch 1" in m for m in logs)


def test_mid_epoch_stop_saves_position(tmp_path):
    cfg = tiny_cfg("train.epochs=2", "train.steps_per_epoch=3")
    rdir = tmp_path / "mid"
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3            # the fit-level check, then steps 0 and 1 of epoch 0 run, then stop

    out = Trainer(cfg, run_dir=rdir, events=EventWriter(rdir), validate=False, show_bar=False,
                  should_stop=stop).fit()
    assert out["stopped"] == "cancelled"
    ck = load_checkpoint(rdir / "checkpoints" / "last.pth")
    assert ck["epochs_done"] == 0 and ck["step_in_epoch"] == 2 and ck["global_step"] == 2
    resumed = Trainer(cfg, run_dir=rdir, events=EventWriter(rdir), validate=False, show_bar=False)
    out2 = resumed.fit(resume_from=rdir / "checkpoints" / "last.pth")
    assert out2["global_step"] == 6 and out2["epochs_done"] == 2
