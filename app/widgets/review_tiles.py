"""The Review page's data: which two masks to compare, the tile list with its Boundary IoU change, the layers of one
tile, and how the reviewers' verdicts line up with the metric.

No Streamlit here (the page caches and draws). Per-tile figures come from the store's per-tile rows (``tiles``
events: per-class intersections and unions, plain and in the boundary band) and are computed with
:func:`mapsage.metrics.miou_from_tile_rows`, the same definition the refinement stage and the paired bootstrap use:
the mean over the classes present in the label or the prediction of that tile."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from mapsage.abrule import rule_text
from mapsage.config import ConfigError, config_from_dict
from mapsage.errors import DataError, UserError
from store.review import VERDICTS

LABEL = "label"
# a tile is "same" when its Boundary IoU moved by less than this (a fraction: 0.01 points), as the refinement
# stage counts tiles better / worse / same in its A/B details
SAME_TOL = 1e-4
TILE_COLUMNS = ["tile", "domain", "miou_a", "miou_b", "mbiou_a", "mbiou_b", "d_miou", "d_mbiou", "metric_says"]


def variant_label(variant: Optional[str]) -> str:
    """What a mask layer is, as the page names it: ``refine=raw`` / ``raw`` -> ``raw`` (the model's own
    prediction), a refinement chain keeps its chain name (``refine=crf``, ``refine=sam+crf``), a TTA variant its
    own (``tta=flip``), ``label`` stays. A TTA run's masks are never called "refined"."""
    if variant is None or (isinstance(variant, float) and math.isnan(variant)):
        return "?"
    v = str(variant)
    return "raw" if v in ("refine=raw", "raw") else v


def default_pair(variants: Sequence[str], ab: Optional[pd.DataFrame] = None) -> tuple[str, str]:
    """(left, right) of the swipe for a run's mask variants.

    Left: the A/B baseline (``refine=raw``, else ``raw``, else the first variant); right: the variant with the
    largest A/B gain, else the first other variant. A run with a single variant compares it with the label."""
    variants = [str(v) for v in variants]
    if not variants:
        raise UserError("this run has no prediction masks to review")
    if len(variants) == 1:
        return LABEL, variants[0]
    baselines: list[str] = []
    if ab is not None and not ab.empty and "baseline" in ab.columns:
        baselines = [b for b in ab["baseline"].dropna().astype(str) if b in variants]
    left = next((b for b in baselines + ["refine=raw", "raw"] if b in variants), variants[0])
    right = None
    if ab is not None and not ab.empty and {"variant", "gain", "decision"} <= set(ab.columns):
        cand = ab[(ab["variant"].isin(variants)) & (ab["variant"] != left) & (ab["decision"] != "baseline")]
        cand = cand.dropna(subset=["gain"])
        if not cand.empty:
            right = str(cand.sort_values(["gain", "seq"] if "seq" in cand else ["gain"],
                                         ascending=False).iloc[0]["variant"])
    if right is None:
        right = next(v for v in variants if v != left)
    return left, right


def tile_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """Per tile of one variant's ``tiles`` rows: ``tile, domain, miou, mbiou`` (fractions; NaN where no class is
    present)."""
    from mapsage.metrics import miou_from_tile_rows

    out = []
    for r in rows.to_dict("records"):
        out.append({"tile": str(r["tile"]), "domain": r.get("domain") or None,
                    "miou": miou_from_tile_rows([r], metric="miou"),
                    "mbiou": miou_from_tile_rows([r], metric="mbiou")})
    return pd.DataFrame(out, columns=["tile", "domain", "miou", "mbiou"])


@dataclass(frozen=True)
class Rule:
    """The A/B decision rule of a comparison (:func:`mapsage.infer.ab.decide`): ``criterion`` (``miou`` or
    ``mbiou``), ``threshold`` and ``guard`` in points. The default (no A/B row for the pair) is the sign of the
    Boundary IoU change."""

    criterion: str = "mbiou"
    threshold: float = 0.0
    guard: Optional[float] = None
    from_ab: bool = False

    def text(self) -> str:
        return rule_text(self.criterion, self.threshold, self.guard)


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def pair_rule(ab: Optional[pd.DataFrame], left: str, right: str) -> Rule:
    """The rule the run's own A/B decision applied to ``right`` against ``left`` (criterion, threshold and the
    guard from its ``ab`` row); the sign of the Boundary IoU change where the run decided nothing between them."""
    if ab is None or ab.empty or not {"variant", "baseline", "criterion", "threshold"} <= set(ab.columns):
        return Rule()
    rows = ab[(ab["variant"] == right) & (ab["baseline"] == left)]
    if rows.empty:
        return Rule()
    r = rows.iloc[-1]
    guard = None
    details = r.get("details_json") if hasattr(r, "get") else None
    if isinstance(details, str) and details:
        import json

        try:
            g = (json.loads(details) or {}).get("guard")
            guard = float(g) if _finite(g) else None
        except (ValueError, TypeError, AttributeError):
            guard = None
    crit = str(r["criterion"]) if isinstance(r["criterion"], str) else "miou"
    thr = float(r["threshold"]) if _finite(r["threshold"]) else 0.0
    return Rule(criterion=crit, threshold=thr, guard=guard, from_ab=True)


