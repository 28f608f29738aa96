"""SAM refinement: prompt -> predict -> merge with a small random-weight SAM (segment_anything), the merge rule,
an EfficientSAM-style model behind the same interface, and SAM being unavailable without a checkpoint."""
from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch

from mapsage.config import ConfigError, load_config
from mapsage.config.schema import SAMCfg
from mapsage.refine import (
    EfficientSamPredictor,
    MaskMerger,
    Refiner,
    SamUnavailable,
    SegmentAnythingPredictor,
    component_prompts,
    merge_masks,
    refine_tile,
    register_predictor,
    sam_refine,
)
from mapsage.refine.sam import _mask_iou
from tests.support.refine import DUBAI_CONFIG, ROOT, blurred_probs, dubai_pair, loveda_tile, tiny_sam

LOVEDA_CONFIG = ROOT / "configs" / "_base_" / "datasets" / "loveda_samples.yaml"


class Recording:
    """Wraps a predictor and keeps every call's prompts and answers."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []
        self.images = 0

    def set_image(self, image):
        self.images += 1
        self.inner.set_image(image)

    def predict_prompts(self, points, labels, boxes):
        masks, scores = self.inner.predict_prompts(points, labels, boxes)
        self.calls.append((points.copy(), labels.copy(), None if boxes is None else boxes.copy(), masks, scores))
        return masks, scores


def _raw_from_label(label: np.ndarray) -> np.ndarray:
    """A raw prediction to refine: the label's class ids, ignored pixels given class 0."""
    return np.where(label == 255, 0, label).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_predictor():
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return SegmentAnythingPredictor(tiny_sam())


def test_random_weight_sam_runs_prompt_predict_merge(tiny_predictor):
    """The whole path on a real LoveDA tile, checked against an independent replay of the choose/merge rule."""
    image, label = loveda_tile("val2")
    raw = _raw_from_label(label)
    cfg = SAMCfg(min_mask_iou=0.0, prompt_batch=4, max_points_per_component=3, neg_points_per_component=4)
    rec = Recording(tiny_predictor)
    out, report = sam_refine(image, raw, rec, cfg, num_classes=7)
    prompts = component_prompts(raw, 7, cfg)
    assert rec.images == 1
    assert report.prompts == len(prompts) == sum(len(c[0]) for c in rec.calls)
    assert report.accepted + report.rejected == report.prompts
    assert report.accepted > 0
    # every call carried the prompts in order: positives (1) then negatives (0), padding (-1), the boxes
    flat = [(c[0][i], c[1][i], c[2][i]) for c in rec.calls for i in range(len(c[0]))]
    for p, (pts, lab, box) in zip(prompts, flat):
        k = len(p.positive) + len(p.negative)
        np.testing.assert_array_equal(pts[:k], p.points)
        np.testing.assert_array_equal(lab[:k], p.labels)
        assert np.all(lab[k:] == -1)
        np.testing.assert_array_equal(box, p.box)
    # replay: best-scored candidate with IoU >= min_mask_iou against its raw component, then max-score merge
    expected = raw.copy()
    best = np.full(raw.shape, -np.inf)
    masks_seen = 0
    for c in rec.calls:
        masks, scores = c[3], c[4]
        assert masks.dtype == bool and masks.shape[2:] == raw.shape and masks.shape[1] == scores.shape[1] == 3
        for i in range(len(masks)):
            p = prompts[masks_seen]
            masks_seen += 1
            for k in np.argsort(-scores[i]):
                if masks[i, k].any() and _mask_iou(masks[i, k], p) >= cfg.min_mask_iou:
                    win = masks[i, k] & (scores[i, k] > best)
                    expected[win] = p.class_id
                    best[win] = scores[i, k]
                    break
    np.testing.assert_array_equal(out, expected)
    assert report.changed_pixels == int((out != raw).sum()) > 0


def test_merge_resolves_conflicts_by_score_and_keeps_raw_elsewhere():
    _, _, label = dubai_pair(0)
    raw = _raw_from_label(label)
    h, w = raw.shape
    a = np.zeros((h, w), bool)
    a[100:300, 100:300] = True
    b = np.zeros((h, w), bool)
    b[200:400, 200:400] = True
    out = merge_masks(raw, [(3, 0.9, a), (4, 0.7, b)])
    assert np.all(out[a] == 3)                          # the overlap goes to the higher score
    assert np.all(out[b & ~a] == 4)
    assert np.array_equal(out[~(a | b)], raw[~(a | b)])   # unclaimed pixels keep the raw label
    # order does not matter, only the scores
    assert np.array_equal(out, merge_masks(raw, [(4, 0.7, b), (3, 0.9, a)]))
    merger = MaskMerger(raw)
    merger.add(2, 0.5, b)
    assert merger.claimed.sum() == b.sum()


