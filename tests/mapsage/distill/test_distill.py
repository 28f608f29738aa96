"""Stage-2 knowledge distillation (mapsage.distill): small randomly initialised timm ViT teachers written to files,
real LoveDA / Dubai tiles for the students' inputs, the training engine's extra-loss hook, resume, the A/B stage
and its rows in the store and on the app's A/B page."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mapsage.config import ConfigError, load_config
from mapsage.distill import (
    FEAT,
    LOGIT,
    TeacherViewDataset,
    attention_transfer,
    build_distill_losses,
    build_teacher,
    cache_rule,
    feature_l2,
    kd_kl,
    make_random_teacher,
)
from mapsage.distill.stage import BASELINE_VARIANT, CHILD_SUFFIX, budget_differences
from mapsage.distill.targets import VIEW_KEY, TeacherTargets
from mapsage.errors import CheckpointError, UserError
from mapsage.events import EventWriter, read_events
from mapsage.stage import StageContext
from mapsage.train import collate
from tests.support.train import DUBAI_CFG, tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[3]
DEMO_TEMPLATE = ROOT / "configs" / "stage2_losses_aug_distill" / "distill_demo_segformer_mit-b0_dubai.yaml"
TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    """A randomly initialised tiny DINOv2-layout ViT (patch 14, 56 px windows), saved like real weights."""
    path = tmp_path_factory.mktemp("teacher") / "tiny_vit_random-init.pth"
    make_random_teacher(path, "vit_small_patch14_dinov2", TINY_VIT, img_size=56, seed=0, dtype=torch.float32)
    return path


def kd(teacher_file: Path, *extra: str) -> list[str]:
    return ["distill.enabled=true", f"distill.teacher.weights={teacher_file}",
            "distill.teacher.model=vit_small_patch14_dinov2", "distill.teacher.img_size=56",
            "distill.teacher.model_kwargs={embed_dim: 32, depth: 2, num_heads: 2}", *extra]


def real_batch(cfg, n: int = 2, view: bool = False) -> dict:
    """An engine-style extra-loss batch of real training crops (LoveDA tiles for tiny_cfg)."""
    from mapsage.data import build_dataset
    from mapsage.losses import Targets
    torch.manual_seed(0)
    ds = build_dataset(cfg, cfg.dataset.train_split, train=True)
    if view:
        ds = TeacherViewDataset(ds)
    b = collate([ds[i % len(ds)] for i in range(n)])
    return {"images": b["image"], "targets": Targets(mask=b["mask"], ignore_index=cfg.loss_ignore_index),
            "ids": b["id"], "domains": b["domain"], "epoch": 0, "step": 0,
            "extra": {k: v for k, v in b.items() if k not in ("image", "mask", "id", "domain")}, "_ds": ds}


# ------------------------------------------------------------------------------------------------ the teacher


def test_teacher_is_frozen_in_eval_mode_and_gives_patch_grids(teacher_file):
    cfg = tiny_cfg(*kd(teacher_file))
    t = build_teacher(cfg, "cpu")
    assert t.kind == "timm" and t.dim == 32 and t.stride == 14 and t.window == 56 and not t.has_logits
    assert t.params > 0 and not any(p.requires_grad for p in t.module.parameters())
    t.module.train()                       # a teacher cannot be put back into training mode
    assert not t.module.training and not any(m.training for m in t.module.modules())
    t.check_frozen()
    batch = real_batch(cfg)
    feat, logits = t.targets(batch["images"])
    assert feat.shape == (2, 32, 5, 5) and feat.dtype == torch.float32 and logits is None   # round(64/14) = 5
    assert t.grid_for(64, 64) == (5, 5) and t.forward_images == 2
    # the weights are the file's: a fresh build gives the same features
    feat2, _ = build_teacher(cfg, "cpu").targets(batch["images"])
    assert torch.equal(feat, feat2)
    # whole-tile features are the windows' features stitched in place (a real 112 x 70 piece of a LoveDA tile:
    # 2 x 2 windows of 56 px after padding; the top-left window alone gives the top-left 4 x 4 cells)
    from mapsage.data import build_dataset, get_normalization
    from mapsage.data.normalization import normalize_image
    piece = build_dataset(cfg, "train").load_image(0)[:112, :70]
    tile, stride = t.tile_features(piece)
    assert tile.shape == (32, 8, 8) and stride == (14.0, 14.0)
    mean, std = get_normalization(cfg)
    for (y, x) in ((0, 0), (56, 0)):
        win, _ = t.targets(normalize_image(piece[y:y + 56, x:x + 56], mean, std)[None])
        assert torch.allclose(tile[:, y // 14:y // 14 + 4, :4].float(), win[0], atol=2e-2)
    # lower precision on the CPU: bf16 (fp16 is GPU-only and falls back to bf16 with a note)
    tb = build_teacher(tiny_cfg(*kd(teacher_file, "distill.teacher.precision=fp16")), "cpu")
    assert tb.dtype == torch.bfloat16 and any("fp16 is GPU-only" in n for n in tb.notes)
    fb, _ = tb.targets(batch["images"])
    assert fb.dtype == torch.float32 and F.cosine_similarity(fb.flatten(), feat.flatten(), dim=0) > 0.98


def test_teacher_weights_problems_are_clear_errors(teacher_file, tmp_path):
    with pytest.raises(CheckpointError, match=r"distill\.teacher\.weights is not set"):
        build_teacher(tiny_cfg(*kd(teacher_file), "distill.teacher.weights=null"), "cpu")
    with pytest.raises(CheckpointError, match=r"distill\.teacher\.weights: teacher weights file .* not found"):
        build_teacher(tiny_cfg(*kd(teacher_file), f"distill.teacher.weights={tmp_path / 'missing.pth'}"), "cpu")
    with pytest.raises(CheckpointError, match="other shapes"):      # the file of another model size
        build_teacher(tiny_cfg(*kd(teacher_file), "distill.teacher.model_kwargs={embed_dim: 48, depth: 2, "
                                                  "num_heads: 2}"), "cpu")
    with pytest.raises(CheckpointError, match="unfilled"):          # fewer blocks in the file than in the model
        build_teacher(tiny_cfg(*kd(teacher_file), "distill.teacher.model_kwargs={embed_dim: 32, depth: 3, "
                                                  "num_heads: 2}"), "cpu")
    with pytest.raises(ConfigError, match="not a ViT-style"):
        build_teacher(tiny_cfg(*kd(teacher_file), "distill.teacher.model=resnet18",
                               "distill.teacher.model_kwargs={}"), "cpu")
    with pytest.raises(ConfigError, match="logit"):                 # a backbone teacher has no logits
        build_distill_losses(tiny_cfg(*kd(teacher_file), "distill.logit_weight=0.5"),
                             build_teacher(tiny_cfg(*kd(teacher_file)), "cpu"), device="cpu")


def test_dinov3_architecture_loads_from_a_local_file(tmp_path):
    """The plan's DINOv3 family (timm Eva with RoPE, patch 16, register tokens) through the same loader."""
    path = tmp_path / "dinov3_tiny.pth"
    make_random_teacher(path, "vit_small_patch16_dinov3", {"embed_dim": 32, "depth": 1, "num_heads": 2},
                        img_size=64, dtype=torch.float32)
    cfg = tiny_cfg("distill.enabled=true", f"distill.teacher.weights={path}",
                   "distill.teacher.model=vit_small_patch16_dinov3.lvd1689m", "distill.teacher.img_size=64",
                   "distill.teacher.model_kwargs={embed_dim: 32, depth: 1, num_heads: 2}")
    t = build_teacher(cfg, "cpu")
    assert t.stride == 16 and t.dim == 32
    feat, _ = t.targets(torch.zeros(1, 3, 96, 64))
    assert feat.shape == (1, 32, 6, 4)
    tile, stride = t.tile_features(np.zeros((100, 70, 3), np.uint8))    # padded to 2 x 2 windows of 64 px
    assert tile.shape == (32, 8, 8) and stride == (16.0, 16.0) and tile.dtype == torch.float16


