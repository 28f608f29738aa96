"""Error drill-down on real LoveDA masks: per-tile confusion written by the metrics engine, ingested, ranked by the
pixels of one confusion cell; error layers and cell masks of one tile."""
from __future__ import annotations

import numpy as np
import pytest

from tests.support.store import loveda_masks, loveda_metrics, make_run, shifted_prediction


def test_tile_rows_carry_the_off_diagonal_confusion_cells_that_sum_to_the_matrix():
    from mapsage.analysis.errors_map import tile_confusion

    m = loveda_metrics(24)
    rows = m.tile_rows()
    total = np.zeros((7, 7), np.int64)
    for row, (tile, _, label) in zip(rows, loveda_masks()):
        assert row["tile"] == tile
        conf = tile_confusion(shifted_prediction(label, 24), label, 7)       # same engine, one tile
        cells = {(t, p): n for t, p, n in row["confusion"]}
        assert cells, "a shifted prediction has errors"
        assert all(t != p and n > 0 for (t, p), n in cells.items())
        off = conf.copy()
        np.fill_diagonal(off, 0)
        assert cells == {(int(t), int(p)): int(off[t, p]) for t, p in zip(*np.nonzero(off))}
        assert list(np.diag(conf)) == row["intersect"]
        for (t, p), n in cells.items():
            total[t, p] += n
    res = m.result().confusion.copy()
    np.fill_diagonal(res, 0)
    assert np.array_equal(total, res)


def test_confusion_tiles_are_ranked_by_the_cells_pixels(tmp_workspace):
    import store
    from store import error_queries as q

    ev = make_run("drill")
    ev.status("running")
    m = loveda_metrics(24)
    m.write_events(ev, split="val", variant="ema", epoch=0)
    m48 = loveda_metrics(48)
    m48.write_events(ev, split="val", variant="ema", epoch=None)
    ev.status("succeeded")
    store.ingest_all()

    rows = m.tile_rows()
    # the cell with most pixels over the split: label c predicted c'
    conf = m.result().confusion.copy()
    np.fill_diagonal(conf, 0)
    c, c2 = np.unravel_index(int(conf.argmax()), conf.shape)
    expect = sorted(((next((n for t, p, n in r["confusion"] if (t, p) == (c, c2)), 0), r["tile"]) for r in rows),
                    key=lambda x: (-x[0], x[1]))
    expect = [(n, t) for n, t in expect if n > 0]

    metrics_rows = store.metrics("drill", split="val")
    first = int(metrics_rows[(metrics_rows["epoch"] == 0) & (metrics_rows["domain"] == "all")]["seq"].iloc[0])
    got = q.confusion_tiles("drill", "val", "ema", int(c), int(c2), eval_seq=first)
    assert [(int(n), t) for n, t in zip(got["pixels"], got["tile"])] == expect
    assert list(got["rank"]) == list(range(1, len(expect) + 1))
    by_tile = {r["tile"]: r for r in rows}
    for t, n, lp in zip(got["tile"], got["pixels"], got["label_pixels"]):
        assert lp == by_tile[t]["label_area"][c] and n <= lp
    assert q.has_tile_confusion("drill", "val", "ema", eval_seq=first)

    # the latest evaluation (no eval_seq) is the 48 px one: different counts
    latest = q.confusion_tiles("drill", "val", "ema", int(c), int(c2))
    r48 = {r["tile"]: r for r in m48.tile_rows()}
    for t, n in zip(latest["tile"], latest["pixels"]):
        assert n == next(x for a, b, x in r48[t]["confusion"] if (a, b) == (c, c2))
    cells = q.tile_confusion_cells("drill", "val", "ema", expect[0][1], eval_seq=first)
    assert int(cells["pixels"].iloc[0]) == max(n for _, _, n in by_tile[expect[0][1]]["confusion"])
    atlas = q.tile_errors("drill", "val", "ema", eval_seq=first)
    for t, wrong, valid in zip(atlas["tile"], atlas["wrong"], atlas["valid"]):
        assert wrong == sum(n for _, _, n in by_tile[t]["confusion"]) and valid == sum(by_tile[t]["label_area"])
    # a domain filter, and an evaluation without rows
    dom = by_tile[expect[0][1]]["domain"]
    assert set(q.confusion_tiles("drill", "val", "ema", int(c), int(c2), eval_seq=first, domain=dom)["domain"]) \
        == {dom}
    assert q.confusion_tiles("drill", "test", "ema", 0, 1).empty
    assert not q.has_tile_confusion("drill", "test", "ema")


def test_cell_mask_and_error_layers_on_a_real_tile():
    from mapsage.analysis import errors_map as em

    tile, _, label = loveda_masks()[0]
    pred = shifted_prediction(label, 24)
    conf = em.tile_confusion(pred, label, 7)
    c, c2 = 6, 0                                             # agriculture taken for background
    cell = em.cell_mask(pred, label, c, c2)
    assert int(cell.sum()) == int(conf[c, c2]) > 0
    hl = em.highlight_rgba(cell)
    assert int((hl[..., 3] > 0).sum()) == int(conf[c, c2]) and tuple(hl[cell][0, :3]) == em.HIGHLIGHT
    lay = em.error_rgba(pred, label, class_id=c)
    rgb = lay[..., :3]
    tp = np.all(rgb == em.CORRECT, axis=-1) & (lay[..., 3] > 0)
    fp = np.all(rgb == em.FALSE_POSITIVE, axis=-1) & (lay[..., 3] > 0)
    fn = np.all(rgb == em.FALSE_NEGATIVE, axis=-1) & (lay[..., 3] > 0)
    assert int(tp.sum()) == int(conf[c, c])
    assert int(fp.sum()) == int(conf[:, c].sum() - conf[c, c])           # predicted c, label another class
    assert int(fn.sum()) == int(conf[c, :].sum() - conf[c, c])           # label c, predicted another class
    assert not (lay[label == 255, 3] > 0).any()                           # ignored pixels stay clear
    overall = em.error_rgba(pred, label)
    wrong = np.all(overall[..., :3] == em.FALSE_POSITIVE, axis=-1) & (overall[..., 3] > 0)
    assert int(wrong.sum()) == int(conf.sum() - np.trace(conf))
    dis = em.disagreement_rgba(pred, label, label=label)
    assert int((dis[..., 3] > 0).sum()) == int(conf.sum() - np.trace(conf))
    with pytest.raises(ValueError):
        em.cell_mask(pred[:10], label, 0, 1)


def test_confidence_layer_is_hot_where_the_model_hesitates():
    from mapsage.analysis.errors_map import confidence_map, confidence_rgba

    probs = np.zeros((3, 2, 2), np.float32)
    probs[:, 0, 0] = [0.98, 0.01, 0.01]       # sure
    probs[:, 0, 1] = [0.5, 0.49, 0.01]        # two classes tie
    probs[:, 1, 0] = [0.34, 0.33, 0.33]       # uniform
    probs[:, 1, 1] = [0.7, 0.2, 0.1]
    mp = confidence_map(probs, "maxprob")
    mg = confidence_map(probs, "margin")
    assert np.allclose(mp, [[0.98, 0.5], [0.34, 0.7]]) and np.allclose(mg, [[0.97, 0.01], [0.01, 0.5]])
    rgba = confidence_rgba(probs, "margin")
    assert rgba[0, 1, 3] > rgba[1, 1, 3] > rgba[0, 0, 3]
