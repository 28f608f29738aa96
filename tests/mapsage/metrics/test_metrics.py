"""The metrics engine: hand-computed cases, API contracts, backends, errors, merging and DDP reduction."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mapsage.errors import DataError
from mapsage.events import EventWriter, read_events
from mapsage.metrics import MetricResult, SegMetrics, hist2d_u8, miou_from_tile_rows
from tests.support.metrics import IGN, LOVEDA_CLASSES, assert_close, derived_predictions, loveda_masks

I = IGN


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small CPU tensors: one thread avoids oversubscribing the shared cores (restored afterwards)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

# ------------------------------------------------------------------------------------------ hand-computed
# label            pred           (I = ignored; 12 valid pixels)
# 0 0 1 1          0 1 1 1
# 0 0 1 1          0 0 1 1
# 2 2 I I          2 0 0 1
# 2 2 I I          2 2 2 2
HAND_LABEL = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, I, I], [2, 2, I, I]], np.uint8)
HAND_PRED = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [2, 0, 0, 1], [2, 2, 2, 2]], np.uint8)


def test_hand_case_all_figures():
    m = SegMetrics(3, class_names=["a", "b", "c"], compute_boundary=False)
    m.update(HAND_PRED, HAND_LABEL)
    r = m.result()
    # class a: label 4, pred 4 (valid), I 3 -> IoU 3/5; b: label 4, pred 5, I 4 -> 4/5; c: label 4, pred 3, I 3 -> 3/4
    assert r.confusion.tolist() == [[3, 1, 0], [0, 4, 0], [1, 0, 3]]
    assert r.confusion.dtype == np.int64
    for got, exp in zip(r.iou, [3 / 5, 4 / 5, 3 / 4]):
        assert_close(got, exp)
    for got, exp in zip(r.acc, [3 / 4, 1.0, 3 / 4]):
        assert_close(got, exp)
    for got, exp in zip(r.precision, [3 / 4, 4 / 5, 1.0]):
        assert_close(got, exp)
    for got, exp in zip(r.f1, [6 / 8, 8 / 9, 6 / 7]):
        assert_close(got, exp)
    assert_close(r.miou, (3 / 5 + 4 / 5 + 3 / 4) / 3)
    assert_close(r.macc, (3 / 4 + 1 + 3 / 4) / 3)
    assert_close(r.aacc, 10 / 12)
    assert_close(r.mf1, (6 / 8 + 8 / 9 + 6 / 7) / 3)
    assert_close(r.per_image_miou, r.miou)       # one image: the same figure
    assert r.n_pixels == 12 and r.n_ignored == 4 and r.n_images == 1
    assert r.excluded_classes == []
    assert math.isnan(r.mbiou) and r.boundary_setting == "not computed"


def test_absent_and_unmatched_classes():
    # label [[0,1],[0,1]], pred [[0,2],[0,0]], C=4:
    # class 0: L2 P3 I2 -> IoU 2/3; class 1: in label, never predicted -> 0; class 2: predicted, not in label -> 0
    # class 3: absent from both -> NaN, excluded from every mean and listed
    m = SegMetrics(4, class_names=["c0", "c1", "c2", "c3"])
    m.update(np.array([[0, 2], [0, 0]]), np.array([[0, 1], [0, 1]]))
    r = m.result()
    assert_close(r.iou[0], 2 / 3)
    assert r.iou[1] == 0.0 and r.iou[2] == 0.0 and math.isnan(r.iou[3])
    assert r.acc[1] == 0.0 and math.isnan(r.acc[2])           # recall undefined without label pixels (mmseg)
    assert math.isnan(r.precision[1]) and r.precision[2] == 0.0
    assert r.f1[1] == 0.0 and r.f1[2] == 0.0 and math.isnan(r.f1[3])
    assert_close(r.miou, (2 / 3 + 0 + 0) / 3)
    assert_close(r.macc, (1.0 + 0.0) / 2)
    assert_close(r.mf1, (0.8 + 0 + 0) / 3)
    assert r.excluded_classes == ["c3"]
    assert r.per_class[3] == {"id": 3, "name": "c3", "iou": None, "acc": None, "precision": None, "f1": None,
                              "fscore": None, "biou": None, "boundary_pixels": 0}
    # mmseg's mFscore leaves out classes without a true positive (1 and 2 here); Dice counts them as 0
    assert math.isnan(r.fscore[1]) and math.isnan(r.fscore[2]) and abs(r.fscore[0] - 0.8) < 1e-12
    assert_close(r.mfscore, 0.8)


def test_areas_accumulate_before_ratios():
    # image 1: class 0 perfect on 1 pixel; image 2: class 0 100 px label, 50 matched. Dataset IoU of class 0 is
    # 51/101 + ..., not the mean of per-image IoUs.
    m = SegMetrics(2, compute_boundary=False)
    m.update(np.array([[0]]), np.array([[0]]))
    lab = np.zeros((10, 10), np.uint8)
    pred = lab.copy()
    pred[:5] = 1
    m.update(pred, lab)
    r = m.result()
    assert_close(r.iou[0], 51 / 101)
    assert_close(r.iou[1], 0.0)
    assert_close(r.miou, (51 / 101 + 0) / 2)
    assert_close(r.per_image_miou, (1.0 + (0.5 + 0) / 2) / 2)   # the separately named per-image figure


def _two_regions(width_left: int, ignore_col: int | None = None) -> np.ndarray:
    m = np.zeros((6, 6), np.uint8)
    m[:, width_left:] = 1
    if ignore_col is not None:
        m[:, ignore_col] = I
    return m


def test_boundary_hand_case():
    # label: class 0 in columns 0-2, class 1 in 3-5; pred: boundary one column to the right. d=2.
    # label bands: class 0 cols 1,2; class 1 cols 3,4. pred bands: class 0 cols 2,3; class 1 cols 4,5.
    # class 0: I = col 2 (6 px), U = cols 1-3 (18 px) -> 1/3; class 1: same -> 1/3.
    m = SegMetrics(2, boundary_px=2)
    m.update(_two_regions(4), _two_regions(3))
    r = m.result()
    assert r.b_intersect.tolist() == [6, 6] and r.b_union.tolist() == [18, 18]
    assert_close(r.mbiou, 1 / 3)
    assert r.boundary_setting == "d=2 px, image border not an edge, ignored pixels dropped"
    # column 5 of the label ignored: the prediction's band pixels there are dropped. class 1: label band cols 3,4,
    # pred band col 4 -> 6/12; class 0 unchanged 6/18.
    m = SegMetrics(2, boundary_px=2)
    m.update(_two_regions(4), _two_regions(3, ignore_col=5))
    r = m.result()
    assert r.b_intersect.tolist() == [6, 6] and r.b_union.tolist() == [18, 12]


def test_ignored_pixels_create_no_boundary():
    # A perfect prediction of a one-class label with an ignored hole: no class edge anywhere, whatever the
    # prediction draws inside the hole. Boundary IoU is undefined (NaN), not 0; mIoU is 1.
    lab = np.zeros((32, 32), np.uint8)
    lab[10:20, 10:20] = I
    pred = np.zeros_like(lab)
    pred[12:18, 12:18] = 1
    m = SegMetrics(2, boundary_px=3)
    m.update(pred, lab)
    r = m.result()
    assert r.miou == 1.0 and r.b_union.tolist() == [0, 0] and math.isnan(r.mbiou)
    # with the border as an edge the frame is a band in both maps: perfect Boundary IoU
    m = SegMetrics(2, boundary_px=3, border_is_edge=True)
    m.update(pred, lab)
    assert m.result().mbiou == 1.0 and "image border counts as edge" in m.result().boundary_setting


def test_boundary_ratio_width():
    m = SegMetrics(7, boundary_ratio=0.02)
    lab = loveda_masks()[0][1]
    m.update(lab, lab)
    r = m.result()
    assert r.boundary_px is None and r.boundary_ratio == 0.02
    assert "d=0.02×diagonal" in r.boundary_setting


# ----------------------------------------------------------------------------------------- batches, tags
def test_batch_equals_single_images_and_tags_split_the_same_accumulation():
    masks = [m for _, m in loveda_masks()]
    preds = [derived_predictions(m, 7, seed=i)["noisy"] for i, m in enumerate(masks)]
    whole = SegMetrics(7, keep_tiles=True)
    whole.update(np.stack(preds[:2]), np.stack(masks[:2]), tags=["Urban", "Rural"], tile=["a", "b"])
    whole.update(preds[2], masks[2], tags={"domain": "Rural", "city": "x"}, tile="c")
    one = SegMetrics(7)
    urban, rural = SegMetrics(7), SegMetrics(7)
    for i, (p, l) in enumerate(zip(preds, masks)):
        one.update(p, l)
        (urban if i == 0 else rural).update(p, l)
    r, r1 = whole.result(), one.result()
    assert np.array_equal(r.confusion, r1.confusion)
    assert np.array_equal(r.b_intersect, r1.b_intersect) and np.array_equal(r.b_union, r1.b_union)
    assert_close(r.per_image_miou, r1.per_image_miou)
    tags = whole.by_tag("domain")
    assert list(tags) == ["Rural", "Urban"]
    assert np.array_equal(tags["Urban"].confusion, urban.result().confusion)
    assert np.array_equal(tags["Rural"].b_union, rural.result().b_union)
    assert tags["Rural"].n_images == 2
    assert list(whole.by_tag("city")) == ["x"] and whole.tag_keys() == ["city", "domain"]
    assert whole.by_tag("nothing") == {}
    assert [row["tile"] for row in whole.tile_rows()] == ["a", "b", "c"]
    assert [row["domain"] for row in whole.tile_rows()] == ["Urban", "Rural", "Rural"]
    # the sum of the tile rows is the dataset
    rows = whole.tile_rows()
    assert_close(miou_from_tile_rows(rows), r.miou)
    assert_close(miou_from_tile_rows(rows, metric="mbiou"), r.mbiou)
    assert np.array_equal(np.sum([row["union"] for row in rows], 0), r.union)


def test_torch_inputs_and_torch_backend_match_numpy():
    (_, lab), (_, lab2) = loveda_masks()[:2]
    lab, lab2 = lab[:384, :512].copy(), lab2[300:684, 200:712]   # crops keep the torch-on-CPU runs short
    lab[:40, :300] = I                                     # some ignored pixels
    preds = derived_predictions(lab, 7)
    for kw in ({}, {"border_is_edge": True, "boundary_px": 2}, {"boundary_ratio": 0.01}):
        ref = SegMetrics(7, keep_tiles=True, **kw)
        ref.update(preds["eroded"], lab, tags="Rural")
        ref.update(preds["relabelled"], lab2, tags="Urban")
        for backend in ("auto", "torch"):
            m = SegMetrics(7, keep_tiles=True, backend=backend, **kw)
            batch_p = torch.from_numpy(np.stack([preds["eroded"], preds["relabelled"]])).long()
            batch_l = torch.from_numpy(np.stack([lab, lab2]))
            m.update(batch_p, batch_l, tags=["Rural", "Urban"])
            a, b = m.result(), ref.result()
            assert np.array_equal(a.confusion, b.confusion), (backend, kw)
            assert np.array_equal(a.b_intersect, b.b_intersect), (backend, kw)
            assert np.array_equal(a.b_union, b.b_union), (backend, kw)
            assert_close(a.per_image_miou, b.per_image_miou, 1e-12)
            assert m.tile_rows() == ref.tile_rows()
            assert np.array_equal(m.by_tag()["Urban"].b_union, ref.by_tag()["Urban"].b_union)


@pytest.mark.parametrize("dtype,ignore", [(np.int64, 255), (np.int32, -1), (np.int16, 250), (np.uint8, 250),
                                          (np.uint16, 1000)])
def test_label_dtypes_and_ignore_values(dtype, ignore):
    lab = loveda_masks()[2][1][:512, :512].copy()
    lab[:50, 100:400] = I                                   # a no-data strip (these samples have none)
    pred = derived_predictions(lab, 7)["shifted"]
    ref = SegMetrics(7)
    ref.update(pred, lab)
    lab2 = lab.astype(np.int64)
    lab2[lab == I] = ignore
    for backend in ("auto", "torch"):
        m = SegMetrics(7, ignore_index=ignore, backend=backend)
        m.update(pred.astype(dtype), lab2.astype(dtype))
        r = m.result()
        assert np.array_equal(r.confusion, ref.result().confusion), backend
        assert np.array_equal(r.b_union, ref.result().b_union), backend
        assert r.n_ignored == ref.result().n_ignored > 0


def test_ignore_swap_keeps_literal_255_invalid():
    # with ignore_index 250, a literal 255 in the label is not ignored: it is an invalid value
    m = SegMetrics(3, ignore_index=250)
    with pytest.raises(DataError, match=r"label values \[255\]"):
        m.update(np.zeros((4, 4), np.uint8), np.full((4, 4), 255, np.uint8), tile="t7")


# ------------------------------------------------------------------------------------------------ errors
def test_out_of_range_values_raise_data_error_naming_the_tile():
    m = SegMetrics(3)
    lab = np.zeros((8, 8), np.uint8)
    lab[0, 0] = 7
    with pytest.raises(DataError, match=r"tile img_4: label values \[7\].*ignore index 255"):
        m.update(np.zeros((8, 8), np.uint8), lab, tile="img_4")
    pred = np.zeros((8, 8), np.int64)
    pred[1, 1] = -2
    pred[1, 2] = 3
    with pytest.raises(DataError, match=r"prediction values \[-2, 3\] are not class ids 0..2"):
        m.update(pred, np.zeros((8, 8), np.uint8), tile="x")
    assert m.n_images == 0 and m.result().n_pixels == 0       # a rejected batch adds nothing
    # anything may be predicted under ignored pixels
    lab = np.full((8, 8), I, np.uint8)
    lab[0] = 1
    pred = np.full((8, 8), 300, np.int64)
    pred[0] = 1
    m.update(pred, lab)
    assert m.result().miou == 1.0


def test_torch_backend_reports_bad_values_at_result():
    m = SegMetrics(3, backend="torch")
    lab = torch.zeros((2, 8, 8), dtype=torch.long)
    lab[1, 0, 0] = 9
    m.update(torch.zeros_like(lab), lab)                     # counted on the device, no sync
    with pytest.raises(DataError, match="1 label pixels"):
        m.result()
    m.reset()
    m.update(torch.full((8, 8), 5), torch.zeros((8, 8), dtype=torch.long))
    with pytest.raises(DataError, match="64 prediction pixels"):
        m.result()


def test_input_validation():
    m = SegMetrics(3)
    with pytest.raises(TypeError, match="argmax"):
        m.update(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8))
    with pytest.raises(TypeError, match="argmax"):
        m.update(torch.zeros((4, 4)), torch.zeros((4, 4), dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        m.update(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"\[H,W\] or \[B,H,W\]"):
        m.update(np.zeros((1, 1, 4, 4), np.uint8), np.zeros((1, 1, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="tags"):
        m.update(np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4), np.uint8), tags=["Urban"])
    with pytest.raises(ValueError, match="tile ids"):
        m.update(np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4), np.uint8), tile=["a"])
    with pytest.raises(ValueError, match="collides|also a class id"):
        SegMetrics(3, ignore_index=2)
    with pytest.raises(ValueError, match="class names"):
        SegMetrics(3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="num_classes"):
        SegMetrics(300)
    with pytest.raises(ValueError, match="boundary_px"):
        SegMetrics(3, boundary_px=0)
    with pytest.raises(RuntimeError, match="keep_tiles"):
        SegMetrics(3).tile_rows()


def test_hist2d_is_exact_beyond_float32_range():
    # 4097 x 4097 = 16,785,409 pixels of one value: more than 2**24, where float32 counting would round
    a = np.zeros((4097, 4097), np.uint8)
    b = np.zeros_like(a)
    b[-1, -1] = 3
    h = hist2d_u8(a, b)
    assert h[0, 0] == 4097 * 4097 - 1 and h[0, 3] == 1 and h.sum() == 4097 * 4097


# ------------------------------------------------------------------------------------- result renderings
def _real_result(**kw) -> SegMetrics:
    m = SegMetrics(7, class_names=LOVEDA_CLASSES, keep_tiles=True, **kw)
    for i, (name, lab) in enumerate(loveda_masks()):
        m.update(derived_predictions(lab, 7, seed=i)["relabelled"], lab, tags="Rural", tile=name)
    return m


def test_event_json_table_dataframe(tmp_path):
    m = _real_result()
    r = m.result()
    payload = m.to_event("val", "all", "ema", 3)
    assert set(payload) >= {"split", "domain", "variant", "epoch", "summary", "classes", "excluded_classes",
                            "confusion", "n_images", "boundary_px"}
    assert payload["summary"].keys() == {"miou", "macc", "aacc", "mf1", "mbiou", "per_image_miou", "mfscore",
                                         "mfscore_fg"}
    assert payload["classes"][4] == {"id": 4, "name": "barren", "iou": None, "acc": None, "precision": None,
                                     "f1": None, "fscore": None, "biou": None, "boundary_pixels": 0}
    assert payload["excluded_classes"] == ["barren"] and payload["boundary_px"] == 3
    assert m.to_event("val", "Rural", "ema", 3)["summary"] == payload["summary"]
    # through the real event writer and back
    w = EventWriter(tmp_path)
    w.emit("metrics", **payload)
    w.emit("tiles", **m.tiles_event("val", "ema"))
    recs, _ = read_events(tmp_path / "events.jsonl")
    assert recs[0]["summary"]["miou"] == pytest.approx(r.miou, abs=0)
    assert recs[0]["confusion"] == r.confusion.tolist()
    assert len(recs[1]["rows"]) == 3 and recs[1]["rows"][0]["tile"] == loveda_masks()[0][0]
    # JSON and back
    d = json.loads(m.to_json())
    assert d["miou"] == r.miou and d["classes"][0]["name"] == "background" and d["excluded_classes"] == ["barren"]
    back = MetricResult.from_dict(d)
    assert back.miou == r.miou and back.mbiou == r.mbiou and back.per_image_miou == r.per_image_miou
    assert np.array_equal(back.confusion, r.confusion)
    # table and dataframe
    text = r.table()
    assert "agriculture" in text and f"{r.miou * 100:.2f}" in text and "excluded" in text and "d=3 px" in text
    df = r.to_dataframe()
    assert list(df.columns) == ["class", "iou", "acc", "precision", "f1", "biou", "label_share", "pred_share",
                                  "fscore"]
    assert df.loc[6, "iou"] == r.iou[6] and math.isnan(df.loc[4, "iou"])
    assert r.to_dataframe(percent=True).loc[6, "iou"] == pytest.approx(r.iou[6] * 100)
    assert r.weakest(2) == [LOVEDA_CLASSES[k] for k in np.argsort(np.nan_to_num(r.iou, nan=9))[:2]]


def test_write_events_emits_all_and_domains(tmp_path):
    m = SegMetrics(7, keep_tiles=True)
    (_, a), (_, b) = loveda_masks()[:2]
    m.update(a, a, tags="Urban")
    m.update(derived_predictions(b, 7)["shifted"], b, tags="Rural")
    m.write_events(EventWriter(tmp_path), "val", "raw", epoch=None)
    recs, _ = read_events(tmp_path / "events.jsonl")
    assert [(r["type"], r.get("domain")) for r in recs] == [("metrics", "all"), ("metrics", "Rural"),
                                                           ("metrics", "Urban"), ("tiles", None)]
    assert recs[2]["summary"]["miou"] == 1.0


# ------------------------------------------------------------------------------------ merge / state / DDP
def test_merge_state_roundtrip_and_reset():
    masks = loveda_masks()
    full = SegMetrics(7, keep_tiles=True)
    parts = [SegMetrics(7, keep_tiles=True) for _ in range(2)]
    for i, (name, lab) in enumerate(masks):
        pred = derived_predictions(lab, 7, seed=i)["noisy"]
        full.update(pred, lab, tags="Rural" if i else "Urban", tile=name)
        parts[i % 2].update(pred, lab, tags="Rural" if i else "Urban", tile=name)
    merged = parts[0].merge(parts[1])
    assert np.array_equal(merged.result().confusion, full.result().confusion)
    assert np.array_equal(merged.by_tag()["Rural"].b_union, full.by_tag()["Rural"].b_union)
    assert merged.result().per_image_miou == pytest.approx(full.result().per_image_miou, abs=1e-15)
    assert sorted(r["tile"] for r in merged.tile_rows()) == sorted(r["tile"] for r in full.tile_rows())
    state = full.state_tensors()
    assert state["keys"] == [None, ("domain", "Rural"), ("domain", "Urban")]
    assert state["counts"].dtype == torch.int64 and state["iou_sum"].dtype == torch.float64
    fresh = SegMetrics(7)
    fresh.load_state(state)
    assert np.array_equal(fresh.result().confusion, full.result().confusion)
    assert fresh.by_tag()["Urban"].n_images == 1 and fresh.n_images == 3
    with pytest.raises(ValueError, match="settings"):
        full.merge(SegMetrics(7, boundary_px=2))
    full.reset()
    assert full.n_images == 0 and full.result().n_pixels == 0 and math.isnan(full.result().miou)


@pytest.mark.timeout(180)
def test_all_reduce_across_two_gloo_ranks(tmp_path):
    import socket

    import torch.multiprocessing as mp

    from tests.support.metrics import ddp_worker

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loveda_masks()                        # loaded once, inherited by the forked ranks
    mp.start_processes(ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    ref = SegMetrics(7, keep_tiles=True)
    for i, (name, lab) in enumerate(loveda_masks()):
        ref.update(derived_predictions(lab, 7, seed=i)["eroded"], lab, tags="Urban" if i == 1 else "Rural",
                   tile=name)
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        exp = ref.result()
        assert got["confusion"] == exp.confusion.tolist()
        assert got["b_union"] == exp.b_union.tolist()
        assert got["per_image_miou"] == pytest.approx(exp.per_image_miou, abs=1e-15)
        assert got["urban_miou"] == ref.by_tag()["Urban"].miou          # the tag exists on one rank only
        assert sorted(got["tiles"]) == sorted(r["tile"] for r in ref.tile_rows())


def test_single_histogram_path_equals_exact_path():
    # The engine counts confusion and band areas in one histogram of band-flagged ids when C < 128 and the
    # values are clean; otherwise (more classes, or out-of-range predictions under ignored pixels) it takes the
    # two-histogram path. Both must give identical areas.
    lab = loveda_masks()[0][1][:400, :500].copy()
    lab[:30] = I
    pred = derived_predictions(lab, 7)["eroded"]
    fast = SegMetrics(7, keep_tiles=True)
    fast.update(pred, lab)
    wild = pred.copy()
    wild[lab == I] = 200                                       # allowed, but forces the exact path
    exact = SegMetrics(7, keep_tiles=True)
    exact.update(wild, lab)
    many = SegMetrics(130, keep_tiles=True)                    # ids >= 128 possible: exact path
    many.update(pred, lab)
    a, b, c = fast.result(), exact.result(), many.result()
    assert np.array_equal(a.confusion, b.confusion) and np.array_equal(a.confusion, c.confusion[:7, :7])
    for x in (b, c):
        assert np.array_equal(a.b_intersect, x.b_intersect[:7]) and np.array_equal(a.b_union, x.b_union[:7])
    assert a.n_ignored == b.n_ignored == c.n_ignored == 30 * 500
    assert_close(a.mbiou, b.mbiou)
    assert len(c.excluded_classes) == 130 - len(set(np.unique(lab)) - {I} | set(np.unique(pred[lab != I])))