def test_rejected_masks_leave_their_component_raw(tiny_predictor):
    image, label = loveda_tile("val2")
    raw = _raw_from_label(label)
    out, report = sam_refine(image, raw, tiny_predictor, SAMCfg(min_mask_iou=1.01), num_classes=7)
    assert report.accepted == 0 and report.rejected == report.prompts > 0
    assert np.array_equal(out, raw)


class EfficientSamLike(torch.nn.Module):
    """A stand-in with EfficientSAM's interface (``get_image_embeddings``, ``predict_masks`` with boxes as points
    labelled 2/3). It answers a query with the class region under its first positive point grown by 2 px, scored
    by the region's id, so the refined map is known exactly."""

    decoder_max_num_input_points = 6

    def __init__(self, regions: np.ndarray):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.regions = regions
        self.seen = []

    def grown(self, region_id: int) -> np.ndarray:
        return cv2.dilate((self.regions == region_id).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)

    def score(self, region_id: int) -> float:
        return 0.5 + 1e-4 * region_id

    def get_image_embeddings(self, images):
        assert images.ndim == 4 and images.dtype == torch.float32 and float(images.max()) <= 1.0
        return images.mean(1, keepdim=True)

    def predict_masks(self, emb, points, labels, multimask, input_h, input_w, output_h, output_w):
        self.seen.append((points.clone(), labels.clone()))
        b, q, n, _ = points.shape
        out = torch.full((b, q, 3, output_h, output_w), -1.0)
        iou = torch.zeros(b, q, 3)
        for j in range(q):
            first = [i for i in range(n) if labels[0, j, i] == 1][0]
            x, y = points[0, j, first].long().tolist()
            rid = int(self.regions[y, x])
            out[0, j, 1] = torch.from_numpy(np.where(self.grown(rid), 1.0, -1.0))
            iou[0, j] = torch.tensor([0.0, self.score(rid), 0.0])
        return out, iou


def test_efficient_sam_style_model_plugs_in():
    _, image, label = dubai_pair(0)
    raw = _raw_from_label(label)
    regions = np.zeros(raw.shape, np.int64)
    offset = 0
    for c in range(5):
        n, comp = cv2.connectedComponents((raw == c).astype(np.uint8), connectivity=8)
        regions[raw == c] = comp[raw == c] + offset
        offset += n
    model = EfficientSamLike(regions)
    predictor = EfficientSamPredictor(model)
    cfg = SAMCfg(min_mask_iou=0.0, max_points_per_component=3, neg_points_per_component=4, prompt_batch=8)
    out, report = sam_refine(image, raw, predictor, cfg, num_classes=5)
    assert report.prompts > 0 and report.accepted == report.prompts
    # boxes travel first as two points labelled 2 and 3; at most 6 points (EfficientSAM's decoder limit), the
    # positives kept before the negatives
    for pts, lab in model.seen:
        assert pts.shape[2] <= 6
        assert torch.all(lab[0, :, 0] == 2) and torch.all(lab[0, :, 1] == 3) and torch.all(lab[0, :, 2] == 1)
    # replay: each component's grown region, the higher score winning overlaps, raw elsewhere
    expected = raw.copy()
    best = np.full(raw.shape, -np.inf)
    for p in component_prompts(raw, 5, cfg):
        x, y = p.positive[0].astype(int)
        rid = int(regions[y, x])
        win = model.grown(rid) & (model.score(rid) > best)
        expected[win] = p.class_id
        best[win] = model.score(rid)
    np.testing.assert_array_equal(out, expected)
    assert report.changed_pixels == int((out != raw).sum()) > 0


def test_sam_chains_need_a_checkpoint_and_crf_still_runs():
    cfg = load_config(DUBAI_CONFIG)
    assert cfg.refine.sam.checkpoint is None
    _, image, label = dubai_pair(0)
    image, label = image[:256, :256], label[:256, :256]
    probs = blurred_probs(label, 5, 4.0)
    with pytest.raises(SamUnavailable, match=r"refine\.sam\.checkpoint"):
        refine_tile(image, probs, "sam", cfg)
    refiner = Refiner(cfg)
    assert "refine.sam.checkpoint" in refiner.sam_unavailable()
    with pytest.raises(SamUnavailable, match=r"refine\.sam\.checkpoint"):
        refiner.run(image, probs, ["raw", "crf", "sam+crf"])
    out = refiner.run(image, probs, ["crf"])
    assert list(out) == ["raw", "crf"]
    assert np.array_equal(out["raw"].labels, probs.argmax(0))
    with pytest.raises(ConfigError, match=r"refine\.chains"):
        refiner.run(image, probs, ["crf", "densecrf"])
    with pytest.raises(ConfigError, match=r"refine\.chains"):
        load_config(DUBAI_CONFIG, ["refine.chains=[raw, densecrf]"])
    with pytest.raises(ConfigError, match=r"refine\.sam\.neg_offset_px"):
        load_config(DUBAI_CONFIG, ["refine.sam.neg_offset_px=[5, 3]"])
    missing = copy.deepcopy(cfg)
    missing.refine.sam.checkpoint = "no/such/sam.pth"
    assert "file not found" in Refiner(missing).sam_unavailable()
    unknown = copy.deepcopy(cfg)
    unknown.refine.sam.model_type = "vit_xx"
    assert "refine.sam.model_type" in Refiner(unknown).sam_unavailable()


