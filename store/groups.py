"""Experiment groups read from the runs' resolved configs: repeats and folds (``cv.group``), sweeps
(``sweep.id``), and the budget facts runs report (parameters, FLOPs at the crop size).

``run_links(run_ids=None)``: per run ``cv_group``, ``cv_repeat``, ``cv_fold``, ``cv_folds``, ``seed``,
``sweep_id``, ``sweep_trial``, ``model_params``, ``flops``.
``group_board(split="val", metric="miou")``: one row per repeat/fold group -- runs, mean, sd, the 95 % interval
of the mean (Student t) -- ranked by the mean; each run's figure is its headline evaluation (``store.ranking``).
``paired_groups(a, b)``: two groups paired on (fold, seed), with the Student-t and the paired bootstrap interval of
the differences."""
from __future__ import annotations

import math
import re
from typing import Sequence

import pandas as pd

from mapsage.errors import UserError

from .db import read_connection
from .ranked import ranking
from .schema import ensure_schema

LINK_COLUMNS = ["run_id", "cv_group", "cv_repeat", "cv_fold", "cv_folds", "seed", "sweep_id", "sweep_trial",
                "model_params", "flops"]


def run_links(run_ids: Sequence[str] | None = None) -> pd.DataFrame:
    ensure_schema()
    where, params = "", []
    if run_ids is not None:
        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        if not ids:
            return pd.DataFrame(columns=LINK_COLUMNS)
        where = f" WHERE run_id IN ({', '.join('?' * len(ids))})"
        params = ids
    sql = f"""
        SELECT run_id,
               json_extract_string(config_json, '$.cv.group') AS cv_group,
               TRY_CAST(json_extract_string(config_json, '$.cv.repeat') AS INTEGER) AS cv_repeat,
               CASE WHEN coalesce(TRY_CAST(json_extract_string(config_json, '$.dataset.split.folds') AS INTEGER), 0)
                         > 1 THEN TRY_CAST(json_extract_string(config_json, '$.dataset.split.fold') AS INTEGER)
               END AS cv_fold,
               TRY_CAST(json_extract_string(config_json, '$.dataset.split.folds') AS INTEGER) AS cv_folds,
               TRY_CAST(json_extract_string(config_json, '$.train.seed') AS INTEGER) AS seed,
               json_extract_string(config_json, '$.sweep.id') AS sweep_id,
               TRY_CAST(json_extract_string(config_json, '$.sweep.trial') AS INTEGER) AS sweep_trial,
               TRY_CAST(json_extract_string(info_json, '$.model_params') AS BIGINT) AS model_params,
               TRY_CAST(json_extract_string(info_json, '$.flops') AS DOUBLE) AS flops
        FROM runs{where}
    """
    with read_connection() as con:
        return con.execute(sql, params).df()


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sd, low, high): the Student-t interval of the mean (sd and interval NaN for one value)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(vals)
    if n == 0:
        return (math.nan,) * 4
    mean = sum(vals) / n
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def group_board(split: str = "val", metric: str = "miou") -> pd.DataFrame:
    """One row per repeat/fold group: ``group``, ``name``, ``runs``, ``seeds``, ``folds``, ``mean``, ``sd``,
    ``ci_low``, ``ci_high``, ``min``, ``max``, ``run_ids``, ``pending`` (runs of the group without a figure yet);
    ranked by the mean (``rank``)."""

    links = run_links()
    links = links[links["cv_group"].notna()]
    cols = ["rank", "group", "name", "runs", "seeds", "folds", "mean", "sd", "ci_low", "ci_high", "min", "max",
            "pending", "run_ids"]
    if links.empty:
        return pd.DataFrame(columns=cols)
    board = ranking(split=split, metric=metric, run_ids=list(links["run_id"]))
    vals = dict(zip(board["run_id"], board[metric])) if not board.empty else {}
    with read_connection() as con:
        names = dict(con.execute("SELECT run_id, name FROM runs").fetchall())
    rows = []
    for gid, part in links.groupby("cv_group"):
        v = [vals.get(r) for r in part["run_id"]]
        got = [x for x in v if x is not None and not pd.isna(x)]
        mean, sd, lo, hi = t_interval(got)
        first = names.get(part["run_id"].iloc[0]) or ""
        rows.append({"group": gid, "name": re.sub(r"([-_]f\d+)?([-_]s\d+)?$", "", first) or first,
                     "runs": len(got), "seeds": int(part["cv_repeat"].nunique()),
                     "folds": int(part["cv_folds"].max() or 0) if part["cv_fold"].notna().any() else 0,
                     "mean": mean, "sd": sd, "ci_low": lo, "ci_high": hi, "min": min(got) if got else math.nan,
                     "max": max(got) if got else math.nan, "pending": len(v) - len(got),
                     "run_ids": ",".join(part["run_id"])})
    df = pd.DataFrame(rows).sort_values(["mean", "group"], ascending=[False, True], na_position="last")
    df.insert(0, "rank", range(1, len(df) + 1))
    return df[cols].reset_index(drop=True)


