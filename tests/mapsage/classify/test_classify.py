"""Image classification: metrics against scikit-learn on real predictions, folds that keep source tiles whole,
config refusals, losses, temperature scaling, the submission validator, Grad-CAM."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
CFG = ROOT / "configs/stage1_classification/cls_test-byobnet_dubai-scenes_cpu.yaml"
SCENES = ROOT / "data/demo/dubai-scenes"


def _cfg(*overrides):
    from mapsage.config import load_config

    return load_config(CFG, list(overrides))


def _colour_features(paths) -> np.ndarray:
    """Mean and std of each RGB channel: a real, weak image descriptor."""
    from mapsage.classify.data import load_rgb

    out = []
    for p in paths:
        x = load_rgb(p).reshape(-1, 3).astype(np.float64) / 255.0
        out.append(np.concatenate([x.mean(0), x.std(0)]))
    return np.stack(out)


@pytest.fixture(scope="module")
def real_predictions():
    """Nearest-centroid predictions of held-out demo patches (real images, real labels): logits, labels."""
    from mapsage.classify.data import split_samples

    cfg = _cfg("dataset.split.folds=5", "dataset.split.fold=0")
    train, val = split_samples(cfg)
    ft, fv = _colour_features([s.image_path for s in train]), _colour_features([s.image_path for s in val])
    yt = np.array([s.label for s in train])
    yv = np.array([s.label for s in val])
    cents = np.stack([ft[yt == c].mean(0) if (yt == c).any() else np.full(6, 9.0) for c in range(5)])
    logits = -30.0 * ((fv[:, None, :] - cents[None]) ** 2).sum(-1) ** 0.5
    return logits, yv


def test_metrics_match_sklearn(real_predictions):
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    from mapsage.metrics.classification import classification_metrics, softmax

    logits, y = real_predictions
    probs = softmax(logits)
    pred = probs.argmax(1)
    res = classification_metrics(probs, y, ["water", "land", "road", "building", "vegetation"])
    assert 0.3 < res.top1 < 1.0            # a real, imperfect classifier
    assert res.top1 == pytest.approx(accuracy_score(y, pred))
    present = sorted(set(y) | set(pred))
    assert res.macro_f1 == pytest.approx(f1_score(y, pred, average="macro", labels=present, zero_division=0))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=list(range(5)), zero_division=0)
    assert np.allclose(res.precision, p) and np.allclose(res.recall, r) and np.allclose(res.f1, f)
    assert res.support == list(s)
    assert (res.confusion == confusion_matrix(y, pred, labels=list(range(5)))).all()
    assert res.top5 == pytest.approx(top_k_accuracy_score(y, probs, k=5, labels=list(range(5))))
    # ECE by its definition, computed independently (15 equal-width bins, first bin closed at 0)
    conf, correct = probs.max(1), (pred == y).astype(float)
    edges = np.linspace(0, 1, 16)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, 14)
    ece = sum(abs(correct[idx == b].mean() - conf[idx == b].mean()) * (idx == b).sum()
              for b in range(15) if (idx == b).any()) / len(y)
    assert res.ece == pytest.approx(ece)


def test_temperature_scaling_lowers_ece(real_predictions):
    from mapsage.metrics.classification import temperature_scaled

    logits, y = real_predictions
    t, before, after = temperature_scaled(logits, y)
    assert t != pytest.approx(1.0)
    assert after.ece < before.ece and after.nll <= before.nll + 1e-9
    assert after.top1 == before.top1          # scaling never changes the argmax


def test_five_folds_keep_every_source_tile_whole():
    from mapsage.classify.data import fold_of, read_samples

    cfg = _cfg("dataset.split.folds=5")
    samples = read_samples(cfg)
    with open(SCENES / "train_labels.csv", newline="") as fh:
        tile_of = {r["filename"]: r["source_tile"] for r in csv.DictReader(fh)}
    folds = fold_of(cfg, samples)
    assert set(folds.values()) == set(range(5)) and len(folds) == len(samples) == 765
    where: dict[str, set[int]] = {}
    for s in samples:
        where.setdefault(tile_of[s.id], set()).add(folds[s.id])
    assert len(where) > 5 and all(len(f) == 1 for f in where.values()), \
        {t: f for t, f in where.items() if len(f) > 1}
    # stratified: each fold holds the two big classes, and no fold is more than twice another's size
    sizes = np.bincount(list(folds.values()))
    assert sizes.max() <= 2 * sizes.min()
    for f in range(5):
        labels = {s.label for s in samples if folds[s.id] == f}
        assert {0, 1} <= labels


def test_scene_grouping_by_regex():
    from mapsage.classify.data import fold_of, read_samples

    cfg = _cfg("dataset.split.folds=5", "dataset.split.group_regex=^(?P<group>Tile [0-9]+)/")
    samples = read_samples(cfg)
    folds = fold_of(cfg, samples)
    scene = {}
    for s in samples:
        scene.setdefault(s.group, set()).add(folds[s.id])
    assert len(scene) == 7 and all(len(v) == 1 for v in scene.values())


def test_category_ids_are_kept_and_unknown_ids_refused(tmp_path):
    from mapsage.classify.data import read_samples
    from mapsage.errors import DataError

    samples = read_samples(_cfg())
    with open(SCENES / "train_labels.csv", newline="") as fh:
        first = next(csv.DictReader(fh))
    s0 = next(s for s in samples if s.id == first["filename"])
    assert [1, 2, 3, 4, 5][s0.label] == int(first["category_id"])
    bad = tmp_path / "labels.csv"
    bad.write_text(f"filename,category_id\n{first['filename']},9\n")
    with pytest.raises(DataError, match="category_id 9"):
        read_samples(_cfg(f"classify.labels_csv={bad}"))


def test_balanced_softmax_with_sampler_is_refused():
    from mapsage.config import ConfigError

    with pytest.raises(ConfigError, match="balanced_softmax.*augment.sampler.kind") as exc:
        _cfg("classify.loss=balanced_softmax", "augment.sampler.kind=effective_number")
    assert "\n" not in str(exc.value)


def test_hub_weights_are_refused_naming_the_key():
    from mapsage.classify.model import build_classifier
    from mapsage.errors import CheckpointError

    with pytest.raises(CheckpointError, match="classify.pretrained"):
        build_classifier(_cfg("classify.model=resnet18", "classify.pretrained=imagenet"), 5)


def test_losses():
    import torch
    import torch.nn.functional as F

    from mapsage.classify.losses import ClsLoss

    torch.manual_seed(0)
    z, y = torch.randn(16, 5), torch.randint(0, 5, (16,))
    assert ClsLoss("ce", 5)(z, y).item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-5)
    assert ClsLoss("lsce", 5, 0.05)(z, y).item() == pytest.approx(
        F.cross_entropy(z, y, label_smoothing=0.05).item(), rel=1e-5)
    assert ClsLoss("focal", 5, focal_gamma=0.0)(z, y).item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-5)
    counts = np.array([100, 10, 1, 50, 5])
    prior = torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)
    assert ClsLoss("balanced_softmax", 5, class_counts=counts)(z, y).item() == pytest.approx(
        F.cross_entropy(z + prior, y).item(), rel=1e-5)
    soft = F.one_hot(y, 5).float()
    assert ClsLoss("ce", 5)(z, soft).item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-5)


def test_submission_validator(tmp_path):
    from mapsage.classify.submission import check_submission

    imgs = ["a.jpg", "b.jpg", "c.jpg"]
    good = tmp_path / "good.csv"
    good.write_text("filename,category_id,confidence\na.jpg,1,0.9\nb.jpg,5,0.5\nc.jpg,2,1.0\n")
    assert check_submission(good, imgs, [1, 2, 3, 4, 5]) == []
    two = tmp_path / "two.csv"
    two.write_text("filename,category_id\na.jpg,1\nb.jpg,5\nc.jpg,2\n")
    assert check_submission(two, imgs, [1, 2, 3, 4, 5]) == []
    bad = tmp_path / "bad.csv"
    bad.write_text("filename,category_id,confidence\na.jpg,1,0.9\na.jpg,1,0.9\nz.jpg,7,1.5\n")
    probs = "\n".join(check_submission(bad, imgs, [1, 2, 3, 4, 5]))
    assert "already on line 2" in probs and "z.jpg is not a test image" in probs
    assert "category_id 7" in probs and "outside [0, 1]" in probs and "2 test image(s) missing" in probs
    hdr = tmp_path / "hdr.csv"
    hdr.write_text("file,label\na.jpg,1\n")
    assert "header" in check_submission(hdr, imgs, [1])[0]


def test_grad_cam_on_a_real_patch():
    import torch

    from mapsage.classify.data import ClsDataset, normalization, read_samples
    from mapsage.classify.gradcam import grad_cam, overlay
    from mapsage.classify.model import build_classifier

    torch.manual_seed(0)
    cfg = _cfg()
    model = build_classifier(cfg, 5)
    s = read_samples(cfg)[:1]
    ds = ClsDataset(s, cfg, False, 64, *normalization(cfg))
    cam, cls, p = grad_cam(model, ds[0]["image"], target=1)
    assert cam.shape == (64, 64) and cls == 1 and 0 <= p <= 1
    assert cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    from mapsage.classify.data import load_rgb

    assert overlay(load_rgb(s[0].image_path), cam).shape == load_rgb(s[0].image_path).shape


def test_heads_llrd_lr_clamp_and_corrupted_validation():
    import torch

    from mapsage.classify.data import ClsDataset, normalization, read_samples
    from mapsage.classify.model import build_classifier, effective_lr, param_groups

    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    for head in ("cosine", "arcface"):
        m = build_classifier(_cfg(f"classify.head={head}", "classify.head_scale=10"), 5)
        m.eval()
        z = m(x)
        assert z.shape == (4, 5) and z.abs().max() <= 10 + 1e-4
        m.train()
        zt = m(x, y)
        if head == "arcface":   # the margin lowers the true class's logit in training only
            assert (zt[torch.arange(4), y] < m(x)[torch.arange(4), y] + 1e-6).all()
    cfg = _cfg("train.layer_decay=0.7", "classify.model=resnet18")
    m = build_classifier(cfg, 5)
    mults = sorted({round(g["lr_mult"], 6) for g in param_groups(m, cfg, 1e-3)})
    assert len(mults) > 3 and mults[-1] == 1.0 and mults[0] < 0.7 ** 3
    lr, note = effective_lr(_cfg("train.lr=1e-3", "train.batch_size=64"))
    assert lr == pytest.approx(2.5e-4) and "64/256" in note
    lr, note = effective_lr(_cfg("train.lr=1e-2", "train.batch_size=256"))
    assert lr == pytest.approx(5e-4) and "clamped" in note
    cfg = _cfg()
    s = read_samples(cfg)[:1]
    clean = ClsDataset(s, cfg, False, 64, *normalization(cfg))[0]["image"]
    noisy = ClsDataset(s, cfg, False, 64, *normalization(cfg), corruption=("gaussian_noise", 3))[0]["image"]
    assert (clean - noisy).abs().mean() > 0.05


def test_paired_top1_bootstrap_on_shared_images():
    from app.widgets.classify_compare import paired_top1

    rng = np.random.default_rng(1)
    names = [f"img{i}.jpg" for i in range(200)]
    a = {n: bool(rng.random() < 0.7) for n in names}
    b = {n: True for n in names}                 # B right everywhere: +30 points, clearly significant
    got = paired_top1(a, b)
    assert got["n"] == 200 and got["delta"] == pytest.approx(1 - np.mean(list(a.values())))
    assert 0 < got["ci_low"] < got["delta"] < got["ci_high"]
    assert paired_top1(a, {f"other{i}.jpg": True for i in range(200)}) is None   # another fold: no pairing


def test_health_checks_pass_on_folds_and_fail_on_a_shared_source_tile():
    import dataclasses

    from mapsage.classify.data import split_samples
    from mapsage.classify.health import gate, run_checks
    from mapsage.events import NullEvents
    from mapsage.health.result import HealthChecksFailed

    cfg = _cfg("dataset.split.folds=5", "dataset.split.fold=1", "health.sanity_steps=25", "health.sanity_batch=1",
               "runtime.threads=1")
    train, val = split_samples(cfg)
    res = {r.check: r for r in run_checks(cfg, train, val, names=["ids", "splits", "metric", "sanity"])}
    assert res["splits"].status == "pass" and res["metric"].status == "pass" and res["sanity"].status == "pass"
    assert res["ids"].status == "warn" and "road" in res["ids"].verdict     # fold 1 trains without road patches
    leak = [dataclasses.replace(val[0], id="copy_" + val[0].id)]            # a patch of a validation source tile
    with pytest.raises(HealthChecksFailed, match="splits"):
        gate(cfg, train + leak, val, NullEvents())