# ------------------------------------------------------------------------------------------------ the terms


def test_projected_student_stages_match_the_teacher_grid_and_only_the_student_learns(teacher_file):
    from mapsage.models import build_model
    cfg = tiny_cfg(*kd(teacher_file, "distill.student_stages=[0, 1, 2, -1]"))
    teacher = build_teacher(cfg, "cpu")
    losses, targets = build_distill_losses(cfg, teacher, device="cpu")
    assert set(losses) == {FEAT} and targets.mode == "off"
    term = losses[FEAT]
    assert [p.in_channels for p in term.proj] == [32, 64, 160, 256]       # SegFormer-B0 stages
    assert all(p.out_channels == teacher.dim for p in term.proj)
    torch.manual_seed(0)
    student = build_model(cfg)
    batch = real_batch(cfg)
    out = student(batch["images"], return_features=True)
    term.on_epoch_start(0)
    tg = targets.get(batch)
    assert tg.feat.shape == (2, teacher.dim, 5, 5)
    preds = term.project(out["features"], tg.feat.shape[-2:])
    assert [tuple(p.shape) for p in preds] == [tuple(tg.feat.shape)] * 4
    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    value = term(batch, out)
    assert value.ndim == 0 and torch.isfinite(value) and value > 0
    value.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in term.proj.parameters())
    assert student.encoder.patch_embed1.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.module.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.module.state_dict().items())
    assert targets.get(batch) is tg and teacher.forward_images == 2            # one teacher pass per batch
    with pytest.raises(ConfigError, match=r"distill\.student_stages \[4\] out of range"):
        build_distill_losses(tiny_cfg(*kd(teacher_file, "distill.student_stages=[4]")), teacher, device="cpu")


