"""Each health check fails on a purpose-built bad case made from the real data: a wrong ignore index in the loss,
colour masks read as ids (RGB, palette and grey-converted), a transform that moves the image but not the mask, a
tile duplicated across splits (exactly and edited) and a leak-list id in training, an evaluation config that
differs from validation, a metrics engine that averages absent classes (or counts ignore pixels), a model that
cannot learn, a pipeline that normalises twice. Each failure must say what is wrong in its verdict."""
from __future__ import annotations

import shutil

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mapsage.config import save_resolved
from mapsage.data import build_dataset, get_normalization
from mapsage.events import EventWriter
from mapsage.health import run_check
from mapsage.metrics import SegMetrics
from tests.support.health import DUBAI_ROOT, PROJECT_ROOT, dubai_cfg, health_run

DEMO_TRAIN = PROJECT_ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml"


def copy_tile_parts(dst, tile: int, parts, new_tile: int | None = None, mask_mode: str | None = None):
    """Copy real Dubai pairs into a dataset folder of the same layout (optionally re-saving masks in a mode)."""
    t = new_tile or tile
    (dst / f"Tile {t}" / "images").mkdir(parents=True, exist_ok=True)
    (dst / f"Tile {t}" / "masks").mkdir(parents=True, exist_ok=True)
    for p in parts:
        name = f"image_part_{p:03d}"
        shutil.copyfile(DUBAI_ROOT / f"Tile {tile}" / "images" / f"{name}.jpg", dst / f"Tile {t}" / "images" / f"{name}.jpg")
        src_mask = DUBAI_ROOT / f"Tile {tile}" / "masks" / f"{name}.png"
        if mask_mode is None:
            shutil.copyfile(src_mask, dst / f"Tile {t}" / "masks" / f"{name}.png")
        else:
            Image.open(src_mask).convert(mask_mode).save(dst / f"Tile {t}" / "masks" / f"{name}.png")


# --------------------------------------------------------------------------------------------------- 1. ids
def test_ids_fail_on_a_wrong_ignore_index_in_the_loss(tmp_path, one_thread):
    r = run_check(health_run(dubai_cfg("loss.ignore_index=0", "health.scan_max_masks=2"), tmp_path), "ids")
    assert r.status == "fail"
    assert "loss.ignore_index 0 - which is class 0 (water) differs from dataset.ignore_index 255" in r.verdict
    # the built loss was probed too: it cannot even digest the dataset's ignore value
    assert "the loss fails on a target holding the dataset's ignore index 255" in r.verdict


def test_ids_fail_on_rgb_and_palette_masks_read_as_ids(tmp_path, one_thread):
    """The Dubai masks (RGB, and palette PNGs whose indices differ per file) configured as index masks."""
    cfg = dubai_cfg("dataset.type=index_mask", "health.scan_max_masks=null")
    cfg.dataset.max_samples = None
    r = run_check(health_run(cfg, tmp_path), "ids")
    assert r.status == "fail"
    assert "54 mask(s) are colour-coded (3 channels" in r.verdict and "set dataset.type: color_mask" in r.verdict
    assert "palette-mode mask(s) whose palette index" in r.verdict
    assert r.evidence["mask_modes"] == {"RGB": 54, "P": 18}
    conflicts = r.evidence["palette_index_conflicts"]
    assert any(len(colours) > 1 for colours in conflicts.values())


def test_ids_fail_on_colour_masks_converted_to_grey(tmp_path, one_thread):
    root = tmp_path / "grey"
    copy_tile_parts(root, 1, [1, 2, 3], mask_mode="L")
    copy_tile_parts(root, 3, [1, 2], mask_mode="L")
    cfg = dubai_cfg(f"dataset.root={root}", "dataset.type=index_mask",
                    "dataset.value_map={0: 0, 1: 1, 2: 2, 3: 3, 4: 4}", "dataset.split.assign={train: ['Tile 1'], val: ['Tile 3']}")
    r = run_check(health_run(cfg, tmp_path), "ids")
    assert r.status == "fail"
    assert "equal the grey level of palette colours" in r.verdict
    # the land colour #8429F6 becomes grey 92 under PIL's luma (0.299 R + 0.587 G + 0.114 B, rounded): counted,
    # not silently used as a class
    assert r.evidence["raw_values_not_in_config"]["value 92"] > 0
    assert "92 (" in r.verdict.split("equal the grey level")[0]