def test_registered_model_type_loads_checkpoint_and_runs_all_chains(tmp_path):
    """A model type plugged in with register_predictor, its weights read from refine.sam.checkpoint."""
    weights = tmp_path / "tiny_sam.pth"
    torch.save(tiny_sam(seed=3).state_dict(), weights)

    def factory(model_type, checkpoint, device):
        model = tiny_sam(seed=0)
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        return SegmentAnythingPredictor(model.to(device))

    register_predictor("tiny_test", factory)
    cfg = load_config(LOVEDA_CONFIG)
    cfg.refine.sam.model_type = "tiny_test"
    cfg.refine.sam.checkpoint = str(weights)
    cfg.refine.sam.min_mask_iou = 0.0
    image, label = loveda_tile("train0")
    image, label = image[:384, :384], label[:384, :384]
    probs = blurred_probs(label, 7, 3.0)
    refiner = Refiner(cfg)
    assert refiner.sam_unavailable() is None
    out = refiner.run(image, probs, ["raw", "crf", "sam", "sam+crf"])
    assert list(out) == ["raw", "crf", "sam", "sam+crf"]
    assert out["sam"].sam is not None and out["sam"].sam.prompts > 0
    assert out["sam+crf"].seconds >= out["sam"].seconds
    for res in out.values():
        assert res.labels.shape == label.shape and res.labels.dtype == np.uint8
        assert res.labels.max() < 7


class ScriptableEfficientSam(torch.nn.Module):
    """EfficientSAM's exported interface in TorchScript form (as the published ``.jit`` exports have it): answers a
    query with a disc of radius 10 px around its first positive point (logits 100 - d², kept where >= 0)."""

    def __init__(self):
        super().__init__()
        self.decoder_max_num_input_points = 6

    @torch.jit.export
    def get_image_embeddings(self, batched_images: torch.Tensor) -> torch.Tensor:
        return batched_images.mean(dim=1, keepdim=True)

    @torch.jit.export
    def predict_masks(self, image_embeddings: torch.Tensor, batched_points: torch.Tensor,
                      batched_point_labels: torch.Tensor, multimask_output: bool, input_h: int, input_w: int,
                      output_h: int = -1, output_w: int = -1):
        b, q, n, _ = batched_points.shape
        first = (batched_point_labels == 1).to(torch.float32).argmax(dim=-1)
        pts = torch.gather(batched_points, 2, first.view(b, q, 1, 1).expand(b, q, 1, 2)).view(b, q, 2)
        ys = torch.arange(output_h, dtype=torch.float32).view(1, 1, output_h, 1)
        xs = torch.arange(output_w, dtype=torch.float32).view(1, 1, 1, output_w)
        d2 = (xs - pts[:, :, 0].view(b, q, 1, 1)) ** 2 + (ys - pts[:, :, 1].view(b, q, 1, 1)) ** 2
        masks = (100.0 - d2).unsqueeze(2).repeat(1, 1, 3, 1, 1)
        iou = torch.tensor([0.9, 0.5, 0.1]).view(1, 1, 3).repeat(b, q, 1)
        return masks, iou

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.get_image_embeddings(x)


def test_torchscript_efficient_sam_checkpoint_loads_by_model_type(tmp_path):
    from mapsage.refine import build_predictor

    path = tmp_path / "efficientsam_ti_cpu.jit"
    torch.jit.script(ScriptableEfficientSam()).save(str(path))
    cfg = SAMCfg(model_type="efficientsam_ti", checkpoint=str(path), min_mask_iou=0.0)
    predictor = build_predictor(cfg)
    assert isinstance(predictor, EfficientSamPredictor)
    image, label = loveda_tile("train1")
    image, label = image[:256, :256], label[:256, :256]
    raw = _raw_from_label(label)
    out, report = sam_refine(image, raw, predictor, cfg, num_classes=7)
    assert report.prompts > 0 and report.accepted == report.prompts
    # replay: each prompt claims the disc around its first positive point (equal scores: the first claim stays)
    expected = raw.copy()
    claimed = np.zeros(raw.shape, bool)
    yy, xx = np.mgrid[:256, :256]
    for p in component_prompts(raw, 7, cfg):
        x, y = p.positive[0]
        disc = (xx - x) ** 2 + (yy - y) ** 2 <= 100          # EfficientSAM keeps logits >= 0
        expected[disc & ~claimed] = p.class_id
        claimed |= disc
    np.testing.assert_array_equal(out, expected)