def test_kl_term_is_zero_for_equal_logits_and_t2_scaled():
    torch.manual_seed(0)
    s = torch.randn(2, 7, 16, 16)
    for T in (2.0, 3.0, 4.0):
        assert float(kd_kl(s, s.clone(), T)) == pytest.approx(0.0, abs=1e-6)
    t = torch.randn(2, 7, 16, 16)
    T = 3.0
    p_t = torch.softmax(t / T, 1)
    manual = (p_t * (torch.log_softmax(t / T, 1) - torch.log_softmax(s / T, 1))).sum(1).mean() * T * T
    assert float(kd_kl(s, t, T)) == pytest.approx(float(manual), rel=1e-5) and float(manual) > 0
    valid = torch.zeros(2, 16, 16, dtype=torch.bool)
    valid[:, :8] = True                     # only the top half is labelled
    s2 = s.clone()
    s2[:, :, 8:] = t[:, :, 8:]              # agreeing where unlabelled changes nothing ...
    assert float(kd_kl(s2, t, T, valid)) == pytest.approx(float(kd_kl(s, t, T, valid)), rel=1e-6)
    s2[:, :, :8] = t[:, :, :8]              # ... agreeing where labelled makes it zero
    assert float(kd_kl(s2, t, T, valid)) == pytest.approx(0.0, abs=1e-6)


