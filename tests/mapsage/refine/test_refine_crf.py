"""DenseCRF on softmax probabilities (pydensecrf), with the documented defaults of ``refine.crf``."""
from __future__ import annotations

import numpy as np
import pytest

from mapsage.config import load_config
from mapsage.config.schema import CRFCfg
from mapsage.errors import UserError
from mapsage.metrics import SegMetrics
from mapsage.refine import crf_probs, labels_to_probs, refine_tile
from tests.support.refine import DUBAI_CONFIG, blurred_probs, dubai_pair

# A road crossing open land in a real Dubai tile (validation split): the road's edges are colour edges, which is
# where a CRF's bilateral term can put a blurred boundary back. (On whole tiles with many small buildings the
# documented defaults over-smooth; the refinement A/B stage measures that per run and drops the chain then.)
TILE, WINDOW = "Tile 8/image_part_005", (slice(256, 512), slice(1536, 1792))


def _dubai_road_crop():
    for idx in range(18):
        tile, image, label = dubai_pair(idx)
        if tile == TILE:
            return np.ascontiguousarray(image[WINDOW]), np.ascontiguousarray(label[WINDOW])
    raise AssertionError(f"{TILE} not in the Dubai validation split")


def _scores(pred: np.ndarray, label: np.ndarray, num_classes: int):
    m = SegMetrics(num_classes, boundary_px=3)
    m.update(pred.astype(np.uint8), label)
    return m.result()


def test_documented_defaults():
    c = CRFCfg()
    assert (c.gauss_sxy, c.gauss_compat) == (3.0, 3.0)
    assert (c.bilateral_sxy, c.bilateral_srgb, c.bilateral_compat) == (80.0, 13.0, 10.0)
    assert 5 <= c.iterations <= 10


def test_crf_raises_boundary_iou_of_a_blurred_real_tile():
    cfg = load_config(DUBAI_CONFIG)
    image, label = _dubai_road_crop()
    counts = np.bincount(label.ravel(), minlength=256)
    assert counts[1] > 0.5 * label.size and counts[2] > 0.05 * label.size       # land and a real road
    probs = blurred_probs(label, 5, sigma=6.0)
    before = _scores(probs.argmax(0), label, 5)
    refined = refine_tile(image, probs, "crf", cfg)
    after = _scores(refined, label, 5)
    gain = 100 * (after.mbiou - before.mbiou)
    assert gain > 10.0, f"Boundary IoU {100 * before.mbiou:.1f} -> {100 * after.mbiou:.1f}"
    assert after.biou[2] > before.biou[2]                                         # the road's own boundary
    assert after.miou >= before.miou


def test_crf_marginals_are_probabilities():
    image, label = _dubai_road_crop()
    probs = blurred_probs(label, 5, sigma=4.0)
    q = crf_probs(image, probs, CRFCfg(iterations=5))
    assert q.shape == probs.shape and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
    # with the pairwise terms switched off the CRF returns the unary's argmax
    flat = crf_probs(image, probs, CRFCfg(gauss_compat=0.0, bilateral_compat=0.0, iterations=5))
    valid = label != 255
    assert np.array_equal(flat.argmax(0)[valid], probs.argmax(0)[valid])


def test_crf_rejects_bad_input():
    image, label = _dubai_road_crop()
    probs = blurred_probs(label, 5, sigma=4.0)
    with pytest.raises(UserError, match="refine.crf.iterations"):
        crf_probs(image, probs, CRFCfg(iterations=0))
    with pytest.raises(ValueError, match="differ in size"):
        crf_probs(image[:100], probs, CRFCfg())


def test_sam_labels_become_crf_unaries():
    _, label = _dubai_road_crop()
    probs = blurred_probs(label, 5, sigma=4.0)
    other = np.where(label == 255, 0, (label.astype(int) + 1) % 5).astype(np.uint8)
    blended = labels_to_probs(probs, other, 0.6)
    np.testing.assert_allclose(blended.sum(0), 1.0, atol=1e-5)
    assert np.array_equal(blended.argmax(0), other)                     # w > 0.5: SAM's labels win the argmax
    unchanged = labels_to_probs(probs, other, 0.0)
    np.testing.assert_allclose(unchanged, probs, atol=1e-6)
