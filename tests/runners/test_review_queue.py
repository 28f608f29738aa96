"""The review queue: tiles ranked for review by model uncertainty.

* a constructed case on real LoveDA label masks with known per-tile uncertainties (closed-form entropy and
  margin), registered as a run's probability artifacts, ranked through the store as the app and the CLI do;
* a REAL evaluation of the demo checkpoint on 3 Dubai tiles with ``eval.save_probabilities=true``
  (``tests/support/queue.py``): its scores against an independent computation (scipy), a tile with injected
  uncertainty ranking first, reviewed and corrected tiles going last, the disagreement of a refinement run's raw
  and CRF masks, and the ``mapsage queue`` CLI's CSV.
"""
from __future__ import annotations

import math
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.support.queue import QUEUE_TILES
from tests.support.store import loveda_masks, make_run

C = 7


def _h(eps: float) -> float:
    """Normalised entropy of a pixel with 1 - eps on one class and eps spread evenly over the other C - 1."""
    return (-(1 - eps) * math.log(1 - eps) - eps * math.log(eps / (C - 1))) / math.log(C)


def _probs(label: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """[C, H, W]: 1 - eps on the label's class (class 0 on ignored pixels), eps / (C - 1) on the others."""
    ids = np.where(label == 255, 0, label).astype(np.int64)
    p = np.broadcast_to((eps / (C - 1))[None], (C, *label.shape)).copy()
    np.put_along_axis(p, ids[None], (1 - eps)[None], axis=0)
    return p


# -------------------------------------------------------------------------------------- constructed, known answers
def test_queue_orders_tiles_by_entropy_on_a_constructed_case_with_known_uncertainties(tmp_workspace):
    import store
    from runners import review_queue as rq

    masks = [(tile, label[::4, ::4]) for tile, _, label in loveda_masks()]      # real labels, 256 x 256
    assert len(masks) == 3
    (ta, la), (tb, lb), (tc, lc) = masks
    eps_a = np.full(la.shape, 0.05)
    eps_b = np.full(lb.shape, 0.02)
    eps_b[:128, :128] = 6 / 7                          # injected: a quarter of the tile is uniform (entropy 1)
    eps_c = np.full(lc.shape, 0.30)
    ev = make_run("queue-constructed")
    ev.status("running")
    d = ev.run_dir / "predictions" / "raw"
    d.mkdir(parents=True)
    for i, (tile, label, eps) in enumerate(((ta, la, eps_a), (tb, lb, eps_b), (tc, lc, eps_c))):
        path = d / f"t{i}_prob.npz"
        p = _probs(label, eps)
        if i == 2:    # the compact form of `mapsage predict --probabilities uint8`
            np.savez_compressed(path, probs=np.rint(p * 255).astype(np.uint8), scale=np.float32(1 / 255))
        else:
            np.savez_compressed(path, probs=p.astype(np.float16))
        ev.artifact("prob", path, tile=tile, variant="raw", split="val")
    ev.status("succeeded")
    store.ingest_all()

    want_entropy = {ta: _h(0.05), tb: 0.75 * _h(0.02) + 0.25 * 1.0, tc: _h(0.30)}
    want_margin = {ta: 0.95 - 0.05 / 6, tb: 0.75 * (0.98 - 0.02 / 6) + 0.25 * 0.0, tc: 0.70 - 0.30 / 6}
    want_low = {ta: 0.0, tb: 0.25, tc: 0.0}
    assert want_entropy[tc] > want_entropy[tb] > want_entropy[ta]

    q, info = rq.queue("queue-constructed")
    assert info["by"] == "entropy" and info["variant"] == "raw"
    assert list(q["tile"]) == [tc, tb, ta] and list(q["rank"]) == [1, 2, 3]
    tol = {ta: 2e-3, tb: 2e-3, tc: 1e-2}                  # float16 storage; uint8 (1/255 steps) for tc
    for t, e, m, low in zip(q["tile"], q["entropy"], q["margin"], q["low_margin_share"]):
        assert e == pytest.approx(want_entropy[t], abs=tol[t]), t
        assert m == pytest.approx(want_margin[t], abs=tol[t]), t
        assert low == pytest.approx(want_low[t], abs=1e-9), t
    assert q["disagreement"].isna().all() and not q["reviewed"].any()
    # the other scores order the same tiles differently, as their definitions say
    assert list(rq.queue("queue-constructed", by="low_margin_share")[0]["tile"])[0] == tb
    assert list(rq.queue("queue-constructed", by="margin")[0]["tile"]) == [tc, tb, ta]

    # a verdict on the most uncertain tile sends it to the end; --unreviewed drops it
    store.add_verdict("queue-constructed", tc, "worse", reviewer="ana", variant="raw")
    q2, _ = rq.queue("queue-constructed")
    assert list(q2["tile"]) == [tb, ta, tc] and list(q2["reviewed"]) == [False, False, True]
    assert q2["verdict"].iloc[-1] == "worse"
    assert list(rq.queue("queue-constructed", include_reviewed=False)[0]["tile"]) == [tb, ta]
    with pytest.raises(rq.QueueError, match="disagreement"):
        rq.queue("queue-constructed", by="disagreement")
    with pytest.raises(rq.QueueError, match="not in the store"):
        rq.queue("no-such-run")


def test_member_entropy_is_the_mutual_information_of_the_members():
    from mapsage.analysis.uncertainty import tile_scores

    a = np.zeros((2, 1, 2))
    a[:, 0, 0] = [1.0, 0.0]
    a[:, 0, 1] = [0.5, 0.5]
    b = a.copy()
    b[:, 0, 0] = [0.0, 1.0]                      # the members are each sure of a different class at pixel 0
    s = tile_scores(member_probs=[a, b])
    # pixel 0: mean [0.5, 0.5] has entropy 1, each member 0 -> MI 1; pixel 1: all uniform -> MI 0
    assert s["member_entropy"] == pytest.approx(0.5) and s["entropy"] == pytest.approx(1.0)
    assert tile_scores(member_probs=[a, a])["member_entropy"] == pytest.approx(0.0)


# -------------------------------------------------------------------------------------- a real evaluation
@pytest.fixture
def queue_ws(queue_store, tmp_path, monkeypatch):
    ws = tmp_path / "workspace"
    shutil.copytree(queue_store["workspace"], ws)
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(ws))
    return {**queue_store, "workspace": ws}


