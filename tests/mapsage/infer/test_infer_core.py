"""Whole-image and sliding-window inference, padding, TTA: the one inference path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mapsage.infer import (
    InferenceError,
    infer_logits,
    infer_probs,
    model_output_stride,
    slide_windows,
    tta_views,
    window_grid,
)
from tests.support.infer import (
    LowResModel,
    PointwiseModel,
    SymmetricConvModel,
    WindowMeanModel,
    dubai_tensor,
    eval_cfg,
    tiny_segformer,
)

# ----------------------------------------------------------------------------------------------------------------
# the window grid


def test_window_grid_last_window_shifted_back_inside():
    # 1000 px, tile 512, stride 384: starts 0, 384, then 768 would end at 1280 -> shifted back to 488..1000
    assert window_grid(1000, 512, 384) == [(0, 512), (384, 896), (488, 1000)]
    # exact fit: no extra window
    assert window_grid(1024, 512, 512) == [(0, 512), (512, 1024)]
    # smaller than the tile: one window of the image's own size
    assert window_grid(300, 512, 384) == [(0, 300)]
    # every pixel covered, every window inside and of full tile size
    for size in (512, 513, 777, 1024, 2149):
        wins = window_grid(size, 512, 341)
        cover = np.zeros(size, int)
        for a, b in wins:
            assert 0 <= a < b <= size and b - a == min(512, size)
            cover[a:b] += 1
        assert cover.min() >= 1


def test_stride_larger_than_tile_is_refused():
    with pytest.raises(InferenceError, match="eval.stride"):
        window_grid(1000, 256, 300)


def test_slide_windows_order_rows_outer():
    wins = slide_windows(600, 900, [512, 512], [384, 384])
    assert wins == [(0, 512, 0, 512), (0, 512, 384, 896), (0, 512, 388, 900),
                    (88, 600, 0, 512), (88, 600, 384, 896), (88, 600, 388, 900)]


# ----------------------------------------------------------------------------------------------------------------
# sliding window == whole image when one window covers the image (real image, real SegFormer)


def test_slide_equals_whole_when_one_window_covers_the_image():
    model = tiny_segformer()
    x = dubai_tensor(2, 1)                      # a real 509 x 544 Dubai image: not a multiple of 32
    h, w = x.shape[-2:]
    whole = infer_probs(model, x, eval_cfg(mode="whole"), 5)
    slide = infer_probs(model, x, eval_cfg(mode="slide", tile=[1024, 1024], stride=[768, 768]), 5)
    assert slide_windows(h, w, [1024, 1024], [768, 768]) == [(0, h, 0, w)]
    assert whole.shape == (1, 5, h, w)
    assert torch.equal(whole, slide)


def test_padding_to_output_stride_and_crop_back():
    model = tiny_segformer()
    assert model_output_stride(model) == 32
    x = dubai_tensor(1, 2, size=(300, 333))
    logits = infer_logits(model, x, eval_cfg(mode="whole"), 5)
    assert logits.shape == (1, 5, 300, 333)
    # the crop is the top-left of the padded run
    xp = torch.nn.functional.pad(x, (0, 352 - 333, 0, 320 - 300))
    with torch.inference_mode():
        ref = model(xp)[..., :300, :333]
    torch.testing.assert_close(logits, ref)


# ----------------------------------------------------------------------------------------------------------------
# overlap averaging is exact on a model with known output


def _reference_window_mean(image: np.ndarray, tile, stride, num_classes: int) -> np.ndarray:
    """Independent implementation: enumerate windows with plain loops, average the known window outputs."""
    _, h, w = image.shape

    def starts(size, t, s):
        out, a = [], 0
        while True:
            b = min(a + t, size)
            out.append((max(b - t, 0), b))
            if b >= size:
                return out
            a += s

    acc = np.zeros((num_classes, h, w), np.float64)
    cnt = np.zeros((h, w), np.float64)
    for y1, y2 in starts(h, tile[0], stride[0]):
        for x1, x2 in starts(w, tile[1], stride[1]):
            win = image[:, y1:y2, x1:x2].astype(np.float64)
            for c in range(num_classes):
                acc[c, y1:y2, x1:x2] += win[c % 3].mean() + c
            cnt[y1:y2, x1:x2] += 1
    return acc / cnt


@pytest.mark.parametrize("tile,stride,window_batch", [([256, 256], [192, 192], 4), ([200, 300], [150, 100], 1),
                                                      ([256, 256], [256, 256], 16)])
def test_overlap_averaging_exact(tile, stride, window_batch):
    x = dubai_tensor(3, 3, size=(450, 610))
    model = WindowMeanModel(num_classes=4)
    cfg = eval_cfg(mode="slide", tile=tile, stride=stride, window_batch=window_batch)
    got = infer_logits(model, x, cfg, 4)[0].double().numpy()
    ref = _reference_window_mean(x[0].numpy(), tile, stride, 4)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)
    n_windows = len(slide_windows(450, 610, tile, stride))
    assert sum(c[0] for c in model.calls) == n_windows
    assert max(c[0] for c in model.calls) <= max(window_batch, 1)


def test_slide_with_pointwise_model_equals_whole_exactly_and_batches_across_images():
    # a context-free model gives the same logits in every window: averaging must return them unchanged
    model = PointwiseModel(5)
    x = torch.cat([dubai_tensor(3, 1, size=(400, 520)), dubai_tensor(3, 2, size=(400, 520))])
    whole = infer_logits(model, x, eval_cfg(mode="whole"), 5)
    slide = infer_logits(model, x, eval_cfg(mode="slide", tile=[160, 224], stride=[96, 160], window_batch=6), 5)
    torch.testing.assert_close(slide, whole, rtol=0, atol=1e-5)
    per_image = torch.cat([infer_logits(model, x[i:i + 1], eval_cfg(mode="slide", tile=[160, 224],
                                                                    stride=[96, 160], window_batch=1), 5)
                           for i in range(2)])
    torch.testing.assert_close(slide, per_image, rtol=0, atol=1e-5)


def test_window_batch_does_not_change_segformer_output():
    model = tiny_segformer()
    x = dubai_tensor(4, 1, size=(384, 448))
    a = infer_probs(model, x, eval_cfg(mode="slide", tile=[256, 256], stride=[192, 192], window_batch=1), 5)
    b = infer_probs(model, x, eval_cfg(mode="slide", tile=[256, 256], stride=[192, 192], window_batch=8), 5)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.9999


# ----------------------------------------------------------------------------------------------------------------
# TTA


def test_tta_views():
    from mapsage.config.schema import TTACfg
    names = [v.name for v in tta_views(TTACfg(scales=[0.75, 1.0, 1.25], hflip=True))]
    assert names == ["s0.75", "s0.75-fliph", "s1", "s1-fliph", "s1.25", "s1.25-fliph"]
    assert [v.name for v in tta_views(TTACfg())] == ["s1"]
    assert len(tta_views(TTACfg(scales=[1.0], hflip=True, vflip=True))) == 3


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_flip_equivariant_model_identical_with_and_without_flip_tta(mode):
    model = SymmetricConvModel(5)
    x = dubai_tensor(5, 2, size=(320, 448))
    common = dict(mode=mode, tile=[192, 256], stride=[128, 192], window_batch=4)
    plain = infer_probs(model, x, eval_cfg(**common), 5)
    flipped = infer_probs(model, x, eval_cfg(**common, tta={"scales": [1.0], "hflip": True, "vflip": True}), 5)
    torch.testing.assert_close(flipped, plain, rtol=1e-4, atol=5e-5)  # float summation order only
    assert torch.equal(flipped.argmax(1), plain.argmax(1))
    # a model that is NOT flip-equivariant does change (the flip path is really taken)
    seg = tiny_segformer()
    a = infer_probs(seg, x, eval_cfg(mode="whole"), 5)
    b = infer_probs(seg, x, eval_cfg(mode="whole", tta={"scales": [1.0], "hflip": True}), 5)
    assert not torch.allclose(a, b)


def test_tta_softmax_average_of_views():
    model = tiny_segformer()
    x = dubai_tensor(6, 1, size=(256, 320))
    cfg = eval_cfg(mode="whole", tta={"scales": [0.75, 1.25], "hflip": True})
    got = infer_probs(model, x, cfg, 5)
    # by hand: each view resized/flipped, logits back to the input size, softmax, mean
    views = []
    with torch.inference_mode():
        for s in (0.75, 1.25):
            size = (int(256 * s + 0.5), int(320 * s + 0.5))
            xs = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
            for flip in (False, True):
                xi = xs.flip(-1) if flip else xs
                ph, pw = (-size[0]) % 32, (-size[1]) % 32
                out = model(torch.nn.functional.pad(xi, (0, pw, 0, ph)))[..., :size[0], :size[1]]
                out = out.flip(-1) if flip else out
                out = torch.nn.functional.interpolate(out, size=(256, 320), mode="bilinear", align_corners=False)
                views.append(out.softmax(1))
    torch.testing.assert_close(got, torch.stack(views).mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(1), torch.ones(1, 256, 320))


def test_low_resolution_dict_output_is_resized_to_the_input():
    model = LowResModel(5)
    x = dubai_tensor(7, 1, size=(130, 170))
    probs = infer_probs(model, x, eval_cfg(mode="whole"), 5)
    assert probs.shape == (1, 5, 130, 170)
    slide = infer_probs(model, x, eval_cfg(mode="slide", tile=[64, 64], stride=[48, 48]), 5)
    assert slide.shape == (1, 5, 130, 170)


def test_wrong_class_count_is_a_user_error():
    with pytest.raises(InferenceError, match="dataset.classes"):
        infer_probs(PointwiseModel(6), dubai_tensor(1, 1, size=(64, 64)), eval_cfg(mode="whole"), 5)


def test_infer_probs_does_not_change_training_mode():
    model = tiny_segformer().train()
    infer_probs(model, dubai_tensor(1, 1, size=(64, 64)), eval_cfg(mode="whole"), 5)
    assert model.training


def test_window_groups_are_balanced():
    from mapsage.infer.core import _chunks
    assert [len(g) for g in _chunks(list(range(9)), 4)] == [3, 3, 3]
    assert [len(g) for g in _chunks(list(range(10)), 4)] == [4, 4, 2]
    assert [len(g) for g in _chunks(list(range(8)), 4)] == [4, 4]
    assert [len(g) for g in _chunks(list(range(3)), 16)] == [3]
    assert [len(g) for g in _chunks(list(range(5)), 1)] == [1] * 5
    assert sum(_chunks([], 4), []) == []