def test_logit_distillation_from_a_workbench_checkpoint(tmp_path):
    """A segmentation checkpoint of the workbench as teacher: a student with the teacher's own weights has zero KL,
    another student does not; a teacher for other classes refuses logit distillation."""
    from mapsage.config import to_dict
    from mapsage.models import build_model
    from mapsage.train.checkpoint import save_checkpoint
    cfg0 = tiny_cfg()
    torch.manual_seed(1)
    net = build_model(cfg0)
    ckpt = save_checkpoint(tmp_path / "checkpoints" / "best.pth",
                           {"model": net.state_dict(), "ema": None, "epoch": 0, "config": to_dict(cfg0)})
    cfg = tiny_cfg("distill.enabled=true", "distill.teacher.kind=workbench", f"distill.teacher.weights={ckpt}",
                   "distill.logit_weight=1.0", "distill.feature_weight=0.5", "distill.teacher.layer=-1")
    teacher = build_teacher(cfg, "cpu")
    assert teacher.has_logits and teacher.stride == 32 and teacher.dim == 256
    losses, targets = build_distill_losses(cfg, teacher, device="cpu")
    assert set(losses) == {FEAT, LOGIT} and targets.mode == "off"     # logits: the teacher runs on every batch
    batch = real_batch(cfg)
    for term in losses.values():
        term.on_epoch_start(0)
    same = copy.deepcopy(net).eval()
    out = same(batch["images"], return_features=True)
    assert float(losses[LOGIT](batch, out).detach()) == pytest.approx(0.0, abs=1e-5)
    torch.manual_seed(2)
    other = build_model(cfg).eval()
    batch2 = dict(batch, images=batch["images"].clone())                 # a new batch: the teacher runs again
    assert float(losses[LOGIT](batch2, other(batch2["images"], return_features=True)).detach()) > 1e-3
    bad = tiny_cfg("distill.enabled=true", "distill.teacher.kind=workbench", f"distill.teacher.weights={ckpt}",
                   "distill.logit_weight=1.0", "dataset.classes=[a, b, c, d, e, f, g]")
    with pytest.raises(ConfigError, match="same classes"):
        build_distill_losses(bad, build_teacher(bad, "cpu"), device="cpu")


def test_feature_losses_ignore_invalid_cells_and_attention_is_scale_free():
    torch.manual_seed(0)
    t = torch.randn(2, 8, 5, 5) * 10
    ln = F.layer_norm(t.permute(0, 2, 3, 1), (8,)).permute(0, 3, 1, 2)
    assert float(feature_l2(ln, t)) == pytest.approx(0.0, abs=1e-10)
    s = torch.randn(2, 8, 5, 5)
    valid = torch.ones(2, 5, 5, dtype=torch.bool)
    valid[:, 0] = False
    s2 = s.clone()
    s2[:, :, 0] += 100                      # changes on invalid cells do not count
    assert float(feature_l2(s2, t, valid)) == pytest.approx(float(feature_l2(s, t, valid)))
    assert float(attention_transfer(s2, t, valid)) == pytest.approx(float(attention_transfer(s, t, valid)))
    assert float(attention_transfer(t, t)) == pytest.approx(0.0, abs=1e-10)
    assert float(attention_transfer(3 * s, t)) == pytest.approx(float(attention_transfer(s, t)), rel=1e-5)
    assert 0 < float(attention_transfer(s, t)) <= 4


# ------------------------------------------------------------------------------------------------ caching


def test_cache_rule(teacher_file):
    from mapsage.data import build_dataset
    cfg = tiny_cfg(*kd(teacher_file))
    ds = build_dataset(cfg, "train", train=True)
    # the two 1024 px LoveDA train tiles padded to 56 px windows: 2 x 1064^2 = 2.26 Mpx, computed once; against
    # 10 epochs x 2 steps x 2 crops of 256^2 = 2.62 Mpx on the fly -> tile; 4 epochs of 64 px crops -> on the fly
    mode, why = cache_rule(tiny_cfg(*kd(teacher_file, "train.epochs=10", "augment.crop_size=[256, 256]")), True,
                           ds, 56)
    assert mode == "tile" and "2 Mpx of tiles once instead of 3 Mpx of crops" in why
    mode, why = cache_rule(cfg, True, ds, 56)
    assert mode == "off" and "0.1 Mpx of crops against 2.3 Mpx of tiles" in why
    assert cache_rule(tiny_cfg(*kd(teacher_file, "distill.teacher.cache_mode=tile")), True, ds, 56)[0] == "tile"
    assert cache_rule(tiny_cfg(*kd(teacher_file, "augment.mixup_p=0.2")), True, ds)[0] == "off"
    assert cache_rule(tiny_cfg(*kd(teacher_file, "distill.teacher.cache_features=false")), True, ds)[0] == "off"
    wb = tiny_cfg("distill.enabled=true", "distill.teacher.kind=workbench", "distill.logit_weight=1.0")
    assert "logits" in cache_rule(wb, True, ds)[1]
    assert cache_rule(cfg, False, ds)[0] == "off"             # random crops without tile views
    fixed = tiny_cfg(*kd(teacher_file, "augment.enabled=false", "augment.crop_size=[1024, 1024]"))
    assert cache_rule(fixed, False, build_dataset(fixed, "train", train=True))[0] == "sample"


