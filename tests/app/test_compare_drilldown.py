"""Compare's confusion drill-down under Streamlit's AppTest, on REAL runs (``tests/support/queue.py``): evaluation A
(the demo checkpoint on 3 Dubai validation tiles, raw argmax) against B (the refinement run's CRF masks of the same
tiles). Every figure the page shows is checked against confusion matrices counted here with numpy from the two
runs' mask files and the dataset's labels -- not from the store."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")


@pytest.fixture
def cmp_ws(queue_store, tmp_path, monkeypatch):
    ws = tmp_path / "workspace"
    shutil.copytree(queue_store["workspace"], ws)
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(ws))
    return {**queue_store, "workspace": ws}


def _masks(rid: str, variant: str) -> dict[str, np.ndarray]:
    from PIL import Image

    import store

    a = store.artifacts(rid, kind=["pred", "refined"], variant=variant)
    return {t: np.asarray(Image.open(p)) for t, p in zip(a["tile"], a["abs_path"])}


def _independent(rid_a: str, rid_b: str) -> tuple[dict, list[str]]:
    """Per tile: (confusion of A, confusion of B) counted with numpy from the mask files and the labels."""
    import store
    from mapsage.config import config_from_dict
    from mapsage.data import build_dataset

    run = store.run(rid_a)
    cfg = config_from_dict(run["config"])
    ds = build_dataset(cfg, "val")
    C = cfg.dataset.num_classes
    ma, mb = _masks(rid_a, "raw"), _masks(rid_b, "refine=crf")
    out = {}
    for tile in sorted(set(ma) & set(mb)):
        label = ds.load_mask(ds.index_of(tile)).astype(np.int64)
        valid = label != cfg.dataset.ignore_index
        confs = []
        for pred in (ma[tile], mb[tile]):
            confs.append(np.bincount(label[valid] * C + pred[valid].astype(np.int64),
                                     minlength=C * C).reshape(C, C))
        out[tile] = tuple(confs)
    return out, list(cfg.dataset.classes)


def _app(**query) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.run()
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page("views/compare.py")
    at.run()
    _ok(at)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _cards(at: AppTest) -> list[tuple[str, int, int, int]]:
    out = []
    for c in at.caption:
        m = re.fullmatch(r"\*\*(.+)\*\* · A ([\d,]+) → B ([\d,]+) px \(\*\*([+\-][\d,]+)\*\*\)", str(c.value))
        if m:
            out.append((m.group(1), *(int(x.replace(",", "")) for x in m.group(2, 3, 4))))
    return out


def test_compare_drills_from_a_changed_confusion_cell_to_its_tiles_and_opens_review(cmp_ws):
    rid_a, rid_b = cmp_ws["probs"], cmp_ws["refine"]
    per_tile, names = _independent(rid_a, rid_b)
    assert len(per_tile) == 3
    C = len(names)
    delta = sum(b - a for a, b in per_tile.values())
    off = np.abs(delta)
    np.fill_diagonal(off, 0)
    assert off.max() > 0, "CRF changed no pixel: nothing to drill into"
    t0, p0 = np.unravel_index(int(off.argmax()), off.shape)
    assert any(delta[t, p] < 0 for t in range(C) for p in range(C) if t != p), "a confusion CRF reduced"

    at = _app(runs=f"{rid_a},{rid_b}")
    assert at.multiselect(key=f"compare_eval_{rid_b}").value, "the refinement run's CRF evaluation is compared"
    text = "\n".join(str(c.value) for c in at.caption)
    assert "(`raw`)" in text and "(`refine=crf`)" in text and "3 tile(s) scored by both" in text
    # the default cell: the largest change, as counted here
    assert (at.selectbox(key="cmpdd_true").value, at.selectbox(key="cmpdd_pred").value) == (names[t0], names[p0])
    for t, p in [(t0, p0)] + [(t, p) for t in range(C) for p in range(C)
                              if t != p and (t, p) != (t0, p0) and delta[t, p] < 0][:1]:
        at.selectbox(key="cmpdd_true").set_value(names[t]).run()
        at.selectbox(key="cmpdd_pred").set_value(names[p]).run()
        _ok(at)
        a_tot = sum(int(a[t, p]) for a, _ in per_tile.values())
        b_tot = sum(int(b[t, p]) for _, b in per_tile.values())
        head = "\n".join(str(m.value) for m in at.markdown)
        assert (f"Label **{names[t]}** predicted as **{names[p]}**: A {a_tot:,} px → B {b_tot:,} px "
                f"(**{b_tot - a_tot:+,}**)") in head
        rows = [(tile, int(a[t, p]), int(b[t, p]), int(b[t, p] - a[t, p])) for tile, (a, b) in per_tile.items()]
        rose = sorted([r for r in rows if r[3] > 0], key=lambda r: (-r[3], r[0]))
        dropped = sorted([r for r in rows if r[3] < 0], key=lambda r: (r[3], r[0]))
        # cards: two per row on each side (their order in the page tree is column by column); the table: every
        # tile, most risen first
        assert sorted(_cards(at)) == sorted(rose[:4] + dropped[:4])
        table = next(d.value for d in at.dataframe if "Δ B − A (px)" in d.value.columns)
        want_rows = sorted([r for r in rows if r[1] or r[2]], key=lambda r: (-r[3], r[0]))
        assert [tuple(x) for x in table[["tile", "A (px)", "B (px)", "Δ B − A (px)"]].itertuples(index=False)] \
            == want_rows
        assert len([b for b in at.button if b.key.startswith("cmpdd_B_")]) == len(rose[:4])
        assert len([b for b in at.button if b.key.startswith("cmpdd_A_")]) == len(dropped[:4])
        if t == t0:
            assert rose or dropped
    # the chart carries every cell's change, as counted here
    fig = [c for c in at.get("plotly_chart") if "Confusion change" in c.proto.spec]
    assert fig, "the change matrix is drawn"
    import json

    spec = json.loads(fig[0].proto.spec)
    cells = next(tr for tr in spec["data"] if tr.get("name") == "cells")["customdata"]
    for t, p, d in cells:
        assert d == (0 if t == p else int(delta[t, p])), (t, p)

    # open the tile where the confusion rose most, in Review at that tile with the cell lit
    at.selectbox(key="cmpdd_true").set_value(names[t0]).run()
    at.selectbox(key="cmpdd_pred").set_value(names[p0]).run()
    side = "B" if delta[t0, p0] > 0 else "A"
    at.button(key=f"cmpdd_{side}_0").click().run()
    _ok(at)
    first = _cards_expected_first(per_tile, t0, p0, side)
    q = at.query_params
    assert q["run"] == [rid_b if side == "B" else rid_a] or q["run"] == (rid_b if side == "B" else rid_a)
    got = {k: (v[0] if isinstance(v, list) else v) for k, v in q.items()}
    assert got["tile"] == first and got["true"] == str(t0) and got["pred"] == str(p0)
    assert got["variant"] == ("refine=crf" if side == "B" else "raw")
    frames = at.get("iframe")
    assert len(frames) == 1 and frames[0].proto.alt.startswith(f"Review map of {first}:")
    a, b = per_tile[first]
    lit = int((b if side == "B" else a)[t0, p0])
    text = "\n".join(str(m.value) for m in at.markdown)
    assert (f"Highlighted in magenta: label **{names[t0]} → predicted {names[p0]}** — **{lit:,} px** on this "
            f"tile") in text


def _cards_expected_first(per_tile, t, p, side) -> str:
    rows = [(tile, int(b[t, p] - a[t, p])) for tile, (a, b) in per_tile.items()]
    if side == "B":
        return sorted([r for r in rows if r[1] > 0], key=lambda r: (-r[1], r[0]))[0][0]
    return sorted([r for r in rows if r[1] < 0], key=lambda r: (r[1], r[0]))[0][0]


def test_change_matrix_and_largest_cell():
    import pandas as pd

    from app.widgets.compare_drilldown import change_matrix, largest_change_cell

    ch = pd.DataFrame({"tile": ["a", "b", "a"], "true_id": [0, 0, 2], "pred_id": [1, 1, 0],
                       "delta": [5, -2, -9]})
    m = change_matrix(ch, 3)
    assert m[0, 1] == 3 and m[2, 0] == -9 and m.sum() == -6
    assert largest_change_cell(m) == (2, 0)
    assert largest_change_cell(np.diag([4, 4, 4])) is None
