"""Evaluations, not runs: the one ranking rule of the workbench.

Every ``evaluations`` row carries its identity (run, checkpoint file / epoch / content hash / raw or EMA weights,
variant, dataset, split, tile set: count and hash of the sorted tile ids, the split's size, device, time). This
module gives each evaluation its **role** in its run and its **completeness**, and ranks comparable evaluations:

role
    ``result``    an evaluation of a run that does not decide between variants (training, distillation, a final
                  evaluation, any stage kind this module does not know)
    ``adopted``   the variant a deciding run (TTA, post-processing, refinement, ensemble A/B) adopted
    ``lineage``   the deciding run's baseline: its parent's checkpoint re-scored (``tta=off``, ``refine=raw``, the
                  best ensemble member, ``raw`` before post-processing) -- never the run's own result
    ``rejected``  a variant the run measured and did not adopt
    ``pending``   a deciding run that has not decided yet (its decision rows are not written)
completeness
    ``full`` (all tiles of the split), ``subset`` (fewer), ``unknown`` (an old event without the split's size)
in progress
    the run is queued or running

Rankable: ``result`` or ``adopted``, not a subset, not in progress -- the last two can be asked for. Ranks are
within comparable groups: same dataset, split and tile set. Runs, Home and Plan rank with :func:`ranking`; the
run rows' ``best_*`` figures (Run detail, the CLI, reports, live cards) come from :func:`best_sql` -- a run's own
result or adopted variant only (a subset is kept there, marked by ``best_role``); both read :data:`ROLES_SQL`.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from mapsage.registries import DECIDING_KINDS

ELIGIBLE = ("result", "adopted")
ACTIVE = ("queued", "running")
# DECIDING_KINDS (mapsage/registries.py): stage kinds that decide between variants, pending until their decision
# rows exist
_DECIDING_SQL = ", ".join(f"'{k}'" for k in DECIDING_KINDS)

ROLES_SQL = f"""
WITH dec AS (
    SELECT run_id, arg_max(variant, coalesce(gain, 0)) FILTER (WHERE decision = 'keep') AS adopted,
           list(DISTINCT baseline) AS baselines
    FROM ab_rows WHERE coalesce(ab_kind, '') <> 'distill' GROUP BY run_id
)
SELECT e.*, r.status AS run_status, r.kind AS run_kind, r.name AS run_name, r.dataset AS run_dataset,
       r.parent_run AS parent_run,
       CASE WHEN d.run_id IS NOT NULL THEN
                CASE WHEN e.variant = d.adopted THEN 'adopted'
                     WHEN list_contains(d.baselines, e.variant) THEN 'lineage'
                     ELSE 'rejected' END
            WHEN r.kind IN ({_DECIDING_SQL})
                 OR (r.kind = 'evaluate' AND coalesce(r.post, 'off') <> 'off') THEN 'pending'
            ELSE 'result' END AS role,
       CASE WHEN e.split_size IS NULL THEN 'unknown'
            WHEN coalesce(e.tile_count, e.n_images) < e.split_size THEN 'subset' ELSE 'full' END AS completeness,
       coalesce(r.status IN ('queued', 'running'), false) AS in_progress
FROM evaluations e JOIN runs r ON r.run_id = e.run_id LEFT JOIN dec d ON d.run_id = e.run_id
"""

# per run: its headline evaluation on its own split (all domains pooled): the best rankable one by mIoU (in
# progress counts here: a running run shows its best so far on its own row; ties: the earlier), else the best of
# the others, marked
_HEADLINE = f"""
SELECT run_id,
       arg_max(seq, {{'ok': role IN ('result', 'adopted') AND completeness <> 'subset',
                      'own': role IN ('result', 'adopted'), 'm': coalesce(miou, -1), 's': -seq}}) AS seq
FROM ({ROLES_SQL}) x
WHERE domain = 'all' AND split = coalesce((SELECT split FROM runs WHERE runs.run_id = x.run_id), 'val')
  AND run_id IN (SELECT run_id FROM {{scope}})
