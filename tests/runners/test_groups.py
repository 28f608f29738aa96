"""Repeats and folds: 3-fold grouped CV of the demo config as a group of real runs; the group's board row is the
mean ± sd with a Student-t 95 % interval of the runs' own figures, and each fold validated on different tiles."""
from __future__ import annotations

import math

import pytest

from tests.support.app import DEMO, QUICK, run_in_process


def test_t_interval_matches_the_textbook():
    from store.groups import t_interval

    mean, sd, lo, hi = t_interval([0.50, 0.52, 0.54])
    assert mean == pytest.approx(0.52) and sd == pytest.approx(0.02)
    half = 4.302652729911275 * 0.02 / math.sqrt(3)           # t(0.975, 2)
    assert (lo, hi) == (pytest.approx(0.52 - half), pytest.approx(0.52 + half))
    assert math.isnan(t_interval([0.4])[1])


def test_group_overrides_cover_every_fold_and_seed():
    from mapsage.config import load_config
    from runners.groups import group_overrides

    cfg = load_config(DEMO)
    rows = group_overrides(cfg, seeds=2, folds=3, group_id="grp_x")
    assert [(r, f) for r, f, _ in rows] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    names = [next(o for o in ov if o.startswith("stage.name=")) for _, _, ov in rows]
    assert len(set(names)) == 6
    assert "train.seed=43" in rows[1][2] and "dataset.split.fold=2" in rows[5][2]


def test_launch_group_refuses_official_splits(tmp_path, monkeypatch):
    from mapsage.config import ConfigError
    from runners.groups import launch_group

    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(tmp_path / "ws"))
    with pytest.raises(ConfigError, match="k-fold CV is for datasets split by groups"):
        launch_group("configs/stage1_baselines/demo_segformer_mit-b0_loveda-samples.yaml", folds=3)