def paired_groups(group_a: str, group_b: str, split: str = "val", metric: str = "miou", n_boot: int = 2000,
                  seed: int = 0) -> dict:
    """Compare two repeat/fold groups run by run: runs are paired on (fold, seed index); the difference B - A of
    each pair, its mean, sd and Student-t 95 % interval, the paired bootstrap interval over the same pairs
    (``bootstrap``, see :func:`pair_bootstrap`), and how many pairs B won. Pairing removes the fold's and
    seed's own difficulty from the comparison (the folds of both groups must be the same cut: same dataset,
    ``split.seed`` and k)."""


    links = run_links()
    a = links[links["cv_group"] == group_a]
    b = links[links["cv_group"] == group_b]
    for gid, part in ((group_a, a), (group_b, b)):
        if part.empty:
            raise UserError(f"no repeat/fold group {gid!r} in the store (see the Runs page's group board)")
    board = ranking(split=split, metric=metric, run_ids=list(a["run_id"]) + list(b["run_id"]))
    vals = dict(zip(board["run_id"], board[metric])) if not board.empty else {}

    def keyed(part):
        return {(None if pd.isna(f) else int(f), None if pd.isna(r) else int(r)): rid
                for f, r, rid in zip(part["cv_fold"], part["cv_repeat"], part["run_id"])}

    ka, kb = keyed(a), keyed(b)
    fa = set(a["cv_folds"].dropna().astype(int))
    fb = set(b["cv_folds"].dropna().astype(int))
    if fa != fb:
        raise UserError(f"groups {group_a} and {group_b} have different fold counts ({sorted(fa)} vs {sorted(fb)}); "
                        f"pair only groups cut the same way")
    rows = []
    for key in sorted(set(ka) & set(kb), key=lambda k: (k[0] if k[0] is not None else -1, k[1] or 0)):
        va, vb = vals.get(ka[key]), vals.get(kb[key])
        if va is None or vb is None or pd.isna(va) or pd.isna(vb):
            continue
        rows.append({"fold": key[0], "repeat": key[1], "run_a": ka[key], "run_b": kb[key], "a": float(va),
                     "b": float(vb), "diff": float(vb) - float(va)})
    pairs = pd.DataFrame(rows, columns=["fold", "repeat", "run_a", "run_b", "a", "b", "diff"])
    mean, sd, lo, hi = t_interval(pairs["diff"].tolist())
    return {"pairs": pairs, "n": len(pairs), "mean_diff": mean, "sd": sd, "ci_low": lo, "ci_high": hi,
            "b_wins": int((pairs["diff"] > 0).sum()), "unpaired": len(set(ka) ^ set(kb)),
            "significant": bool(len(pairs) > 1 and (lo > 0 or hi < 0)),
            "bootstrap": pair_bootstrap(pairs, n=n_boot, seed=seed)}


def pair_bootstrap(pairs: pd.DataFrame, n: int = 2000, seed: int = 0) -> dict:
    """The paired bootstrap of B - A over the (fold, seed) pairs (``mapsage.metrics.paired_bootstrap_values``, the
    same resampling core as the tile bootstrap): ``delta``, ``ci_low``, ``ci_high`` (95 % percentile interval),
    ``significant``, ``p_value``, ``n_units``, ``n_boot``, ``distinct`` (how many different resamples the pairs
    allow: with few pairs the percentile interval is coarse). Empty for fewer than two pairs."""
    if len(pairs) < 2:
        return {}
    from mapsage.metrics.bootstrap import paired_bootstrap_values

    out = paired_bootstrap_values(pairs["a"], pairs["b"], n=n, seed=seed)
    k = len(pairs)
    out["distinct"] = math.comb(2 * k - 1, k)          # multisets of k pairs drawn from k
    return out