# --------------------------------------------------------------------------------------------------- 2. per_class
def _run_with_record(ws, rid: str, record: dict):
    run = ws / "runs" / rid
    save_resolved(dubai_cfg(), run)
    EventWriter(run).emit("metrics", **record)
    return rid


def test_per_class_fails_on_a_record_that_averages_absent_classes(tmp_path, tmp_workspace):
    m = SegMetrics(5, 255, class_names=list(dubai_cfg().dataset.classes))
    label = np.array([[0, 0, 1, 1], [2, 2, 1, 1]])
    m.update(label, label)                              # classes 3 and 4 absent: excluded, mIoU 1.0
    payload = m.result().to_event("val", "all", "raw", None)
    payload["summary"]["miou"] = 3 / 5                  # a writer that averaged the absent classes as 0
    cfg = dubai_cfg(f"stage.checkpoint={_run_with_record(tmp_workspace, 'bad-mean', payload)}")
    r = run_check(health_run(cfg, tmp_path), "per_class")
    assert r.status == "fail"
    assert "is not the mean of the 3 recorded class IoUs" in r.verdict


def test_per_class_fails_without_per_class_rows(tmp_path, tmp_workspace):
    payload = {"split": "val", "domain": "all", "variant": "raw", "epoch": None, "summary": {"miou": 0.5}}
    cfg = dubai_cfg(f"stage.checkpoint={_run_with_record(tmp_workspace, 'no-rows', payload)}")
    r = run_check(health_run(cfg, tmp_path), "per_class")
    assert r.status == "fail" and "no per-class rows" in r.verdict


# --------------------------------------------------------------------------------------------------- 3. normalisation
class _NormalisedTwice(torch.utils.data.Dataset):
    """A dataset whose pipeline applies mean/std a second time (a classic double normalisation)."""

    def __init__(self, ds, cfg):
        self.ds, self.samples = ds, ds.samples
        mean, std = get_normalization(cfg)
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        item = dict(self.ds[i])
        item["image"] = (item["image"] - self.mean) / self.std
        return item


def test_normalisation_fails_when_the_pipeline_normalises_twice(tmp_path, one_thread):
    def factory(cfg, split, train=False):
        return _NormalisedTwice(build_dataset(cfg, split, train=train), cfg)

    r = run_check(health_run(dubai_cfg(), tmp_path, dataset_factory=factory), "normalisation")
    assert r.status == "fail"
    assert "the data pipeline normalises" in r.verdict and "not the declared" in r.verdict
    rec = r.evidence["in_use_recovered"][0]
    assert rec["std"][0] == pytest.approx(0.229 * 0.229, abs=2e-3)


def test_normalisation_fails_on_0_255_statistics_and_warns_on_an_override(tmp_path):
    r = run_check(health_run(dubai_cfg("model.mean=[123.7,116.3,103.5]", "model.std=[58.4,57.1,57.4]"), tmp_path),
                  "normalisation")
    assert r.status == "fail" and "look like 0..255 values" in r.verdict
    r = run_check(health_run(dubai_cfg("model.mean=[0.5,0.5,0.5]", "model.std=[0.5,0.5,0.5]"), tmp_path),
                  "normalisation")
    assert r.status == "warn" and "differ from the backbone's pretrained statistics" in r.verdict


# --------------------------------------------------------------------------------------------------- 4. alignment
class ShiftImageOnly(A.ImageOnlyTransform):
    """Moves the image 4 px right and 2 px down and leaves the mask where it was (an image-only translation)."""

    def apply(self, img, **params):
        m = np.float32([[1, 0, 4], [0, 1, 2]])
        return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT)


class FlipImageOnly(A.ImageOnlyTransform):
    """A horizontal flip applied to the image only (a flip added with the wrong transform base class)."""

    def apply(self, img, **params):
        return np.ascontiguousarray(img[:, ::-1])


@pytest.mark.parametrize("bad, expect", [(ShiftImageOnly, "shifted against each other"),
                                         (FlipImageOnly, "drift apart")])