GROUP BY run_id
"""


def tile_set_sql(scope: str = "touched_runs") -> str:
    """Fill ``tile_count``/``tile_hash`` of evaluations written without them (older events): from the first
    ``tiles`` record of the same run, split and variant written after the evaluation."""
    return f"""UPDATE evaluations SET tile_count = t.n, tile_hash = t.h FROM (
             SELECT e.run_id, e.seq, count(*) AS n,
                    substr(sha256(string_agg(t.tile, chr(10) ORDER BY t.tile)), 1, 16) AS h
             FROM evaluations e
             JOIN (SELECT e2.run_id, e2.seq, min(t2.seq) AS tseq FROM evaluations e2 JOIN tiles t2
                     ON t2.run_id = e2.run_id AND t2.split = e2.split AND t2.variant = e2.variant AND t2.seq > e2.seq
                   WHERE e2.tile_hash IS NULL AND e2.domain = 'all' AND e2.run_id IN (SELECT run_id FROM {scope})
                   GROUP BY e2.run_id, e2.seq) m
               ON m.run_id = e.run_id AND m.seq = e.seq
             JOIN tiles t ON t.run_id = m.run_id AND t.seq = m.tseq
             GROUP BY e.run_id, e.seq) t
           WHERE evaluations.run_id = t.run_id AND evaluations.seq = t.seq"""


def best_sql(scope: str = "touched_runs") -> str:
    """The UPDATE that sets ``runs.best_*`` from each run's headline evaluation (``scope``: a table of run ids)."""
    return f"""
UPDATE runs SET best_val_miou = CASE WHEN h.own THEN h.miou END, best_val_mbiou = CASE WHEN h.own THEN h.mbiou END,
                best_epoch = h.epoch, best_variant = h.variant, best_seq = h.seq,
                best_role = CASE WHEN h.role IN ('result', 'adopted') AND h.completeness = 'subset' THEN 'subset'
                                 ELSE h.role END,
                last_val_miou = h.last_miou, n_evaluations = h.n
FROM (SELECT x.run_id, x.seq, x.miou, x.mbiou, x.epoch, x.variant, x.role, x.completeness,
             x.role IN ('result', 'adopted') AS own, c.last_miou, c.n
      FROM ({ROLES_SQL}) x
      JOIN ({_HEADLINE.replace('{scope}', scope)}) b ON b.run_id = x.run_id AND b.seq = x.seq
      JOIN (SELECT e.run_id, arg_max(e.miou, e.seq) AS last_miou, count(*) AS n
            FROM evaluations e JOIN runs r ON r.run_id = e.run_id
            WHERE e.domain = 'all' AND e.split = coalesce(r.split, 'val') GROUP BY e.run_id) c
        ON c.run_id = x.run_id) h
WHERE runs.run_id = h.run_id"""


# ---------------------------------------------------------------------------------------------------------------
# the short form of an identity


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(f) else f


def tiles_text(row: Mapping[str, Any]) -> str:
    n = _num(row.get("tile_count"))
    n = _num(row.get("n_images")) if n is None else n
    size = _num(row.get("split_size"))
    if n is None:
        return "? tiles"
    if size is None:
        return f"{int(n)} tiles"
    return f"{int(n)}/{int(size)} tiles"


def weights_text(row: Mapping[str, Any]) -> str:
    """``EMA ep 2``, ``raw ep 5 of <run>``, ``mix`` (an ensemble)."""
    w = row.get("weights")
    w = w if isinstance(w, str) and w else (row.get("variant") if row.get("variant") in ("raw", "ema") else None)
    label = {"ema": "EMA", "raw": "raw", "mix": "mix"}.get(w or "", w or "weights ?")
    ep = _num(row.get("ckpt_epoch"))
    if ep is None:
        ep = _num(row.get("epoch"))
    text = f"{label} ep {int(ep) + 1}" if ep is not None else label
    ck_run, run = row.get("ckpt_run"), row.get("run_id")
    if isinstance(ck_run, str) and ck_run and ck_run != run:
        text += f" of {ck_run}"
    return text


