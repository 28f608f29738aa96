"""What a comparison report needs from the store, as plain data (dicts and DataFrames).

:func:`report_frames` gathers, for a list of run ids, every stored figure the report shows: the runs' rows (config
and info parsed), all evaluation summaries (curves over epochs included), the per-class rows and confusion matrices
of the *latest* evaluation per (run, split, domain, variant) -- the evaluation whose per-tile areas the store keeps,
so the report's tables and its bootstrap intervals describe the same numbers --, the latest per-tile areas, the A/B
decision rows, training scalars, prediction artifacts, review verdicts and health rows.

The report renderer (:mod:`mapsage.report`) takes this mapping as is (``ReportData.from_mapping``); the store never
imports it.
"""
from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from .db import StoreError
from .groups import run_links
from .queries import (
    _ids,
    _pylist,
    _query,
    _sql_where,
    _where,
    _with_external,
    ab_rows,
    artifacts,
    health,
    metrics,
    run,
    scalars,
    tiles,
    verdicts,
)

# artifact kinds a report can draw thumbnails from
THUMBNAIL_KINDS = ("image", "label", "pred", "pred_color", "refined")
# artifact kinds of image-classification runs the report reads (calibration.json, the error gallery's index)
CLASSIFICATION_KINDS = ("calibration", "cls_errors")

# the latest evaluation per (run, split, domain, variant): its seq
_LATEST_EVAL = ("SELECT run_id, split, domain, variant, max(seq) AS seq FROM evaluations{where} "
                "GROUP BY run_id, split, domain, variant")


class UnknownRuns(StoreError):
    """Run ids the store does not know."""


def latest_class_metrics(run_ids: str | Sequence[str]) -> pd.DataFrame:
    """Per-class rows (class_id, class_name, iou, acc, precision, f1, biou, excluded) of the latest evaluation per
    (run, split, domain, variant), with that evaluation's split, domain, variant and epoch."""
    clauses, params = [], []
    _where(clauses, params, "run_id", _ids(run_ids))
    sub = _LATEST_EVAL.format(where=_sql_where(clauses))
    sql = (f"SELECT c.* FROM class_metrics c JOIN ({sub}) l ON c.run_id = l.run_id AND c.seq = l.seq "
           f"ORDER BY c.run_id, c.split, c.domain, c.variant, c.class_id")
    return _query(sql, params)


def latest_confusion(run_ids: str | Sequence[str]) -> pd.DataFrame:
    """Confusion matrices (rows = label, columns = prediction; ``matrix`` as lists of lists) of the latest
    evaluation per (run, split, domain, variant)."""
    clauses, params = [], []
    _where(clauses, params, "run_id", _ids(run_ids))
    sub = _LATEST_EVAL.format(where=_sql_where(clauses))
    sql = (f"SELECT c.* FROM confusion c JOIN ({sub}) l ON c.run_id = l.run_id AND c.seq = l.seq "
           f"ORDER BY c.run_id, c.split, c.domain, c.variant")
    df = _query(sql, params)
    df["matrix"] = df["matrix"].map(lambda m: _pylist(m, _pylist))
    df["class_names"] = df["class_names"].map(lambda v: _pylist(v, str))
    return df


def _curve_and_speed_scalars(ids: list[str]) -> pd.DataFrame:
    """Per-epoch training scalars (split ``train_epoch``) and the inference-speed scalars of evaluations (split
    ``<split>:<variant>``, names ``images_per_s`` / ``mpix_per_s``)."""
    epochs = scalars(ids, split=["train_epoch"])
    speed = scalars(ids, names=["images_per_s", "mpix_per_s"])
    speed = speed[speed["split"].fillna("").str.contains(":", regex=False)]
    frames = [f for f in (epochs, speed) if not f.empty]
    if not frames:
        return epochs
    return pd.concat(frames, ignore_index=True).drop_duplicates(["run_id", "seq", "name"]).sort_values(
        ["run_id", "seq", "name"]).reset_index(drop=True)


def known_run_ids(run_ids: Sequence[str]) -> list[str]:
    """The ids of ``run_ids`` that have a row in the store."""
    clauses, params = [], []
    _where(clauses, params, "run_id", list(run_ids))
    df = _query(f"SELECT run_id FROM runs{_sql_where(clauses)}", params)
    return [str(r) for r in df["run_id"]]