def test_tile_views_follow_the_mask_exactly_on_real_dubai_tiles():
    from mapsage.data import build_dataset
    cfg = load_config(DUBAI_CFG, ["augment.rotate_p=1.0", "augment.vflip=0.5", "augment.crop_size=[128, 128]"])
    torch.manual_seed(3)
    base = build_dataset(cfg, "train", train=True)
    torch.manual_seed(3)
    wrap = TeacherViewDataset(build_dataset(cfg, "train", train=True))
    for i in (0, 17, 40):
        a, b = base[i], wrap[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])   # no extra randomness
        v = b[VIEW_KEY]
        assert v.shape == (3, 32, 32)
        valid = v[2].numpy() > 0.5
        assert 0.5 < valid.mean() <= 1.0
        crop = b["mask"].numpy()[2::4, 2::4]
        full = base.load_mask(i)
        src = full[v[1].numpy().astype(int)[valid], v[0].numpy().astype(int)[valid]]
        assert (crop[valid] == src).all()      # every kept cell points at the tile pixel its label came from


def test_tile_cache_resamples_the_tile_map_through_each_crop(teacher_file):
    """A tile 'feature' map holding its own cell coordinates comes back, per crop cell, as the coordinates the crop
    cell came from: the geometry of the cached targets is exact."""
    cfg = tiny_cfg(*kd(teacher_file, "augment.rotate_p=1.0", "augment.vflip=0.5",
                       "distill.teacher.cache_mode=tile"))
    teacher = build_teacher(cfg, "cpu")
    batch = real_batch(cfg, n=3, view=True)
    ds = batch.pop("_ds")
    targets = TeacherTargets(teacher, cfg, mode="tile", dataset=ds)
    targets.on_epoch_start(0)
    for sid in set(batch["ids"]):
        h, w = ds.load_image(ds.index_of(sid)).shape[:2]
        gh, gw = -(-h // 14), -(-w // 14)
        yy, xx = torch.meshgrid(torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32),
                                indexing="ij")
        tile = torch.stack([xx, yy]).to(torch.float16)
        targets.cache.put(sid, (tile, (14.0, 14.0)), tile.numel() * 2)
    out = targets.get(batch)
    assert out.feat.shape == (3, 2, 5, 5) and out.valid.shape == (3, 5, 5)
    assert targets.stats["hits"] == 3 and teacher.forward_images == 0      # served from the cache
    views = batch["extra"][VIEW_KEY]
    idx = ((torch.arange(5) + 0.5) * 64 / 5 / 4).long()
    for b in range(3):
        c = views[b][:, idx][:, :, idx]
        ok = out.valid[b]
        assert ok.sum() > 10
        fx, fy = (c[0] + 0.5) / 14 - 0.5, (c[1] + 0.5) / 14 - 0.5
        assert torch.allclose(out.feat[b, 0][ok], fx[ok].clamp(min=0), atol=0.02)
        assert torch.allclose(out.feat[b, 1][ok], fy[ok].clamp(min=0), atol=0.02)


# ------------------------------------------------------------------------------------------------ training


class _Spy:
    """Keeps the teacher the stage builds, to look at it after training."""

    def __init__(self, monkeypatch):
        import mapsage.distill.stage as stage
        self.teachers = []
        real = stage.build_teacher

        def build(cfg, device):
            t = real(cfg, device)
            self.teachers.append((t, {k: v.clone() for k, v in t.module.state_dict().items()}))
            return t
        monkeypatch.setattr(stage, "build_teacher", build)

    def assert_unchanged(self):
        assert self.teachers
        for t, before in self.teachers:
            assert not t.module.training and not any(p.requires_grad for p in t.module.parameters())
            assert all(torch.equal(before[k], v) for k, v in t.module.state_dict().items())