def variant_text(row: Mapping[str, Any]) -> str:
    v = row.get("variant")
    if not isinstance(v, str) or v in ("raw", "ema"):
        return "tta=off" if v in ("raw", "ema") else "?"
    return v


def short_identity(row: Mapping[str, Any], with_role: bool = True) -> str:
    """``val · 18/18 tiles · EMA ep 2 · tta=off`` (+ `` · subset``, `` · in progress``, `` · lineage`` ...)."""
    parts = [str(row.get("split") or "?"), tiles_text(row), weights_text(row), variant_text(row)]
    dom = row.get("domain")
    if isinstance(dom, str) and dom not in ("", "all"):
        parts.insert(1, dom)
    if row.get("completeness") == "subset":
        parts.append("subset")
    if bool(row.get("in_progress")):
        parts.append("in progress")
    role = row.get("role")
    if with_role and isinstance(role, str) and role not in ELIGIBLE:
        parts.append({"lineage": "lineage (parent's checkpoint re-scored)", "pending": "decision pending",
                      "rejected": "not adopted"}.get(role, role))
    return " · ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# reads


def evaluations_with_roles(run_id: str | Sequence[str] | None = None, split: str | None = None,
                           domain: str | None = "all") -> pd.DataFrame:
    """Evaluation rows (summary and identity; no per-class vectors) with ``role``, ``completeness``,
    ``in_progress`` and ``identity`` (the short form), oldest first."""
    from .queries import JSON_METRICS, _ids, _query, _sql_where, _where

    clauses, params = [], []
    _where(clauses, params, "run_id", _ids(run_id))
    _where(clauses, params, "split", split)
    _where(clauses, params, "domain", domain)
    cols = ("run_id, seq, ts, split, domain, variant, epoch, miou, macc, aacc, mf1, mbiou, images_per_s, n_images, "
            "boundary_px, dataset, tile_count, tile_hash, split_size, checkpoint, ckpt_run, ckpt_epoch, ckpt_hash, "
            "weights, device, params, run_status, run_kind, run_name, run_dataset, parent_run, role, completeness, "
            "in_progress, "
            # figures kept in extra_json (mmseg mFscore, the face-parsing foreground mean F-score)
            + ", ".join(f"TRY_CAST(json_extract_string(extra_json, '$.{m}') AS DOUBLE) AS {m}" for m in JSON_METRICS))
    df = _query(f"SELECT {cols} FROM ({ROLES_SQL}) x{_sql_where(clauses)} ORDER BY run_id, seq", params)
    df["identity"] = [short_identity(r) for r in df.to_dict("records")] if not df.empty else []
    if "ts" in df.columns:
        df["time"] = pd.to_datetime(df["ts"], unit="s", utc=True)
    return df