def report_frames(run_ids: Sequence[str]) -> dict[str, Any]:
    """Everything a comparison report of ``run_ids`` shows, in the order given (the first run is the reference).

    Returns ``{"runs": [run dicts], "metrics", "class_metrics", "confusion", "tiles", "ab_rows", "scalars",
    "artifacts", "verdicts", "health": DataFrames}``. Raises :class:`UnknownRuns` naming ids the store does not
    know (ingest first: ``mapsage runs ingest``)."""
    ids = list(dict.fromkeys(str(r) for r in run_ids))
    if not ids:
        raise StoreError("a report needs at least one run id (see `mapsage runs list`)")
    known = set(known_run_ids(ids))
    missing = [r for r in ids if r not in known]
    if missing:
        raise UnknownRuns(f"unknown run id(s) {missing}: the store has no such run; check `mapsage runs list`, or "
                          f"ingest new run folders first with `mapsage runs ingest`")
    runs = [run(r) for r in ids]
    _attach_external([r for r in runs if r is not None])
    _attach_groups([r for r in runs if r is not None])
    return {
        "runs": [r for r in runs if r is not None],
        "metrics": metrics(ids),
        "class_metrics": latest_class_metrics(ids),
        "confusion": latest_confusion(ids),
        "tiles": tiles(ids, latest=True),
        "ab_rows": ab_rows(ids),
        "scalars": _curve_and_speed_scalars(ids),
        "artifacts": artifacts(ids, kind=list(THUMBNAIL_KINDS + CLASSIFICATION_KINDS)),
        "verdicts": verdicts(ids),
        "health": health(ids),
        "reliability": reliability_cards(ids),
    }


def reliability_cards(run_ids: Sequence[str]) -> dict[str, dict]:
    """Run id -> its reliability card ``{section: payload}``: the run's own ``reliability`` events when it is a
    reliability run, else those of its newest succeeded reliability child (``parent_run``)."""
    import json

    out: dict[str, dict] = {}
    ids = list(run_ids)
    if not ids:
        return out
    marks = ", ".join("?" * len(ids))
    src = _query(f"SELECT run_id AS rid, run_id AS src FROM runs WHERE kind = 'reliability' AND run_id IN ({marks}) "
                 f"UNION ALL SELECT parent_run AS rid, arg_max(run_id, created_at) AS src FROM runs WHERE kind = "
                 f"'reliability' AND status = 'succeeded' AND parent_run IN ({marks}) GROUP BY parent_run",
                 ids + ids)
    for rid, s in zip(src["rid"], src["src"]):
        if rid in out:
            continue
        ev = _query("SELECT payload FROM events WHERE run_id = ? AND type = 'reliability' ORDER BY seq", [s])
        card = {}
        for p in ev["payload"]:
            d = json.loads(p)
            card[d.get("section")] = d
        if card:
            out[rid] = card
    return out


def _attach_external(runs: list[dict]) -> None:
    """Each run's latest external (benchmark) mIoU, the test split's first, and its gap to the best val mIoU."""
    import pandas as pd


    if not runs:
        return
    ext = _with_external(pd.DataFrame({"run_id": [r["run_id"] for r in runs]})).set_index("run_id")
    for r in runs:
        row = ext.loc[r["run_id"]]
        for c in ("external_split", "external_miou", "external_source", "val_test_gap"):
            v = row[c]
            r[c] = None if v is None or (isinstance(v, float) and v != v) else v


def _attach_groups(runs: list[dict]) -> None:
    """Each run's repeat/fold group facts (``store.groups.run_links``: cv_group, cv_repeat, cv_fold, cv_folds,
    seed), so a report can aggregate the runs of one group."""

    if not runs:
        return
    links = run_links([r["run_id"] for r in runs]).set_index("run_id")
    for r in runs:
        if r["run_id"] not in links.index:
            continue
        row = links.loc[r["run_id"]]
        for c in ("cv_group", "cv_repeat", "cv_fold", "cv_folds", "seed"):
            v = row[c]
            r[c] = None if v is None or pd.isna(v) else (v if c == "cv_group" else int(v))


__all__ = ["CLASSIFICATION_KINDS", "THUMBNAIL_KINDS", "UnknownRuns", "known_run_ids", "latest_class_metrics",
           "latest_confusion", "report_frames"]