def _independent_scores(path) -> dict[str, float]:
    from scipy.stats import entropy

    with np.load(path) as z:
        p = z["probs"].astype(np.float64)
    p = p / p.sum(axis=0, keepdims=True)
    ent = entropy(p, axis=0) / np.log(p.shape[0])
    s = np.sort(p, axis=0)
    margin = s[-1] - s[-2]
    return {"entropy": float(ent.mean()), "margin": float(margin.mean()),
            "low_margin_share": float((margin < 0.1).mean())}


def test_real_evaluation_scores_match_an_independent_computation_and_injected_uncertainty_ranks_first(queue_ws):
    import store
    from runners import review_queue as rq
    from store import queue_queries

    rid = queue_ws["probs"]
    files = queue_queries.queue_files(rid)
    probs = files[files["kind"] == "prob"]
    assert len(probs) == QUEUE_TILES and probs["variant"].nunique() == 1
    q, info = rq.queue(rid)
    assert info["by"] == "entropy" and len(q) == QUEUE_TILES
    by_tile = dict(zip(probs["tile"], probs["abs_path"]))
    want = {t: _independent_scores(by_tile[t]) for t in by_tile}
    for _, r in q.iterrows():
        for k in ("entropy", "margin", "low_margin_share"):
            assert r[k] == pytest.approx(want[r["tile"]][k], abs=1e-6), (r["tile"], k)
    assert list(q["tile"]) == sorted(want, key=lambda t: (-want[t]["entropy"], t))
    assert len({round(v["entropy"], 6) for v in want.values()}) == QUEUE_TILES   # a real ranking, no ties

    # inject uncertainty into the least uncertain tile: its probabilities pulled halfway to uniform
    last = q["tile"].iloc[-1]
    with np.load(by_tile[last]) as z:
        p = z["probs"].astype(np.float32)
    np.savez_compressed(by_tile[last], probs=(0.5 * p + 0.5 / p.shape[0]).astype(np.float16))
    q2, _ = rq.queue(rid)
    assert q2["tile"].iloc[0] == last
    assert q2["entropy"].iloc[0] == pytest.approx(_independent_scores(by_tile[last])["entropy"], abs=1e-6)
    assert q2["entropy"].iloc[0] > q["entropy"].max()

    # a verdict and a correction in a label version both count as reviewed: those tiles go last
    from mapsage.analysis import labels as lv

    first, second = q2["tile"].iloc[0], q2["tile"].iloc[1]
    store.add_verdict(rid, first, "same", reviewer="ana", variant=info["variant"])
    run = store.run(rid)
    label = np.zeros((8, 8), np.uint8)
    lv.add_version(lv.labels_root(run["config"]["dataset"]), {second: label}, reviewer="bo")
    q3, _ = rq.queue(rid)
    assert list(q3["tile"][-2:]) == [first, second] and q3["reviewed"].tolist() == [False, True, True]
    assert q3.set_index("tile").loc[second, "corrected_in"] == "v1"
    assert q3.set_index("tile").loc[first, "verdict"] == "same"


def test_disagreement_of_a_refinement_runs_masks(queue_ws):
    from PIL import Image

    from runners import review_queue as rq
    from store import queue_queries

    rid = queue_ws["refine"]
    files = queue_queries.queue_files(rid)
    masks = files[files["kind"].isin(["pred", "refined"])]
    assert masks["variant"].nunique() >= 2
    q, info = rq.queue(rid)
    assert info["by"] == "disagreement" and "entropy" not in info["available"]
    want = {}
    for tile, g in masks.groupby("tile"):
        stack = np.stack([np.asarray(Image.open(p)) for p in g["abs_path"]])
        want[tile] = float((stack != stack[0]).any(axis=0).mean())
    for t, dis in zip(q["tile"], q["disagreement"]):
        assert dis == pytest.approx(want[t], abs=1e-12)
    assert list(q["tile"]) == sorted(want, key=lambda t: (-want[t], t))
    assert max(want.values()) > 0


def test_queue_cli_prints_and_exports_the_queue(queue_ws, tmp_path, capsys):
    from runners import review_queue as rq
    from runners.cli import main

    rid = queue_ws["probs"]
    out = tmp_path / "queue.csv"
    assert main(["queue", rid, "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    want, _ = rq.queue(rid)
    got = pd.read_csv(out)
    assert list(got["tile"]) == list(want["tile"]) and np.allclose(got["entropy"], want["entropy"])
    assert "ranked by entropy" in printed and want["tile"].iloc[0] in printed
    assert main(["queue", rid, "--by", "disagreement"]) == 2
    assert "disagreement" in capsys.readouterr().err