def ranking(split: str = "val", metric: str = "miou", include_subsets: bool = False,
            include_in_progress: bool = False, run_ids: Sequence[str] | None = None,
            per_class: bool = False) -> pd.DataFrame:
    """One row per run with an evaluation on ``split``: its headline evaluation -- the best rankable one by
    ``metric`` (``result``/``adopted``; subsets and runs in progress only when asked), else its best other one,
    marked by ``role`` -- with ``rank`` (1 = best) within its comparable group (dataset, split, tile set) and
    ``rankable``. Figures of a row all come from that one evaluation (``per_class``: its ``iou_<class>``
    columns too)."""
    from .queries import JSON_METRICS, METRICS

    if metric not in METRICS + JSON_METRICS:
        raise ValueError(f"metric must be one of {METRICS + JSON_METRICS}, got {metric!r}")
    ev = evaluations_with_roles(run_ids, split=split, domain="all")
    if ev.empty:
        return ev.assign(rank=pd.Series(dtype=float), rankable=pd.Series(dtype=bool), group=pd.Series(dtype=str))
    ok = ev["role"].isin(ELIGIBLE)
    if not include_subsets:
        ok &= ev["completeness"] != "subset"
    if not include_in_progress:
        ok &= ~ev["in_progress"].astype(bool)
    ev = ev.assign(rankable=ok, _m=ev[metric].fillna(-1.0))
    # ties go to the earlier evaluation (as runs.best_*)
    ev["_own"] = ev["role"].isin(ELIGIBLE)
    ev = ev.sort_values(["run_id", "rankable", "_own", "_m", "seq"], ascending=[True, False, False, False, True],
                        kind="stable")
    head = ev.groupby("run_id", sort=False).head(1).copy()
    head["group"] = (head["dataset"].fillna(head["run_dataset"]).fillna("?") + " · " + head["split"] + " · "
                     + head["tile_hash"].fillna(head["tile_count"].fillna(head["n_images"]).astype(str)))
    head = head.sort_values(["rankable", "_m", "run_id"], ascending=[False, False, True], kind="stable")
    head["rank"] = np.nan
    r = head["rankable"]
    head.loc[r, "rank"] = head[r].groupby("group").cumcount().to_numpy() + 1
    head = head.drop(columns=["_m", "_own"]).reset_index(drop=True)
    if per_class:
        head = _with_class_iou(head)
    return head


def _with_class_iou(head: pd.DataFrame) -> pd.DataFrame:
    from .queries import _query

    keys = list(zip(head["run_id"], head["seq"].astype(int)))
    cond = " OR ".join("(run_id = ? AND seq = ?)" for _ in keys)
    rows = _query(f"SELECT run_id, seq, class_names, class_iou FROM evaluations WHERE {cond}",
                  [x for k in keys for x in k])
    cols: dict[str, np.ndarray] = {}
    index = {(r, int(q)): i for i, (r, q) in enumerate(keys)}
    for rec in rows.itertuples(index=False):
        i = index.get((rec.run_id, int(rec.seq)))
        names, ious = rec.class_names, rec.class_iou
        if i is None or names is None or ious is None or names is pd.NA or ious is pd.NA:
            continue            # an evaluation recorded without per-class rows
        for name, v in zip(list(names), list(ious)):
            col = cols.setdefault(f"iou_{name}", np.full(len(head), np.nan))
            col[i] = np.nan if v is None else float(v)
    for name, values in cols.items():
        head[name] = values
    return head


def headline(run_id: str, seq: int | None = None) -> dict | None:
    """One evaluation of a run as a dict (with ``identity``): ``seq``, else the run's headline (``runs.best_seq``)."""
    from .queries import _query

    if seq is None:
        got = _query("SELECT best_seq FROM runs WHERE run_id = ?", [run_id])
        if got.empty or pd.isna(got.iloc[0, 0]):
            return None
        seq = int(got.iloc[0, 0])
    ev = evaluations_with_roles(run_id, domain=None)
    row = ev[ev["seq"] == int(seq)]
    return row.iloc[0].to_dict() if not row.empty else None


def tiles_of(run_id: str, seq: int) -> pd.DataFrame:
    """The per-tile rows of ONE evaluation (its ``tiles`` record: the first of the same run, split and variant
    written after it), in the frame :func:`store.tiles` returns (feeds ``paired_bootstrap`` directly)."""
    from .queries import _TILE_ARRAYS, _pylist, _query

    sql = """SELECT t.* FROM tiles t JOIN (
               SELECT min(t2.seq) AS tseq FROM evaluations e JOIN tiles t2
                 ON t2.run_id = e.run_id AND t2.split = e.split AND t2.variant = e.variant AND t2.seq > e.seq
               WHERE e.run_id = ? AND e.seq = ?) m ON t.seq = m.tseq
             WHERE t.run_id = ? ORDER BY t.tile"""
    df = _query(sql, [run_id, int(seq), run_id]).rename(columns={"union_area": "union"})
    for c in _TILE_ARRAYS:
        df[c] = df[c].map(_pylist)
    return df
