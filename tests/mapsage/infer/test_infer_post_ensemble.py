"""Post-processing (small-object filter, minimum road width) and ensembles."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mapsage.config import load_config
from mapsage.config.schema import PostCfg
from mapsage.errors import UserError
from mapsage.infer import infer_logits, infer_probs
from mapsage.infer.ensemble import Ensemble, Renormalize, default_weights
from mapsage.infer.post import PostProcessor, small_components, thin_parts
from tests.support.infer import DUBAI_CONFIG, MEAN, STD, PointwiseModel, dubai_tensor, eval_cfg, tiny_segformer

CLASSES = ["water", "land", "road", "building", "vegetation"]


# ----------------------------------------------------------------------------------------------------------------
# post-processing


def test_island_goes_to_the_surrounding_class():
    pred = np.ones((20, 20), np.uint8)                 # land
    pred[:, 10:] = 4                                   # vegetation on the right half
    pred[3:6, 3:6] = 3                                 # a 9 px building inside land
    pred[8:10, 9:11] = 0                               # a 4 px water blob on the land/vegetation border
    out = PostProcessor(min_area={3: 10, 0: 5})(pred)
    assert (out[3:6, 3:6] == 1).all()
    # the border blob's ring: land on its left, vegetation on its right (8-neighbour ring, 12 px: 6 + 6 -> tie
    # broken by the lower id, argmax of the counts)
    ring = cv2.dilate((pred == 0).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & (pred != 0)
    counts = np.bincount(pred[ring], minlength=5)
    assert (out[8:10, 9:11] == np.argmax(counts)).all()
    # everything else untouched
    changed = out != pred
    assert changed.sum() == 9 + 4


def test_min_area_is_strict_below():
    pred = np.zeros((12, 12), np.uint8)
    pred[2:5, 2:5] = 2                                 # 9 px
    assert small_components(pred == 2, 9).sum() == 0   # area == minimum: kept
    assert small_components(pred == 2, 10).sum() == 9
    # 8-connectivity: two diagonal touching squares are one component
    pred[5:8, 5:8] = 2
    assert small_components(pred == 2, 18).sum() == 0


def test_road_width_by_opening():
    pred = np.ones((40, 40), np.uint8)
    pred[10:12, :] = 2                                 # a 2 px wide road strip: removed at width 3
    pred[20:25, :] = 2                                 # a 5 px wide road: kept
    thin = thin_parts(pred == 2, 3)
    assert thin[10:12].all() and not thin[20:25].any()
    out = PostProcessor(road_class=2, road_min_width=3)(pred)
    assert (out[10:12] == 1).all() and (out[20:25] == 2).all()


def test_region_without_kept_neighbours_keeps_its_class():
    pred = np.full((8, 8), 3, np.uint8)
    assert np.array_equal(PostProcessor(min_area={3: 1000})(pred), pred)


def test_post_on_a_real_dubai_mask():
    from mapsage.data import build_dataset

    cfg = load_config(DUBAI_CONFIG)
    ds = build_dataset(cfg, "val")
    mask = ds.load_mask(0).copy()
    mask[mask == 255] = 1                              # treat ignore as land for this check
    post = PostProcessor.from_config(PostCfg(enabled=True, min_area={"building": 200, "vegetation": 200}), CLASSES)
    out = post(mask)
    for cls_id in (3, 4):
        n, _, stats, _ = cv2.connectedComponentsWithStats((out == cls_id).astype(np.uint8), connectivity=8)
        assert (stats[1:, cv2.CC_STAT_AREA] >= 200).all()
    removed = small_components(mask == 3, 200) | small_components(mask == 4, 200)
    assert removed.any(), "the real mask has small building/vegetation parts"
    assert np.array_equal(out[~removed], mask[~removed])   # only the small components changed


def test_post_config_errors_name_the_key():
    with pytest.raises(UserError, match="post.min_area"):
        PostProcessor.from_config(PostCfg(min_area={"buildings": 10}), CLASSES)
    with pytest.raises(UserError, match="post.road_class"):
        PostProcessor.from_config(PostCfg(road_min_width=3), CLASSES)
    p = PostProcessor.from_config(PostCfg(min_area={"road": 30}, road_class="road", road_min_width=4), CLASSES)
    assert p.min_area == {2: 30} and p.road_class == 2 and p.active
    assert p.describe(CLASSES) == {"min_area": {"road": 30}, "road_class": "road", "road_min_width": 4}


# ----------------------------------------------------------------------------------------------------------------
# ensembles


def test_default_weights():
    assert default_weights([None, None]) == pytest.approx([0.6, 0.4])
    assert default_weights([None, None, None]) == pytest.approx([1 / 3] * 3)
    assert default_weights([3.0, 1.0]) == pytest.approx([0.75, 0.25])
    with pytest.raises(UserError, match="every member or for none"):
        default_weights([1.0, None])


@pytest.mark.parametrize("average", ["prob", "logit"])
def test_ensemble_of_identical_models_equals_one_model(average):
    model = tiny_segformer(seed=3)
    twin = tiny_segformer(seed=3)
    x = dubai_tensor(2, 4, size=(160, 192))
    cfg = eval_cfg(mode="slide", tile=[128, 128], stride=[96, 96], tta={"scales": [1.0], "hflip": True})
    single = infer_probs(model, x, cfg, 5)
    ens = Ensemble([model, twin], average=average, num_classes=5)
    assert ens.weights == pytest.approx([0.6, 0.4]) and ens.output_stride == 32
    both = infer_probs(ens, x, cfg, 5)
    torch.testing.assert_close(both, single, rtol=1e-4, atol=1e-5)
    assert torch.equal(both.argmax(1), single.argmax(1))


def test_ensemble_averages_by_hand():
    a, b = PointwiseModel(5, seed=1), PointwiseModel(5, seed=2)
    x = dubai_tensor(3, 5, size=(64, 96))
    with torch.inference_mode():
        la, lb = a(x), b(x)
        logit = Ensemble([a, b], [0.7, 0.3], average="logit", num_classes=5)(x)
        prob = Ensemble([a, b], [0.7, 0.3], average="prob", num_classes=5)(x)
    torch.testing.assert_close(logit, 0.7 * la + 0.3 * lb)
    torch.testing.assert_close(prob.softmax(1), 0.7 * la.softmax(1) + 0.3 * lb.softmax(1))


def test_member_with_other_normalisation_sees_its_own_input():
    model = PointwiseModel(5)
    rgb01 = (dubai_tensor(1, 3, size=(32, 32)) * torch.tensor(STD).view(1, 3, 1, 1)
             + torch.tensor(MEAN).view(1, 3, 1, 1))
    other_mean, other_std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    x_eval = (rgb01 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    x_member = (rgb01 - 0.5) / 0.25
    wrapped = Renormalize(model, MEAN, STD, other_mean, other_std)
    with torch.inference_mode():
        torch.testing.assert_close(wrapped(x_eval), model(x_member), rtol=1e-5, atol=1e-5)


def test_equal_halves_of_identical_models_are_bitwise_one_model():
    model, twin = tiny_segformer(seed=5), tiny_segformer(seed=5)
    x = dubai_tensor(2, 6, size=(128, 160))
    cfg = eval_cfg(mode="whole")
    ens = Ensemble([model, twin], [0.5, 0.5], average="logit", num_classes=5)
    assert torch.equal(infer_logits(ens, x, cfg, 5), infer_logits(model, x, cfg, 5))
