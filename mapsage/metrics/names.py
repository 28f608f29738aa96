"""The names of the workbench's metrics: one table that the command line, reports and the app read, so a figure
is called the same everywhere (F1 is Dice, and says so; mmseg's mFscore is a different figure)."""
from __future__ import annotations

from ..metric_names import CLASS_METRICS, METRICS, SELECTABLE, metric_label

__all__ = ["METRICS", "CLASS_METRICS", "SELECTABLE", "metric_label"]


def evaluation_warnings(extra) -> list[str]:
    """The warnings a stored evaluation carries (``boundary_warnings`` of its metrics event), from the store's
    ``extra_json`` column (a JSON string or an already parsed mapping; anything else gives none)."""
    import json

    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            return []
    if not isinstance(extra, dict):
        return []
    return [str(w) for w in (extra.get("boundary_warnings") or [])]