class _StopAfterFirstEpoch(StageContext):
    """A cancel that arrives once the first epoch's last.pth is written."""

    def should_stop(self) -> bool:
        return (Path(self.run_dir) / "checkpoints" / "last.pth").exists()


@pytest.mark.slow
def test_distilled_training_keeps_the_teacher_frozen_and_resumes_exactly(teacher_file, tmp_path, monkeypatch):
    """A training config with distill.enabled goes through the engine's extra-loss hook (tile cache on); an
    interrupted run resumed from last.pth ends with the same student and projections as an uninterrupted one,
    and the teacher is frozen and unchanged in every process."""
    from mapsage.train.checkpoint import load_checkpoint
    from mapsage.train.stage import run
    spy = _Spy(monkeypatch)
    cfg = tiny_cfg(*kd(teacher_file, "train.epochs=2", "train.ema.enabled=false", "distill.teacher.cache_mode=tile",
                       "distill.schedule=[{from_epoch: 0, feature_weight: 1.0}, {from_epoch: 1, "
                       "feature_weight: 0.5}]"))
    full = tmp_path / "full"
    run(StageContext(cfg=cfg, run_id="full", run_dir=full, events=EventWriter(full)))
    part = tmp_path / "part"
    out = run(_StopAfterFirstEpoch(cfg=cfg, run_id="part", run_dir=part, events=EventWriter(part)))
    assert out["stopped"] == "cancelled" and out["epochs_done"] == 1
    resumed = tmp_path / "resumed"
    run(StageContext(cfg=cfg, run_id="resumed", run_dir=resumed, events=EventWriter(resumed),
                     resume_from=part / "checkpoints" / "last.pth"))
    spy.assert_unchanged()
    assert len(spy.teachers) == 3
    a = load_checkpoint(full / "checkpoints" / "last.pth")
    b = load_checkpoint(resumed / "checkpoints" / "last.pth")
    assert a["epochs_done"] == b["epochs_done"] == 2
    assert set(a["extra_losses"]) == {FEAT} and a["extra_losses"][FEAT].keys() == b["extra_losses"][FEAT].keys()
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-6), k
    for k in a["extra_losses"][FEAT]:
        assert torch.allclose(a["extra_losses"][FEAT][k], b["extra_losses"][FEAT][k], atol=1e-6), k
    p0 = load_checkpoint(part / "checkpoints" / "last.pth")["extra_losses"][FEAT]
    assert any(not torch.equal(p0[k], a["extra_losses"][FEAT][k]) for k in p0)      # the projections trained
    events = read_events(full / "events.jsonl")[0]
    logs = " ".join(r["message"] for r in events if r["type"] == "log")
    assert "teacher feature cache: tile" in logs and "teacher unchanged after training" in logs
    epoch_scalars = [r["values"] for r in events if r["type"] == "scalars" and r["split"] == "train_epoch"]
    assert [v["loss_w/kd/feat"] for v in epoch_scalars if "loss_w/kd/feat" in v] == [1.0, 0.5]
    assert all(v["kd/feat"] > 0 for v in epoch_scalars if "loss" in v)
    hits = [v["kd_cache_hits"] for v in epoch_scalars if "kd_cache_hits" in v]
    assert len(hits) == 2 and hits[1] > 0                      # epoch 2 reads the tiles cached in epoch 1
    assert not (tmp_path / f"full{CHILD_SUFFIX}").exists()     # a train run with distill.enabled has no A/B arm


