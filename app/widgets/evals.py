"""Choosing one evaluation of a run (split, domain, variant, epoch) and the rows that belong to it."""
from __future__ import annotations

from typing import Optional

import pandas as pd


def label(row: pd.Series) -> str:
    epoch = row.get("epoch")
    when = "final" if pd.isna(epoch) else f"epoch {int(epoch) + 1}"
    return f"{row['split']} · {row['variant']} · {when}"


def overall(metrics: pd.DataFrame) -> pd.DataFrame:
    """The domain='all' evaluations (one per split/variant/epoch), newest last."""
    if metrics is None or metrics.empty:
        return pd.DataFrame()
    df = metrics[metrics["domain"].fillna("all") == "all"]
    return df.sort_values("seq")


def best_index(overall_df: pd.DataFrame, split: str = "val", metric: str = "miou") -> Optional[int]:
    """Position (in ``overall_df``) of the best evaluation on ``split`` by ``metric`` (ties: the latest); falls
    back to the latest evaluation of any split."""
    if overall_df is None or overall_df.empty:
        return None
    df = overall_df.reset_index(drop=True)
    on = df[(df["split"] == split) & df[metric].notna()]
    if on.empty:
        return len(df) - 1
    best = on[metric].max()
    return int(on[on[metric] == best].index.max())


def domain_rows(metrics: pd.DataFrame, chosen: pd.Series) -> pd.DataFrame:
    """The same evaluation's per-domain rows (same split, variant and epoch; every domain incl. 'all')."""
    if metrics is None or metrics.empty:
        return pd.DataFrame()
    same = (metrics["split"] == chosen["split"]) & (metrics["variant"] == chosen["variant"])
    if pd.isna(chosen["epoch"]):
        same &= metrics["epoch"].isna()
    else:
        same &= metrics["epoch"] == chosen["epoch"]
    df = metrics[same].copy()
    df["domain"] = df["domain"].fillna("all")
    # the latest record per domain (a resumed run may repeat an epoch)
    return df.sort_values("seq").groupby("domain", as_index=False).last()


def class_rows_of(per_class: pd.DataFrame, seq: int) -> pd.DataFrame:
    if per_class is None or per_class.empty:
        return pd.DataFrame()
    return per_class[per_class["seq"] == seq].sort_values("class_id")


def epoch_arg(chosen: pd.Series):
    """The store's ``epoch`` argument for this evaluation (an int, or "final")."""
    return "final" if pd.isna(chosen["epoch"]) else int(chosen["epoch"])