def metric_says(d_mbiou: Any, d_miou: Any = None, rule: Optional[Rule] = None) -> Optional[str]:
    """better / worse / same for one tile by the decision rule of the comparison (``d_*`` in points, variant
    minus baseline), through :func:`mapsage.infer.ab.decide`, the function every A/B decision uses:

    * ``better``: the rule keeps the variant on this tile;
    * ``worse``: the rule would keep the baseline over the variant (the same rule with the roles swapped), or
      the variant passes the threshold but the guard refuses it (the other metric falls too far);
    * ``same``: neither (the change is inside the threshold), or a change below 0.01 points.
    ``None`` where the deciding figure is missing."""
    from mapsage.abrule import decide

    rule = rule or Rule()
    d, other = (d_mbiou, d_miou) if rule.criterion == "mbiou" else (d_miou, d_mbiou)
    if not _finite(d):
        return None
    d = float(d)
    o = float(other) if _finite(other) else None
    if abs(d) < SAME_TOL * 100:
        return "same"
    if decide(d, rule.threshold, o, rule.guard) == "keep":
        return "better"
    if decide(-d, rule.threshold, None if o is None else -o, rule.guard) == "keep":
        return "worse"
    if decide(d, rule.threshold) == "keep":   # passed the threshold, refused by the guard
        return "worse"
    return "same"


def tile_table(tiles: pd.DataFrame, left: str, right: str, mask_tiles: Sequence[str] = (),
               rule: Optional[Rule] = None) -> pd.DataFrame:
    """The tile list of a comparison, sorted by Boundary IoU change (largest gain first).

    ``tiles``: the store's per-tile rows (``store.tiles``) of the run; ``a`` is ``left``, ``b`` is ``right``.
    ``d_miou`` / ``d_mbiou`` are in points (b - a). With ``left == "label"`` there is no change: the table holds
    ``right``'s own figures and is sorted by its Boundary IoU, lowest first. Tiles with masks but no per-tile
    row (``mask_tiles``) are listed last with empty figures."""
    def of(variant: str) -> pd.DataFrame:
        if tiles is None or tiles.empty:
            return pd.DataFrame(columns=["tile", "domain", "miou", "mbiou"])
        return tile_scores(tiles[tiles["variant"] == variant])

    b = of(right)
    if left == LABEL:
        out = b.rename(columns={"miou": "miou_b", "mbiou": "mbiou_b"})
        out["miou_a"] = np.nan
        out["mbiou_a"] = np.nan
        out["d_miou"] = np.nan
        out["d_mbiou"] = np.nan
        out["metric_says"] = None
        out = out.sort_values(["mbiou_b", "tile"], na_position="last", kind="stable")
    else:
        a = of(left)
        out = a.merge(b, on="tile", how="outer", suffixes=("_a", "_b"))
        out["domain"] = out["domain_a"].combine_first(out["domain_b"])
        out["d_miou"] = (out["miou_b"] - out["miou_a"]) * 100.0
        out["d_mbiou"] = (out["mbiou_b"] - out["mbiou_a"]) * 100.0
        out["metric_says"] = [metric_says(db, dm, rule) for db, dm in zip(out["d_mbiou"], out["d_miou"])]
        out = out.sort_values(["d_mbiou", "tile"], ascending=[False, True], na_position="last", kind="stable")
    known = set(out["tile"])
    extra = [t for t in sorted(set(map(str, mask_tiles))) if t not in known]
    if extra:
        out = pd.concat([out, pd.DataFrame({"tile": extra})], ignore_index=True)
    return out.reindex(columns=TILE_COLUMNS).reset_index(drop=True)


def class_rows(tiles: pd.DataFrame, tile: str, left: str, right: str, class_names: Sequence[str]) -> pd.DataFrame:
    """Per class of one tile: IoU and Boundary IoU of ``left`` and ``right`` (fractions, NaN where the class is
    in neither label nor prediction) and the label's pixel share."""
    def row(variant: str) -> Optional[Mapping]:
        if tiles is None or tiles.empty:
            return None
        got = tiles[(tiles["variant"] == variant) & (tiles["tile"] == tile)]
        return got.iloc[-1].to_dict() if not got.empty else None

    def ratio(r: Optional[Mapping], num: str, den: str) -> np.ndarray:
        if r is None:
            return np.full(len(class_names), np.nan)
        n = np.asarray(r[num], np.float64)
        d = np.asarray(r[den], np.float64)
        return np.divide(n, d, out=np.full(n.shape, np.nan), where=d > 0)

    ra, rb = (None if left == LABEL else row(left)), row(right)
    ref = rb or ra
    names = list(class_names) or [str(i) for i in range(len(ref["union"]) if ref else 0)]
    label_area = np.asarray(ref["label_area"], np.float64) if ref else np.full(len(names), np.nan)
    total = label_area.sum() if ref else np.nan
    out = pd.DataFrame({
        "class": names,
        "label_share": label_area / total if ref and total > 0 else np.full(len(names), np.nan),
        "iou_a": ratio(ra, "intersect", "union"), "iou_b": ratio(rb, "intersect", "union"),
        "biou_a": ratio(ra, "b_intersect", "b_union"), "biou_b": ratio(rb, "b_intersect", "b_union"),
    })
    out["d_biou"] = (out["biou_b"] - out["biou_a"]) * 100.0
    return out


