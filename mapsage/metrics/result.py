"""``MetricResult``: the numbers of one evaluation, computed from dataset-level areas.

Every ratio is computed once from int64 areas summed over the whole dataset (mmsegmentation's definition):

* ``iou[k] = I / (L + P - I)``; NaN when class ``k`` is absent from both prediction and label (union 0): such a
  class is left out of every mean and listed in ``excluded_classes``. A class present in one of them but never
  matched scores 0.
* ``acc[k] = I / L`` (recall; NaN when the class is absent from the label, as in mmsegmentation);
  ``precision[k] = I / P`` (NaN when never predicted).
* ``f1[k] = 2 I / (L + P)``: the Dice coefficient, mmsegmentation's ``mDice`` (labelled "Dice (mmseg mDice)"):
  0 (not NaN) for a class present in one of prediction/label and never matched, NaN only when absent from both.
* ``fscore[k]``: mmsegmentation's ``mFscore`` (β = 1): ``2·p·r / (p + r)`` with ``p = I/P``, ``r = I/L``. Equal to
  Dice wherever a class has a true positive; NaN (left out of the mean) where it has none, since mmseg's ratios are
  then 0/0. The two means differ exactly when some class is predicted or labelled but never matched.
* ``mfscore_fg``: the face-parsing "mean F-score" (CelebAMask-HQ challenge style): the mean of the per-class
  F-scores ``f1`` over the foreground classes (all classes but ``background_classes``), from dataset-level areas.
* ``aacc = ΣI / ΣL`` over valid pixels; ``miou``, ``macc``, ``mf1``, ``mbiou`` are NaN-skipping means.
* ``per_image_miou`` is a different figure: the mean over images (with at least one valid pixel) of each image's
  own mIoU. It is not the dataset mIoU and is named apart on purpose.
* ``biou[k]``: Boundary IoU from band areas summed over the dataset (see :mod:`mapsage.metrics.boundary`); NaN
  where class ``k`` has no band pixels in prediction or label (or when boundaries were not computed).
  ``b_label[k]`` is the number of boundary pixels class ``k`` had in the label; ``boundary_warnings`` names every
  class present in the label with almost none (fewer than ``BAND_WARN_SHARE`` of its pixels): its Boundary IoU
  says nothing about its borders (ISPRS-style labels with ignore strips: set ``eval.boundary_strip_px``).

Values are fractions in [0, 1]; renderings in percent say so in their header.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

BAND_WARN_SHARE = 0.001     # a class whose label band holds fewer than 0.1 % of its pixels is warned about


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    ok = ~np.isnan(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _f(x: Any) -> Optional[float]:
    """JSON value: a float, or None for NaN/inf."""
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class MetricResult:
    num_classes: int
    class_names: list[str]
    ignore_index: int
    confusion: np.ndarray                  # int64 [C,C], rows = label, columns = prediction; valid pixels only
    b_intersect: np.ndarray                # int64 [C] band intersection areas
    b_union: np.ndarray                    # int64 [C] band union areas
    per_image_miou: float = float("nan")
    n_images: int = 0
    n_ignored: int = 0                     # ignored label pixels (dropped)
    boundary_px: Optional[int] = 3         # d in pixels (None when given as a ratio or not computed)
    boundary_ratio: Optional[float] = None
    border_is_edge: bool = False
    compute_boundary: bool = True
    b_label: Optional[np.ndarray] = None   # int64 [C] label band areas (boundary pixels per class); None if unknown
    boundary_strip_px: int = 0             # ignore strips up to this width count as borders (0: off)
    background_classes: list[str] = field(default_factory=list)   # left out of mfscore_fg
    # derived (filled in __post_init__)
    intersect: np.ndarray = field(init=False, repr=False)
    label_area: np.ndarray = field(init=False, repr=False)
    pred_area: np.ndarray = field(init=False, repr=False)
    union: np.ndarray = field(init=False, repr=False)
    iou: np.ndarray = field(init=False, repr=False)
    acc: np.ndarray = field(init=False, repr=False)
    precision: np.ndarray = field(init=False, repr=False)
    f1: np.ndarray = field(init=False, repr=False)
    fscore: np.ndarray = field(init=False, repr=False)
    biou: np.ndarray = field(init=False, repr=False)
    miou: float = field(init=False)
    macc: float = field(init=False)
    aacc: float = field(init=False)
    mf1: float = field(init=False)
    mbiou: float = field(init=False)
    mfscore: float = field(init=False)
    mfscore_fg: float = field(init=False)
    excluded_classes: list[str] = field(init=False)

    def __post_init__(self):
        C = self.num_classes
        self.confusion = np.asarray(self.confusion, np.int64).reshape(C, C)
        self.b_intersect = np.asarray(self.b_intersect, np.int64).reshape(C)
        self.b_union = np.asarray(self.b_union, np.int64).reshape(C)
        if len(self.class_names) != C:
            raise ValueError(f"{len(self.class_names)} class names for {C} classes")
        self.intersect = np.diag(self.confusion).copy()
        self.label_area = self.confusion.sum(1)
        self.pred_area = self.confusion.sum(0)
        self.union = self.label_area + self.pred_area - self.intersect
        self.iou = _ratio(self.intersect, self.union)
        self.acc = _ratio(self.intersect, self.label_area)
        self.precision = _ratio(self.intersect, self.pred_area)
        self.f1 = _ratio(2 * self.intersect, self.label_area + self.pred_area)
        self.fscore = np.where(self.intersect > 0, self.f1, np.nan)
        if self.b_label is not None:
            self.b_label = np.asarray(self.b_label, np.int64).reshape(C)
        unknown_bg = [n for n in self.background_classes if n not in self.class_names]
        if unknown_bg:
            raise ValueError(f"background_classes {unknown_bg} are not class names ({self.class_names})")
        if self.compute_boundary:
            self.biou = _ratio(self.b_intersect, self.b_union)
        else:
            self.biou = np.full(C, np.nan)
        self.miou = _nanmean(self.iou)
        self.macc = _nanmean(self.acc)
        total = int(self.label_area.sum())
        self.aacc = float(self.intersect.sum() / total) if total else float("nan")
        self.mf1 = _nanmean(self.f1)
        self.mbiou = _nanmean(self.biou)
        self.mfscore = _nanmean(self.fscore)
        fg = [k for k in range(C) if self.class_names[k] not in self.background_classes]
        self.mfscore_fg = _nanmean(self.f1[fg]) if fg else float("nan")
        self.excluded_classes = [self.class_names[k] for k in range(C) if self.union[k] == 0]

    # ------------------------------------------------------------------------------------------------ views
    @property
    def n_pixels(self) -> int:
        """Valid (non-ignored) label pixels scored."""
        return int(self.label_area.sum())

    @property
    def summary(self) -> dict[str, Optional[float]]:
        return {"miou": _f(self.miou), "macc": _f(self.macc), "aacc": _f(self.aacc), "mf1": _f(self.mf1),
                "mbiou": _f(self.mbiou), "per_image_miou": _f(self.per_image_miou), "mfscore": _f(self.mfscore),
                "mfscore_fg": _f(self.mfscore_fg)}

    @property
    def boundary_warnings(self) -> list[str]:
        """One line per class present in the label with (almost) no boundary pixels in it (see module docs)."""
        if not self.compute_boundary or self.b_label is None:
            return []
        out = []
        hint = ("" if self.boundary_strip_px else
                "; if the labels mark class borders with an ignore strip (ISPRS eroded labels), set "
                "eval.boundary_strip_px to the strip width (e.g. 7)")
        for k in range(self.num_classes):
            area, band = int(self.label_area[k]), int(self.b_label[k])
            if area > 0 and band < max(1.0, BAND_WARN_SHARE * area):
                out.append(f"Boundary IoU: class {self.class_names[k]} has {band} boundary pixels in the label "
                           f"({100.0 * band / area:.3f} % of its {area} pixels), so its BIoU "
                           f"{'is undefined' if band == 0 and not self.b_union[k] else 'says little'} about its "
                           f"borders{hint}")
        return out

    @property
    def per_class(self) -> list[dict[str, Any]]:
        """One dict per class: ``{id, name, iou, acc, precision, f1 (Dice), fscore (mmseg), biou, boundary_pixels}``
        (fractions, None for NaN; ``boundary_pixels``: the class's boundary pixels in the label, None if unknown)."""
        return [{"id": k, "name": self.class_names[k], "iou": _f(self.iou[k]), "acc": _f(self.acc[k]),
                 "precision": _f(self.precision[k]), "f1": _f(self.f1[k]), "fscore": _f(self.fscore[k]),
                 "biou": _f(self.biou[k]),
                 "boundary_pixels": None if self.b_label is None or not self.compute_boundary else int(self.b_label[k])}
                for k in range(self.num_classes)]

    @property
    def boundary_setting(self) -> str:
        """The boundary definition in words, e.g. ``"d=3 px, image border not an edge, ignored pixels dropped"``."""
        if not self.compute_boundary:
            return "not computed"
        width = (f"d={self.boundary_ratio:g}×diagonal" if self.boundary_ratio is not None
                 else f"d={self.boundary_px} px")
        border = "image border counts as edge" if self.border_is_edge else "image border not an edge"
        ignored = ("ignored pixels dropped, ignore strips up to "
                   f"{self.boundary_strip_px} px count as borders" if self.boundary_strip_px else
                   "ignored pixels dropped")
        return f"{width}, {border}, {ignored}"

    def weakest(self, n: int = 3) -> list[str]:
        """Names of the ``n`` classes with the lowest IoU (excluded classes left out)."""
        order = [k for k in np.argsort(np.where(np.isnan(self.iou), np.inf, self.iou), kind="stable")
                 if not np.isnan(self.iou[k])]
        return [self.class_names[k] for k in order[:n]]

    # ------------------------------------------------------------------------------------------ serialising
    def to_dict(self) -> dict[str, Any]:
        """The score command's JSON shape plus the settings and the confusion matrix."""
        return {
            **self.summary,
            "excluded_classes": list(self.excluded_classes),
            "classes": self.per_class,
            "confusion": self.confusion.tolist(),
            "n_images": int(self.n_images),
            "n_pixels": self.n_pixels,
            "n_ignored": int(self.n_ignored),
            "num_classes": self.num_classes,
            "ignore_index": int(self.ignore_index),
            "boundary_px": self.boundary_px if self.compute_boundary else None,
            "boundary_ratio": self.boundary_ratio,
            "border_is_edge": bool(self.border_is_edge),
            "boundary": self.boundary_setting,
            "boundary_strip_px": int(self.boundary_strip_px),
            "boundary_warnings": self.boundary_warnings,
            "background_classes": list(self.background_classes),
            "areas": {"intersect": self.intersect.tolist(), "union": self.union.tolist(),
                      "label": self.label_area.tolist(), "pred": self.pred_area.tolist(),
                      "b_intersect": self.b_intersect.tolist(), "b_union": self.b_union.tolist(),
                      **({"b_label": self.b_label.tolist()} if self.b_label is not None else {})},
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def to_event(self, split: str, domain: str = "all", variant: str = "raw",
                 epoch: Optional[int] = None) -> dict[str, Any]:
        """The payload of a ``metrics`` event (see :mod:`mapsage.events`): ``events.emit("metrics", **payload)``."""
        return {
            "split": split, "domain": domain, "variant": variant, "epoch": epoch,
            "summary": self.summary,
            "classes": self.per_class,
            "excluded_classes": list(self.excluded_classes),
            "confusion": self.confusion.tolist(),
            "n_images": int(self.n_images),
            "boundary_px": self.boundary_px if self.compute_boundary else None,
            "boundary_ratio": self.boundary_ratio if self.compute_boundary else None,
            "border_is_edge": bool(self.border_is_edge),
            "boundary_strip_px": int(self.boundary_strip_px),
            "boundary_warnings": self.boundary_warnings,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MetricResult":
        """Rebuild from :meth:`to_dict` output (the areas make it exact)."""
        areas = data["areas"]
        names = [c["name"] for c in data["classes"]]
        res = cls(num_classes=len(names), class_names=names, ignore_index=data["ignore_index"],
                  confusion=np.asarray(data["confusion"], np.int64), b_intersect=areas["b_intersect"],
                  b_union=areas["b_union"], n_images=data["n_images"], n_ignored=data.get("n_ignored", 0),
                  boundary_px=data.get("boundary_px"), boundary_ratio=data.get("boundary_ratio"),
                  border_is_edge=data.get("border_is_edge", False),
                  compute_boundary=data.get("boundary") != "not computed", b_label=areas.get("b_label"),
                  boundary_strip_px=int(data.get("boundary_strip_px") or 0),
                  background_classes=list(data.get("background_classes") or []))
        pim = data.get("per_image_miou")
        res.per_image_miou = float("nan") if pim is None else float(pim)
        return res

    # ----------------------------------------------------------------------------------------------- tables
    def to_dataframe(self, percent: bool = False):
        """Per-class table as a pandas DataFrame (fractions, or percent with ``percent=True``), NaN kept."""
        import pandas as pd

        scale = 100.0 if percent else 1.0
        total = max(self.n_pixels, 1)
        df = pd.DataFrame({
            "id": np.arange(self.num_classes),
            "class": self.class_names,
            "iou": self.iou * scale,
            "acc": self.acc * scale,
            "precision": self.precision * scale,
            "f1": self.f1 * scale,
            "biou": self.biou * scale,
            "label_share": self.label_area / total * scale,
            "pred_share": self.pred_area / total * scale,
            "fscore": self.fscore * scale,
        })
        return df.set_index("id")

    def table(self) -> str:
        """A fixed-width text table in percent, one row per class, then the means and the settings."""
        head = (f"{'id':>3}  {'class':<18}{'IoU':>8}{'Acc':>8}{'Prec':>8}{'Dice':>8}{'Fscore':>8}{'BIoU':>8}"
                f"{'bnd px':>9}{'label%':>8}")
        lines = ["per-class metrics (%), dataset-level areas", head, "-" * len(head)]
        total = max(self.n_pixels, 1)

        def p(x: float) -> str:
            return f"{x * 100:8.2f}" if math.isfinite(x) else f"{'n/a':>8}"

        for k in range(self.num_classes):
            name = self.class_names[k][:17]
            lines.append(f"{k:>3}  {name:<18}{p(self.iou[k])}{p(self.acc[k])}{p(self.precision[k])}"
                         f"{p(self.f1[k])}{p(self.fscore[k])}{p(self.biou[k])}"
                         f"{'n/a' if self.b_label is None else int(self.b_label[k]):>9}"
                         f"{self.label_area[k] / total * 100:8.2f}")
        lines.append("-" * len(head))
        lines.append(f"mIoU {p(self.miou).strip()}  mAcc {p(self.macc).strip()}  aAcc {p(self.aacc).strip()}  "
                     f"mDice {p(self.mf1).strip()}  mFscore {p(self.mfscore).strip()}  "
                     f"mBIoU {p(self.mbiou).strip()}  per-image mIoU {p(self.per_image_miou).strip()}")
        fg = (f"foreground, without {', '.join(self.background_classes)}" if self.background_classes
              else "all classes: none is named background")
        lines.append(f"mean F-score ({fg}) "
                     f"{p(self.mfscore_fg).strip()}   (mDice = Dice (mmseg mDice); mFscore = mmseg mFscore: classes "
                     f"without a true positive left out)")
        lines.append(f"images {self.n_images}, valid pixels {self.n_pixels}, ignored pixels {self.n_ignored} "
                     f"(ignore index {self.ignore_index}); boundary: {self.boundary_setting}")
        if self.excluded_classes:
            lines.append("excluded (absent from prediction and label): " + ", ".join(self.excluded_classes))
        lines.extend(f"WARNING {w}" for w in self.boundary_warnings)
        return "\n".join(lines)

    def __str__(self) -> str:  # pragma: no cover - convenience
        return self.table()