@pytest.mark.slow
def test_three_fold_group_on_the_board(tmp_path, monkeypatch):
    import torch

    import store
    from mapsage.config import load_config
    from mapsage.workspace import run_dir
    from runners.groups import group_overrides
    from store.groups import group_board, run_links, t_interval

    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(tmp_path / "ws"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    quick = [q for q in QUICK if not q.startswith("dataset.max_samples")] + ["train.epochs=1",
                                                                              "dataset.max_samples=4"]
    cfg = load_config(DEMO, quick)
    try:
        rids = [run_in_process(DEMO, quick + ov) for _, _, ov in group_overrides(cfg, 1, 3, "grp_demo_3fold")]
    finally:
        torch.set_num_threads(threads)
    links = run_links(rids).set_index("run_id")
    import re

    for rid in rids:      # the best checkpoint again under a name carrying fold, seed, epoch and score
        (named,) = (run_dir(rid) / "checkpoints" / "named").glob("*.pth")
        fold = int(links.loc[rid, "cv_fold"])
        m = re.fullmatch(rf"fold{fold}_seed42_ep001_miou0\.\d{{4}}_(raw|ema)\.pth", named.name)
        assert m, named.name
        best = "best.pth" if m.group(1) == "raw" else "best_ema.pth"
        assert named.stat().st_ino == (run_dir(rid) / "checkpoints" / best).stat().st_ino
    assert sorted(links["cv_fold"]) == [0, 1, 2] and set(links["cv_group"]) == {"grp_demo_3fold"}
    # each fold's run validated on its own tiles (the evaluated images' tiles): no tile in two folds
    val_tiles = {}
    for rid in rids:
        for g in sorted({t.split("/")[0] for t in store.tiles(rid, split="val")["tile"]}):
            assert g not in val_tiles, f"{g} validated by {val_tiles[g]} and {rid}"
            val_tiles[g] = rid
    assert len(val_tiles) >= 3
    board = group_board()
    assert len(board) == 1
    row = board.iloc[0]
    figs = store.ranking(run_ids=rids).set_index("run_id")["miou"]
    mean, sd, lo, hi = t_interval(list(figs))
    assert row["runs"] == 3 and row["folds"] == 3 and row["pending"] == 0
    names = store.list_runs().set_index("run_id")["name"]
    assert sorted(names[rids]) == [f"{row['name']}-f{k}" for k in range(3)]   # the runs' names less -f<k>
    assert row["mean"] == pytest.approx(mean) and row["sd"] == pytest.approx(sd)
    assert row["ci_low"] == pytest.approx(lo) and row["ci_high"] == pytest.approx(hi) and lo < mean < hi


def test_paired_groups_pair_folds_and_seeds(tmp_path, monkeypatch, capsys):
    """Two groups of real run folders (the demo_job stage) with figures written as ordinary metrics events."""
    import store
    from mapsage.config import config_hash, load_config, save_resolved
    from mapsage.events import EventWriter
    from mapsage.workspace import run_dir
    from store.groups import paired_groups

    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(tmp_path / "ws"))
    figs = {"A": [0.50, 0.60, 0.40], "B": [0.52, 0.63, 0.41]}      # B better on every fold, by 1-3 points
    for g, vals in figs.items():
        for fold, v in enumerate(vals):
            cfg = load_config(DEMO, ["dataset.split.folds=3", f"dataset.split.fold={fold}", f"cv.group=grp_{g}",
                                     "cv.repeat=0"])
            rid = f"run{g}{fold}_20260101-000000_000{fold}"
            d = run_dir(rid)
            d.mkdir(parents=True)
            save_resolved(cfg, d)
            ev = EventWriter(d)
            ev.status("queued")
            ev.emit("run_info", name=rid, kind="train", config_hash=config_hash(cfg), dataset="dubai")
            ev.emit("metrics", split="val", domain="all", variant="raw", epoch=None, n_images=18,
                    summary={"miou": v, "mbiou": v / 2, "macc": v, "aacc": v, "mf1": v}, classes=[])
            ev.status("succeeded")
    store.ingest_all()
    out = paired_groups("grp_A", "grp_B")
    assert out["n"] == 3 and out["b_wins"] == 3 and out["unpaired"] == 0
    assert out["pairs"]["fold"].tolist() == [0, 1, 2]
    assert out["mean_diff"] == pytest.approx(0.02)
    assert out["ci_low"] < out["mean_diff"] < out["ci_high"]
    from store.groups import group_board

    board = group_board()
    assert board["group"].tolist() == ["grp_B", "grp_A"]          # ranked by the mean
    assert board.iloc[0]["mean"] == pytest.approx(sum(figs["B"]) / 3)
    # the paired bootstrap over the same three (fold, seed) differences [+2, +3, +1] points: every one of the
    # 27 equally likely ordered resamples, enumerated with numpy, is the exact bootstrap distribution
    import itertools

    import numpy as np

    from runners.cli import main

    bs = out["bootstrap"]
    diffs = np.array([0.02, 0.03, 0.01])
    exact = np.array([diffs[list(i)].mean() for i in itertools.product(range(3), repeat=3)])
    assert bs["n_units"] == 3 and bs["n_boot"] == 2000 and bs["distinct"] == 10
    assert bs["delta"] == pytest.approx(0.02)
    step = 0.01 / 3                                   # the gap between neighbouring resample means
    assert abs(bs["ci_low"] - np.quantile(exact, 0.025)) <= step + 1e-12
    assert abs(bs["ci_high"] - np.quantile(exact, 0.975)) <= step + 1e-12
    assert bs["ci_low"] > 0 and bs["significant"]     # every pair favours B: no resample reaches 0
    assert main(["groups", "compare", "grp_A", "grp_B"]) == 0
    assert main(["groups", "list"]) == 0
    text = capsys.readouterr().out
    assert "B - A = +2.00 points over 3 pair(s)" in text and "grp_B  3 run(s)" in text
    assert (f"paired bootstrap over the 3 (fold, seed) pairs: 95 % [{100 * bs['ci_low']:+.2f}, "
            f"{100 * bs['ci_high']:+.2f}]") in text and "only 10 distinct resamples" in text
    # the Runs page's group comparison shows both intervals of the same pairs
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app" / "main.py"), default_timeout=120)
    at.run()
    at.switch_page("views/runs.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    md = "\n".join(m.value for m in at.markdown)
    assert (f"{100 * out['mean_diff']:+.2f} points of mIoU, 95 % interval [{100 * out['ci_low']:+.2f}, "
            f"{100 * out['ci_high']:+.2f}]") in md
    assert (f"Paired bootstrap over the same 3 pairs: 95 % interval [{100 * bs['ci_low']:+.2f}, "
            f"{100 * bs['ci_high']:+.2f}]") in md


def test_paired_bootstrap_values_against_numpy():
    """The groups' bootstrap is the metrics package's resampling core: on one chunk of draws it reproduces a plain
    numpy bootstrap of the mean paired difference with the same generator exactly; with a different seed and many
    replicates it agrees with an independent numpy bootstrap within Monte-Carlo error."""
    import numpy as np

    from mapsage.metrics import paired_bootstrap_values

    rng = np.random.default_rng(3)
    a = rng.uniform(0.4, 0.6, 15)
    b = a + rng.normal(0.01, 0.02, 15)
    diff = b - a
    got = paired_bootstrap_values(a, b, n=200, seed=7)
    draws = np.random.default_rng(7).integers(0, 15, size=(200, 15))
    ref = diff[draws].mean(1)
    lo, hi = np.quantile(ref, [0.025, 0.975])
    assert got["delta"] == pytest.approx(diff.mean(), abs=1e-12)
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert got["se"] == pytest.approx(ref.std(ddof=1), abs=1e-12)
    assert got["significant"] == bool(lo > 0 or hi < 0)
    big = paired_bootstrap_values(a, b, n=20000, seed=1)
    ind = diff[np.random.default_rng(99).integers(0, 15, size=(20000, 15))].mean(1)
    sd = ind.std()
    assert big["ci_low"] == pytest.approx(np.quantile(ind, 0.025), abs=0.05 * sd)
    assert big["ci_high"] == pytest.approx(np.quantile(ind, 0.975), abs=0.05 * sd)
    # NaN pairs are dropped; unequal lengths are refused
    c = paired_bootstrap_values(np.r_[a, np.nan], np.r_[b, 0.5], n=200, seed=7)
    assert c["n_units"] == 15 and c["ci_low"] == pytest.approx(lo, abs=1e-12)
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap_values(a, b[:3])


def test_launch_group_checks_every_run_then_queues_them(tmp_path, monkeypatch):
    from runners import groups, jobs

    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(tmp_path / "ws"))
    queued = []
    monkeypatch.setattr(jobs, "submit", lambda cfg: queued.append(cfg) or f"run{len(queued)}")
    gid, rids = groups.launch_group(DEMO, ["train.epochs=1"], seeds=2, folds=3)
    assert rids == [f"run{i}" for i in range(1, 7)] and gid.startswith("grp_")
    assert [(c.dataset.split.fold, c.train.seed) for c in queued] == [(0, 42), (0, 43), (1, 42), (1, 43), (2, 42),
                                                                        (2, 43)]
    assert {c.cv.group for c in queued} == {gid} and all(c.dataset.split.folds == 3 for c in queued)
    assert len({c.stage.name for c in queued}) == 6