def agreement(table: pd.DataFrame, verdicts: pd.DataFrame) -> dict:
    """How the latest verdicts of a comparison line up with the sign of the Boundary IoU change.

    Returns ``reviewed`` (tiles with a verdict and a metric reading), ``agree``, counts of the reviewers'
    better / worse / same and of the metric's on the same tiles, and ``disagreements`` (tile, verdict, metric,
    d_mbiou) to look at."""
    out = {"reviewed": 0, "agree": 0, "reviewer": dict.fromkeys(VERDICTS, 0), "metric": dict.fromkeys(VERDICTS, 0),
           "disagreements": []}
    if table is None or table.empty or verdicts is None or verdicts.empty:
        return out
    m = verdicts[["tile", "verdict"]].merge(table[["tile", "metric_says", "d_mbiou"]], on="tile", how="inner")
    m = m[m["metric_says"].notna()]
    for r in m.itertuples(index=False):
        out["reviewed"] += 1
        out["reviewer"][r.verdict] = out["reviewer"].get(r.verdict, 0) + 1
        out["metric"][r.metric_says] += 1
        if r.verdict == r.metric_says:
            out["agree"] += 1
        else:
            out["disagreements"].append({"tile": r.tile, "verdict": r.verdict, "metric": r.metric_says,
                                         "d_mbiou": float(r.d_mbiou)})
    return out


@dataclass
class TileLayers:
    """What the map of one tile draws: the image file, the label (file or array), the two compared masks."""

    tile: str
    image: Any = None
    label: Any = None
    left: Any = None
    right: Any = None
    split: Optional[str] = None
    domain: Optional[str] = None
    notes: list[str] = field(default_factory=list)


def tile_layers(layers: pd.DataFrame, tile: str, left: str, right: str,
                run_config: Optional[Mapping] = None, split: Optional[str] = None) -> TileLayers:
    """The layers of ``tile`` from the run's artifacts (``store.review_queries.review_layers``).

    A run that registered only its prediction masks (an evaluation with ``eval.save_predictions``) gets the image
    and the label from its dataset config instead (``mapsage.data``: the same decoding as training)."""
    rows = layers[layers["tile"] == tile] if layers is not None and not layers.empty else pd.DataFrame()
    out = TileLayers(tile)

    def path_of(kind: Optional[str], variant: Optional[str]) -> Optional[str]:
        if rows.empty:
            return None
        sel = rows
        if kind is not None:
            sel = sel[sel["kind"] == kind]
        if variant is not None:
            sel = sel[sel["variant"] == variant]
        return str(sel.iloc[-1]["abs_path"]) if not sel.empty else None

    if not rows.empty:
        splits = rows["split"].dropna()
        out.split = str(splits.iloc[0]) if not splits.empty else None
        doms = rows["domain"].dropna()
        out.domain = str(doms.iloc[0]) if not doms.empty else None
    out.split = out.split or split
    out.image = path_of("image", None)
    out.label = path_of("label", None)
    if left != LABEL:
        out.left = path_of(None, left)
    out.right = path_of(None, right)
    if (out.image is None or out.label is None) and run_config:
        try:
            image, label = dataset_tile(run_config, out.split, tile)
        except ConfigError:
            # tiles from outside the dataset's splits (``mapsage predict --on FOLDER``): no label to read
            image, label = None, None
            if out.image is not None:
                out.notes.append(f"no label: split `{out.split}` is not a split of the run's dataset")
        if out.image is None:
            out.image = image
            out.notes.append("image read from the run's dataset config (no image artifact)")
        if out.label is None and label is not None:
            out.label = label
            out.notes.append("label decoded from the run's dataset config (no label artifact)")
    if left == LABEL:
        out.left = out.label
    return out


def dataset_tile(run_config: Mapping, split: Optional[str], tile: str) -> tuple[Optional[str], Optional[np.ndarray]]:
    """(image path, decoded label ids or None) of one tile of a run's dataset."""
    from mapsage.data import build_dataset

    cfg = config_from_dict(dict(run_config))
    split = split or cfg.dataset.val_split
    ds = build_dataset(cfg, split, train=False)
    try:
        i = ds.index_of(tile)
    except KeyError:
        raise DataError(f"tile {tile!r} is not in split '{split}' of dataset {cfg.dataset.name} "
                        f"(dataset.root: {cfg.dataset.root}); the data moved since the run - restore it or point "
                        f"dataset.root at it") from None
    sample = ds.samples[i]
    label = ds.load_mask(i) if sample.mask_path else None
    return str(sample.image_path), label