def test_alignment_fails_when_a_transform_moves_only_the_image(tmp_path, one_thread, bad, expect):
    def factory(cfg, split, train=False):
        ds = build_dataset(cfg, split, train=train)
        if train:
            ds.transform = A.Compose([*ds.transform.transforms, bad(p=1.0)])
        return ds

    r = run_check(health_run(dubai_cfg(), tmp_path, dataset_factory=factory), "alignment")
    assert r.status == "fail", r.verdict
    assert expect in r.verdict
    if bad is ShiftImageOnly:
        assert r.evidence["mean_best_offset_yx"] == [2, 4]
    assert r.picture and (tmp_path / "run" / r.picture).is_file()


# --------------------------------------------------------------------------------------------------- 5. splits
def test_splits_fail_on_a_tile_duplicated_across_splits(tmp_path):
    root = tmp_path / "dup"
    copy_tile_parts(root, 1, range(1, 10))
    copy_tile_parts(root, 3, range(1, 10))
    # an exact copy of a training part in the validation tile ...
    copy_tile_parts(root, 1, [4], new_tile=3)
    shutil.move(root / "Tile 3" / "images" / "image_part_004.jpg", root / "Tile 3" / "images" / "image_part_010.jpg")
    shutil.copyfile(DUBAI_ROOT / "Tile 1" / "masks" / "image_part_004.png", root / "Tile 3" / "masks" / "image_part_010.png")
    shutil.copyfile(DUBAI_ROOT / "Tile 3" / "masks" / "image_part_004.png", root / "Tile 3" / "masks" / "image_part_004.png")
    shutil.copyfile(DUBAI_ROOT / "Tile 3" / "images" / "image_part_004.jpg", root / "Tile 3" / "images" / "image_part_004.jpg")
    # ... and an edited one: flipped, 6 % brighter, re-encoded at JPEG quality 70
    img = cv2.imread(str(DUBAI_ROOT / "Tile 1" / "images" / "image_part_006.jpg"))[:, ::-1]
    img = np.clip(img.astype(np.float32) * 1.06, 0, 255).astype(np.uint8)
    cv2.imwrite(str(root / "Tile 3" / "images" / "image_part_011.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 70])
    Image.open(DUBAI_ROOT / "Tile 1" / "masks" / "image_part_006.png").transpose(Image.FLIP_LEFT_RIGHT).save(
        root / "Tile 3" / "masks" / "image_part_011.png")
    cfg = dubai_cfg(f"dataset.root={root}", "dataset.split.assign={train: ['Tile 1'], val: ['Tile 3']}")
    r = run_check(health_run(cfg, tmp_path), "splits")
    assert r.status == "fail"
    assert r.evidence["exact_duplicates"] == [{"a": "Tile 1/image_part_004", "split_a": "train",
                                               "b": "Tile 3/image_part_010", "split_b": "val"}]
    near = r.evidence["near_duplicates"]
    assert [(n["a"], n["b"]) for n in near] == [("Tile 1/image_part_006", "Tile 3/image_part_011")]
    assert "1 image(s) exactly duplicated across splits" in r.verdict and "1 near-duplicate pair(s)" in r.verdict


def test_splits_fail_on_a_group_in_two_splits_and_on_leak_list_ids_in_training(tmp_path):
    root = tmp_path / "two"
    copy_tile_parts(root, 1, [1, 2, 3])
    copy_tile_parts(root, 3, [1, 2])
    split_file = tmp_path / "split.txt"
    split_file.write_text("Tile 1/image_part_001 train\nTile 1/image_part_002 train\nTile 1/image_part_003 val\n"
                          "Tile 3/image_part_001 val\nTile 3/image_part_002 val\n")
    leak = tmp_path / "earthvqa_overlap.txt"
    leak.write_text("# images shared with EarthVQA\nimage_part_002\n")
    cfg = dubai_cfg(f"dataset.root={root}", "dataset.split.method=list", f"dataset.split.list_file={split_file}",
                    f"dataset.leak_list={leak}")

    # the library's loader drops leak-list ids from training; a loader that does not is caught
    def ignores_leak_list(c, split, train=False):
        c2 = c.__class__(**{**c.__dict__})
        c2.dataset = c.dataset.__class__(**{**c.dataset.__dict__, "leak_list": None})
        return build_dataset(c2, split, train=train)

    r = run_check(health_run(cfg, tmp_path, dataset_factory=ignores_leak_list), "splits")
    assert r.status == "fail"
    assert "split group(s) in several splits (e.g. 'Tile 1'" in r.verdict
    assert "id(s) of the leak list earthvqa_overlap.txt are in the training split 'train'" in r.verdict
    assert r.evidence["leak_list"]["found_in_training"] == ["Tile 1/image_part_002"]
    r = run_check(health_run(cfg, tmp_path), "splits")      # the real loader: leak handled, the group still split
    assert r.evidence["leak_list"]["n_found_in_training"] == 0
    assert r.evidence["leak_list"]["excluded_by_loader"] == 1


# --------------------------------------------------------------------------------------------------- 6. eval_consistency
@pytest.mark.parametrize("setting, key", [("eval: {mode: whole}", "window.mode"),
                                          ("eval: {tta: {scales: [0.75, 1.0, 1.25], hflip: true}}", "tta.scales")])
def test_eval_consistency_fails_when_the_final_evaluation_differs(tmp_path, setting, key):
    final = tmp_path / "evaluate_differs.yaml"
    final.write_text(f"_base_: {DEMO_TRAIN}\nstage: {{kind: evaluate, plan_stage: 3}}\n{setting}\n")
    cfg = dubai_cfg(f"health.eval_configs=[{final}]")
    r = run_check(health_run(cfg, tmp_path), "eval_consistency")
    assert r.status == "fail"
    assert "1/1 final-evaluation config(s) differ from training-time validation" in r.verdict
    assert key in {d["setting"] for d in r.evidence["finals"][0]["differences"]}


# --------------------------------------------------------------------------------------------------- 7. metric
class AveragesAbsentClasses(SegMetrics):
    """The classic bug: classes absent from prediction and label count as IoU 0 in the mean."""

    def result(self):
        res = super().result()
        res.miou = float(np.nan_to_num(res.iou, nan=0.0).mean())
        return res


class IgnoreAsBackground(SegMetrics):
    """Another classic: ignored pixels are scored as class 0 ("background counted twice")."""

    def update(self, pred, label, tags=None, tile=None):
        label = np.asarray(label)
        super().update(pred, np.where(label == self.ignore_index, 0, label), tags=tags, tile=tile)


@pytest.mark.parametrize("engine, case", [(AveragesAbsentClasses, "absent class"), (IgnoreAsBackground, "ignore")])
def test_metric_self_test_catches_a_wrong_metrics_engine(tmp_path, engine, case):
    r = run_check(health_run(dubai_cfg(), tmp_path, metric_class=engine), "metric")
    assert r.status == "fail"
    failed = [c["case"] for c in r.evidence["cases"] if not c["ok"]]
    assert case in failed
    if engine is AveragesAbsentClasses:       # 2.15 / 4 instead of 2.15 / 3
        assert "absent class: miou 0.537500, expected 0.716667" in r.evidence["errors"]


# --------------------------------------------------------------------------------------------------- 8. sanity
class IgnoresItsInput(nn.Module):
    """A model whose output does not depend on the image: only a learnable per-class bias (a head wired to a
    constant) can learn the class priors of the batch, nothing more."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x):
        return self.bias.view(1, -1, 1, 1).expand(x.shape[0], -1, x.shape[2], x.shape[3])


class DetachedHead(nn.Module):
    """A segmentation model whose logits are detached before the loss: nothing can learn."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 3, padding=1)

    def forward(self, x):
        return self.conv(x).detach()


@pytest.mark.parametrize("model, expect", [(IgnoresItsInput, "cannot overfit one batch"),
                                           (DetachedHead, "no gradient path")])
def test_sanity_fails_on_a_model_that_cannot_learn(tmp_path, one_thread, model, expect):
    cfg = dubai_cfg("health.sanity_steps=40")
    r = run_check(health_run(cfg, tmp_path, model_factory=lambda c: model(c.dataset.num_classes)), "sanity")
    assert r.status == "fail"
    assert expect in r.verdict
    if model is IgnoresItsInput:
        assert len(r.evidence["curve"]) == 40 and r.evidence["best_smoothed"] > 0.5 * r.evidence["start"]
