"""The input of a report: plain data about runs, as the store's report query returns it.

:class:`ReportData` holds one dict per run (the store's run row with ``config`` and ``info`` parsed) and the
DataFrames of their figures. Nothing here reads the store: ``store.report_queries.report_frames(run_ids)`` gathers
the mapping and :meth:`ReportData.from_mapping` takes it, so the renderer can be fed from anywhere (tests, notebooks,
another store).
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from ..errors import UserError
from ..event_records import json_dict

# the columns each frame must have (an empty frame gets them, so every table code path works without rows)
FRAME_COLUMNS: dict[str, list[str]] = {
    "metrics": ["run_id", "seq", "ts", "eval_key", "split", "domain", "variant", "epoch", "miou", "macc", "aacc",
                "mf1", "mbiou", "per_image_miou", "images_per_s", "n_images", "boundary_px", "num_classes",
                "excluded_classes", "class_names", "class_iou", "class_biou", "extra_json", "checkpoint", "weights"],
    "class_metrics": ["run_id", "seq", "split", "domain", "variant", "epoch", "class_id", "class_name", "iou", "acc",
                      "precision", "f1", "biou", "excluded"],
    "confusion": ["run_id", "seq", "split", "domain", "variant", "epoch", "num_classes", "class_names", "matrix"],
    "tiles": ["run_id", "seq", "split", "variant", "tile", "domain", "intersect", "union", "label_area",
              "pred_area", "b_intersect", "b_union"],
    "ab_rows": ["run_id", "seq", "ts", "ab_kind", "variant", "baseline", "split", "gain", "criterion", "threshold",
                "decision", "images_per_s", "wall_s", "miou", "mbiou", "baseline_miou", "baseline_mbiou",
                "summary_json", "baseline_summary_json", "details_json"],
    "scalars": ["run_id", "seq", "ts", "epoch", "step", "split", "name", "value"],
    "artifacts": ["run_id", "seq", "ts", "kind", "path", "tile", "variant", "meta_json", "abs_path"],
    "verdicts": ["verdict_id", "run_id", "tile", "variant", "baseline", "verdict", "comment", "reviewer", "ts"],
    "health": ["run_id", "seq", "ts", "check_name", "status", "verdict", "evidence_json", "picture"],
}


def _frame(value: Any, name: str) -> pd.DataFrame:
    cols = FRAME_COLUMNS[name]
    if value is None:
        return pd.DataFrame(columns=cols)
    if not isinstance(value, pd.DataFrame):
        value = pd.DataFrame(value)
    df = value.copy()
    for c in cols:
        if c not in df.columns:
            df[c] = None
    return df.reset_index(drop=True)


def is_missing(v: Any) -> bool:
    """None, NaN, NaT or pandas NA (a scalar); lists and arrays are never 'missing'."""
    if v is None:
        return True
    if isinstance(v, (list, tuple, dict, np.ndarray)):
        return False
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def num(v: Any) -> Optional[float]:
    """A finite float or None."""
    if is_missing(v) or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


CLASSIFICATION_TASK = "classification"


def is_classification_eval(extra: Any) -> bool:
    """An evaluation of an image classifier: its stored ``task`` (``mapsage.metrics.classification``), or a top-1
    figure and no mIoU of its own (events written before ``task`` was)."""
    d = json_dict(extra)
    return d.get("task") == CLASSIFICATION_TASK or ("top1" in d and "miou" not in d)


@dataclass
class ReportData:
    """Runs and their stored figures. ``runs`` keeps the caller's order: the first run is the reference of the
    cross-run comparisons."""

    runs: list[dict]
    metrics: pd.DataFrame = field(default_factory=lambda: _frame(None, "metrics"))
    class_metrics: pd.DataFrame = field(default_factory=lambda: _frame(None, "class_metrics"))
    confusion: pd.DataFrame = field(default_factory=lambda: _frame(None, "confusion"))
    tiles: pd.DataFrame = field(default_factory=lambda: _frame(None, "tiles"))
    ab_rows: pd.DataFrame = field(default_factory=lambda: _frame(None, "ab_rows"))
    scalars: pd.DataFrame = field(default_factory=lambda: _frame(None, "scalars"))
    artifacts: pd.DataFrame = field(default_factory=lambda: _frame(None, "artifacts"))
    verdicts: pd.DataFrame = field(default_factory=lambda: _frame(None, "verdicts"))
    health: pd.DataFrame = field(default_factory=lambda: _frame(None, "health"))
    reliability: dict = field(default_factory=dict)   # run id -> reliability card {section: payload}
    title: Optional[str] = None
    generated_at: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc))
    generator_commit: Optional[str] = None
    n_boot: int = 2000                  # paired-bootstrap resamples
    seed: int = 0
    alpha: float = 0.05                 # 1 - alpha confidence intervals
    thumb_tiles: int = 4                # tiles shown per A/B variant (the ones that changed most)
    thumb_px: int = 240                 # longest side of a thumbnail

    def __post_init__(self):
        if not self.runs:
            raise UserError("a report needs at least one run")
        seen = set()
        runs = []
        for r in self.runs:
            if not isinstance(r, Mapping) or not r.get("run_id"):
                raise UserError(f"report runs must be mappings with a run_id, got {r!r:.80}")
            if r["run_id"] in seen:
                continue
            seen.add(r["run_id"])
            runs.append(dict(r))
        self.runs = runs
        for name in FRAME_COLUMNS:
            setattr(self, name, _frame(getattr(self, name), name))
        if self.n_boot < 1:
            raise UserError(f"n_boot must be at least 1 (bootstrap resamples), got {self.n_boot}")
        if not 0 < self.alpha < 1:
            raise UserError(f"alpha must be between 0 and 1, got {self.alpha}")

    @classmethod
    def from_mapping(cls, frames: Mapping[str, Any], **options: Any) -> "ReportData":
        """From ``store.report_queries.report_frames(...)`` (unknown keys are ignored); ``options`` set the
        other fields (title, n_boot, seed, alpha, thumb_tiles, thumb_px, generator_commit, generated_at)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in frames.items() if k in names}
        kw.update(options)
        return cls(**kw)

    # ------------------------------------------------------------------------------------------------------
    @property
    def run_ids(self) -> list[str]:
        return [r["run_id"] for r in self.runs]

    def run(self, run_id: str) -> dict:
        for r in self.runs:
            if r["run_id"] == run_id:
                return r
        return {"run_id": run_id}

    def labels(self) -> dict[str, str]:
        """A unique display label per run: its name (or id), with the id's tail added where names repeat."""
        out: dict[str, str] = {}
        used: set[str] = set()
        for r in self.runs:
            base = str(r.get("name") or r["run_id"])
            label = base
            if label in used:
                label = f"{base} [{str(r['run_id'])[-6:]}]"
            i = 2
            while label in used:
                label = f"{base} [{i}]"
                i += 1
            used.add(label)
            out[r["run_id"]] = label
        return out

    def classification_run_ids(self) -> list[str]:
        """The runs (in report order) whose stored evaluations are image classification; a run without any
        evaluation counts when its resolved config says ``task: classification``."""
        flags: dict[str, bool] = {}
        for rid, x in zip(self.metrics["run_id"], self.metrics["extra_json"]):
            flags[rid] = flags.get(rid, True) and is_classification_eval(x)
        return [rid for rid in self.run_ids
                if flags.get(rid, self.config(rid).get("task") == CLASSIFICATION_TASK)]

    def config(self, run_id: str) -> dict:
        cfg = self.run(run_id).get("config")
        return cfg if isinstance(cfg, dict) else {}

    def class_names(self, run_id: str) -> list[str]:
        r = self.run(run_id)
        names = r.get("class_names")
        if names is not None and len(names):
            return [str(n) for n in names]
        return [str(n) for n in ((self.config(run_id).get("dataset") or {}).get("classes") or [])]

    def palette(self, run_id: str) -> list[str]:
        return [str(c) for c in ((self.config(run_id).get("dataset") or {}).get("palette") or [])]
