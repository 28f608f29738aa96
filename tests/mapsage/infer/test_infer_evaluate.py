"""``evaluate``: real datasets (Dubai demo, LoveDA samples) through infer_probs, SegMetrics, events, PNGs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mapsage.config import load_config
from mapsage.errors import DataError
from mapsage.events import EventWriter, read_events
from mapsage.infer import evaluate, evaluate_outcome, infer_probs
from mapsage.infer.evaluate import pick_indices
from mapsage.metrics import SegMetrics
from tests.support.infer import DUBAI_CONFIG, PROJECT_ROOT, PointwiseModel, SymmetricConvModel

LOVEDA_CONFIG = PROJECT_ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_loveda-samples.yaml"


@pytest.fixture(scope="module")
def dubai_cfg():
    return load_config(DUBAI_CONFIG, ["eval.mode=slide", "eval.tile=[256,256]", "eval.stride=[192,192]",
                                      "eval.window_batch=8", "train.num_workers=0"])


@pytest.fixture(scope="module")
def dubai_val(dubai_cfg):
    from mapsage.data import build_dataset
    return build_dataset(dubai_cfg, "val")


def _events(run_dir, type_):
    return [r for r in read_events(run_dir / "events.jsonl")[0] if r["type"] == type_]


def test_evaluate_dubai_events_pngs_and_metrics_agree(tmp_path, dubai_cfg, dubai_val):
    model = SymmetricConvModel(5).train()
    events = EventWriter(tmp_path)
    outcome = evaluate_outcome(model, dubai_val, dubai_cfg, split="val", variant="raw", device="cpu",
                               events=events, epoch=3, save_dir=tmp_path / "predictions", max_tiles=3,
                               show_bar=False)
    assert model.training, "evaluate must restore the training mode"
    res = outcome.result
    assert outcome.n_images == 3 and res.n_images == 3
    # the metrics are those of the written id PNGs against the real decoded masks (independent re-scoring)
    idx = pick_indices(len(dubai_val), 3)
    check = SegMetrics(5, ignore_index=255, boundary_px=dubai_cfg.eval.boundary_px)
    for i in idx:
        sample = dubai_val.samples[i]
        stem = sample.id.replace(" ", "_")
        pred = np.asarray(Image.open(tmp_path / "predictions" / "raw" / f"{stem}.png"))
        colour = np.asarray(Image.open(tmp_path / "predictions" / "raw" / f"{stem}_color.png"))
        assert colour.shape == pred.shape + (3,)
        # the colour PNG uses the dataset palette
        water = pred == 0
        if water.any():
            assert tuple(colour[water][0]) == (0xE2, 0xA9, 0x29)
        check.update(pred, dubai_val.load_mask(i))
    ref = check.result()
    np.testing.assert_array_equal(ref.confusion, res.confusion)
    assert ref.mbiou == pytest.approx(res.mbiou)
    # events: one metrics record (no domains in Dubai), one tiles record, two artifacts per tile
    metrics = _events(tmp_path, "metrics")
    assert [(m["split"], m["domain"], m["variant"], m["epoch"]) for m in metrics] == [("val", "all", "raw", 3)]
    assert metrics[0]["summary"]["miou"] == pytest.approx(res.miou)
    assert len(metrics[0]["classes"]) == 5 and metrics[0]["n_images"] == 3
    tiles = _events(tmp_path, "tiles")
    assert len(tiles) == 1 and [r["tile"] for r in tiles[0]["rows"]] == [dubai_val.samples[i].id for i in idx]
    arts = _events(tmp_path, "artifact")
    assert sorted({a["kind"] for a in arts}) == ["pred", "pred_color"] and len(arts) == 6
    assert all(not a["path"].startswith("/") and a["variant"] == "raw" for a in arts)
    # speed figures are measured
    assert outcome.images_per_s > 0 and outcome.mpix_per_s > 0 and "CPU" in outcome.device


def test_evaluate_prediction_equals_infer_probs_argmax(dubai_cfg, dubai_val):
    model = PointwiseModel(5)
    res = evaluate(model, dubai_val, dubai_cfg, split="val", variant="raw", device="cpu", max_tiles=1)
    sample = dubai_val[0]
    pred = infer_probs(model, sample["image"][None], dubai_cfg.eval, 5).argmax(1)[0]
    m = SegMetrics(5, class_names=list(dubai_cfg.dataset.classes))
    m.update(pred, sample["mask"])
    np.testing.assert_array_equal(m.result().confusion, res.confusion)


def test_evaluate_loveda_per_domain_events_and_probabilities(tmp_path):
    from mapsage.data import build_dataset

    cfg = load_config(LOVEDA_CONFIG, ["eval.mode=whole"])
    ds = build_dataset(cfg, "train")               # two real Rural tiles, 1024 x 1024
    events = EventWriter(tmp_path)
    res = evaluate(SymmetricConvModel(7), ds, cfg, split="train", variant="ema", device="cpu", events=events,
                   save_dir=tmp_path / "pred", save_probabilities=True, show_bar=False)
    metrics = _events(tmp_path, "metrics")
    assert [(m["domain"], m["variant"]) for m in metrics] == [("all", "ema"), ("Rural", "ema")]
    assert metrics[1]["summary"]["miou"] == pytest.approx(res.miou)   # all tiles are Rural
    probs = [a for a in _events(tmp_path, "artifact") if a["kind"] == "prob"]
    assert len(probs) == 2
    arr = np.load(tmp_path / probs[0]["path"])["probs"]
    assert arr.dtype == np.float16 and arr.shape == (7, 1024, 1024)
    np.testing.assert_allclose(arr.astype(np.float32).sum(0), 1.0, atol=5e-3)


def test_evaluate_without_masks_is_a_data_error(dubai_cfg):
    class NoMask(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"image": torch.zeros(3, 64, 64), "id": "x", "domain": "", "path": "x.png"}

    with pytest.raises(DataError, match="no masks"):
        evaluate(PointwiseModel(5), NoMask(), dubai_cfg, split="test", variant="raw", device="cpu")


def test_pick_indices_spread_evenly():
    assert pick_indices(18, None) == list(range(18))
    assert pick_indices(18, 3) == [0, 8, 17]
    assert pick_indices(2, 5) == [0, 1]


def test_predict_dataset_writes_and_registers_predictions(tmp_path):
    from mapsage.data import build_dataset
    from mapsage.infer import predict_dataset

    cfg = load_config(LOVEDA_CONFIG, ["eval.mode=whole"])
    ds = build_dataset(cfg, "val")
    events = EventWriter(tmp_path)
    paths = predict_dataset(SymmetricConvModel(7), ds, cfg, save_dir=tmp_path / "pred", device="cpu",
                            events=events, split="val")
    assert len(paths) == 2 * len(ds)
    pred = np.asarray(Image.open(paths[0]))
    assert pred.shape == (1024, 1024) and pred.max() < 7
    assert [a["kind"] for a in _events(tmp_path, "artifact")] == ["pred", "pred_color"] * len(ds)


def test_a_stopped_evaluation_writes_no_metrics(tmp_path, dubai_cfg, dubai_val):
    calls = []

    def stop_after_one():
        calls.append(1)
        return len(calls) > 1

    events = EventWriter(tmp_path)
    out = evaluate_outcome(PointwiseModel(5), dubai_val, dubai_cfg, split="val", variant="raw", device="cpu",
                           events=events, max_tiles=3, should_stop=stop_after_one, show_bar=False)
    assert not out.complete and out.n_images == 1
    assert not _events(tmp_path, "metrics") and not _events(tmp_path, "tiles")


def test_a_stop_before_the_first_tile_is_a_stopped_evaluation_not_an_empty_split(tmp_path, dubai_cfg, dubai_val):
    """train.max_time / a cancel can fire just as validation starts: that is a stop (complete=False, nothing
    written), not the 'split has no samples' data error that failed the run."""
    events = EventWriter(tmp_path)
    out = evaluate_outcome(PointwiseModel(5), dubai_val, dubai_cfg, split="val", variant="raw", device="cpu",
                           events=events, max_tiles=3, should_stop=lambda: True, show_bar=False)
    assert not out.complete and out.n_images == 0 and out.timed_images == 0
    assert not _events(tmp_path, "metrics") and not _events(tmp_path, "tiles")