def test_budget_differences_and_a_mismatched_baseline_reference(teacher_file, tmp_path):
    cfg = tiny_cfg(*kd(teacher_file))
    from mapsage.config import to_dict
    other = to_dict(cfg)
    assert budget_differences(cfg, other) == {}
    other["train"]["epochs"] = 7
    other["model"]["encoder"] = "mit_b1"
    assert set(budget_differences(cfg, other)) == {"train.epochs", "model.encoder"}
    from mapsage.config import config_from_dict
    from mapsage.models import build_model
    from mapsage.train.checkpoint import save_checkpoint
    ocfg = config_from_dict(other)
    ckpt = save_checkpoint(tmp_path / "b" / "checkpoints" / "best.pth",
                           {"model": build_model(ocfg).state_dict(), "ema": None, "epoch": 0, "config": other})
    from mapsage.distill.stage import _referenced_baseline
    with pytest.raises(UserError, match=r"same budget .*train\.epochs"):
        _referenced_baseline(tiny_cfg(*kd(teacher_file, "stage.kind=distill", f"distill.baseline={ckpt}")))


@pytest.mark.slow
def test_distill_template_runs_as_a_job_and_its_ab_rows_reach_the_store_and_the_app(teacher_file, tmp_path,
                                                                                    monkeypatch):
    """The stage-2 demo template through the job worker (stages registry -> mapsage.train.stage.run -> the distill
    stage): the distilled run, its no-teacher sibling, two ab rows in the store, both shown on the A/B page."""
    from streamlit.testing.v1 import AppTest

    import store
    from tests.support.app import run_in_process
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(ws))
    rid = run_in_process(str(DEMO_TEMPLATE.relative_to(ROOT)), [
        "train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2", "train.num_workers=0",
        "augment.crop_size=[128, 128]", "dataset.max_samples=3", "eval.mode=whole", "eval.save_predictions=false",
        "runtime.threads=1", "runtime.device=cpu", "train.ema.enabled=false", "model.freeze.unfreeze_every=1",
        f"distill.teacher.weights={teacher_file}", "distill.teacher.img_size=56",
        "distill.teacher.model_kwargs={embed_dim: 32, depth: 2, num_heads: 2}", "stage.name=test-distill-ab"])
    child = ws / "runs" / f"{rid}{CHILD_SUFFIX}"
    assert (child / "checkpoints" / "best.pth").is_file()
    child_events = read_events(child / "events.jsonl")[0]
    assert [r["status"] for r in child_events if r["type"] == "status"] == ["running", "succeeded"]
    info = [r for r in child_events if r["type"] == "run_info"][0]
    assert info["parent_run"] == rid and info["parent_relation"] == "distill-baseline" and info["kind"] == "train"
    store.ingest_all()
    ab = store.ab_rows(ab_kind="distill")
    assert list(ab["run_id"]) == [rid, rid]
    assert list(ab["variant"]) == [BASELINE_VARIANT, "kd=vit_small_patch14_dinov2"]
    assert list(ab["decision"])[0] == "baseline" and list(ab["decision"])[1] in ("keep", "drop")
    row = ab.iloc[1]
    assert row["gain"] == pytest.approx((row["miou"] - row["baseline_miou"]) * 100, abs=1e-4)
    details = json.loads(row["details_json"])
    assert details["arms"]["no-teacher"]["run_id"] == child.name and details["teacher"]["dim"] == 32
    parent, sibling = store.run(rid), store.run(child.name)
    assert parent["kind"] == "distill" and "KD(l2" in parent["loss"] and parent["status"] == "succeeded"
    assert sibling["kind"] == "train" and "KD(" not in sibling["loss"] and sibling["parent_run"] == rid
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=120)
    at.run()
    at.switch_page("views/tta_ab.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    texts = " ".join(str(m.value) for m in at.markdown)
    assert rid in texts and "criterion `miou`" in texts
    shown = at.dataframe[0].value
    assert list(shown["variant"]) == [BASELINE_VARIANT, "kd=vit_small_patch14_dinov2"]


def test_templates_load_and_name_the_missing_teacher(tmp_workspace):
    from mapsage.config import run_name
    folder = ROOT / "configs" / "stage2_losses_aug_distill"
    names = {}
    for path in sorted(folder.glob("distill_*.yaml")):
        cfg = load_config(path)
        assert cfg.stage.kind == "distill" and cfg.distill.enabled and cfg.stage.plan_stage == 2
        assert 2.0 <= cfg.distill.temperature <= 4.0 and cfg.distill.baseline == "train"
        names[path.stem] = (cfg, run_name(cfg))
    assert set(names) == {"distill_demo_segformer_mit-b0_dubai", "distill_logits_demo_segformer_mit-b0_dubai",
                          "distill_dinov3-sat_segformer_mit-b2_loveda"}
    assert len({n for _, n in names.values()}) == 3                     # distinct rows in the Runs table
    demo = names["distill_demo_segformer_mit-b0_dubai"][0]
    assert build_teacher(demo, "cpu").source.endswith("vit-tiny-p14_random-init.pth")   # the bundled demo teacher
    sat = names["distill_dinov3-sat_segformer_mit-b2_loveda"][0]
    assert sat.distill.teacher.model == "vit_large_patch16_dinov3.sat493m" and sat.model.encoder == "mit_b2"
    with pytest.raises(CheckpointError, match=r"distill\.teacher\.weights is not set"):
        build_teacher(sat, "cpu")
    with pytest.raises(CheckpointError, match=r"distill\.teacher\.weights: 'latest:demo_segformer_mit-b0_dubai' "
                                              r"found no succeeded run"):
        build_teacher(names["distill_logits_demo_segformer_mit-b0_dubai"][0], "cpu")


@pytest.mark.parametrize("override, message", [
    ("distill.feature_weight=-1", "must be >= 0"),
    ("distill.student_stages=[]", "student_stages is empty"),
    ("distill.schedule=[{from_epoch: 2}, {from_epoch: 2}]", "distinct"),
    ("distill.teacher.cache_mode=always", "cache_mode"),
])
def test_distill_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        tiny_cfg(override)


class _FixedTargets:
    """Stand-in for TeacherTargets in the DDP test: a fixed per-rank target, weight 1."""

    class teacher:  # noqa: N801 - attribute bag
        dim = 8

    weights = {"feature": 1.0, "logit": 0.0}

    def __init__(self, feat):
        self.feat = feat

    def get(self, batch):
        from mapsage.distill.targets import BatchTargets
        return BatchTargets(feat=self.feat, valid=None, logits=None)


def _ddp_rank(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from mapsage.distill.losses import FeatureDistillLoss
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(100 + rank)                   # different data on each rank
        feats = [torch.randn(2, 4, 6, 6), torch.randn(2, 16, 3, 3)]
        term = FeatureDistillLoss(_FixedTargets(torch.randn(2, 8, 5, 5)), [0, 1], [4, 16], seed=7)
        init = [p.detach().clone() for p in term.parameters()]
        plain = FeatureDistillLoss(_FixedTargets(term.targets.feat), [0, 1], [4, 16], seed=7)
        plain._hooked = True                            # no all-reduce: this rank's own gradient
        local = torch.autograd.grad(plain({}, {"seg": torch.zeros(1), "features": feats}), list(plain.parameters()))
        term({}, {"seg": torch.zeros(1), "features": feats}).backward()    # the DDP hook averages over ranks
        torch.save({"init": init, "local": [g.detach() for g in local],
                    "synced": [p.grad.detach().clone() for p in term.parameters()]}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_projection_gradients_are_averaged_across_ddp_ranks(tmp_path):
    """The projections live outside the DDP-wrapped student: they start equal on every rank and their gradients
    are all-reduced (mean), so every rank takes the same step."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(a, b) for a, b in zip(r0["init"], r1["init"]))
    assert any(not torch.allclose(a, b) for a, b in zip(r0["local"], r1["local"]))
    for a, b, l0, l1 in zip(r0["synced"], r1["synced"], r0["local"], r1["local"]):
        assert torch.allclose(a, b) and torch.allclose(a, (l0 + l1) / 2, atol=1e-6)
