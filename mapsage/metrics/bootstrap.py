"""Dataset-level mIoU from per-tile areas, and the paired bootstrap for A/B decisions.

A ``tiles`` event (``SegMetrics(keep_tiles=True).tile_rows()``) holds, per tile and class, the intersection and
union areas of the prediction and the label and of their boundary bands. Because those areas are additive, the
dataset-level mIoU of any multiset of tiles is ``nanmean_k(ΣI_k / ΣU_k)`` over the chosen tiles, so a bootstrap can
resample tiles and recompute exactly the figure the workbench reports (not an average of per-tile scores).

The paired bootstrap compares two variants (A = baseline, B = candidate) scored on the same tiles: each replicate
draws the same tiles (with replacement) for both, and the replicate's delta is ``mIoU_B - mIoU_A``. The interval is
the percentile interval of the replicate deltas; the difference is called significant when that interval excludes
0. Values are fractions (multiply by 100 for points).

Spatial blocks. Neighbouring tiles of one scene are correlated, so resampling tiles one by one overstates how much
the split knows. With ``blocks`` (one block id per tile: a scene, or a cell of a K×K grid laid over a scene; see
:mod:`mapsage.metrics.blocks`) each replicate draws whole blocks with replacement, and every tile of a drawn block
enters with it. The tile-wise result is returned beside the block one (``"tilewise"``).

Minimum detectable effect. Every result carries ``se`` (the standard deviation of the replicate deltas) and
``mde = (z(1 - alpha/2) + z(power)) · se``: the smallest true difference this split would call significant at
level ``alpha`` with probability ``power`` (0.8), the usual power-analysis figure. A threshold or a difference
below ``mde`` is below what these tiles can resolve.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Optional

import numpy as np

_FIELDS = {"miou": ("intersect", "union"), "mbiou": ("b_intersect", "b_union")}


def _rows_list(rows: Any) -> list[Mapping[str, Any]]:
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # a pandas DataFrame from the store
        return rows.to_dict("records")
    return list(rows)


def tile_arrays(rows: Iterable[Mapping[str, Any]], metric: str = "miou") -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(tile ids, I [N,C], U [N,C])`` as int64 arrays for ``metric`` ``"miou"`` or ``"mbiou"``."""
    if metric not in _FIELDS:
        raise ValueError(f"metric must be one of {sorted(_FIELDS)}, got {metric!r}")
    fi, fu = _FIELDS[metric]
    rows = _rows_list(rows)
    if not rows:
        raise ValueError("no tile rows")
    tiles = [str(r["tile"]) for r in rows]
    inter = np.asarray([np.asarray(r[fi], np.int64) for r in rows], np.int64)
    union = np.asarray([np.asarray(r[fu], np.int64) for r in rows], np.int64)
    if inter.ndim != 2 or inter.shape != union.shape:
        raise ValueError(f"tile rows have inconsistent class counts ({inter.shape} vs {union.shape})")
    return tiles, inter, union


def _miou_from_sums(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """NaN-skipping mean over classes of ``inter/union`` along the last axis (NaN where no class is present)."""
    inter = np.asarray(inter, np.float64)
    union = np.asarray(union, np.float64)
    present = union > 0
    ratio = np.divide(inter, union, out=np.zeros_like(inter), where=present)
    n = present.sum(-1)
    out = np.full(n.shape, np.nan)
    np.divide(ratio.sum(-1), n, out=out, where=n > 0)
    return out


def miou_from_tile_rows(rows: Iterable[Mapping[str, Any]], idx: Optional[Iterable[int]] = None,
                        metric: str = "miou") -> float:
    """Dataset-level mIoU (or mBIoU with ``metric="mbiou"``) of the tiles ``rows[idx]`` (``idx`` may repeat
    tiles, as a bootstrap draw does; default: every tile once)."""
    _, inter, union = tile_arrays(rows, metric)
    if idx is None:
        w = np.ones(len(inter), np.int64)
    else:
        w = np.bincount(np.asarray(list(idx) if not isinstance(idx, np.ndarray) else idx, np.int64),
                        minlength=len(inter))
        if len(w) != len(inter):
            raise IndexError(f"tile index out of range for {len(inter)} tiles")
    return float(_miou_from_sums(w @ inter, w @ union))


def _paired(rows_a, rows_b, metric: str):
    ta, ia, ua = tile_arrays(rows_a, metric)
    tb, ib, ub = tile_arrays(rows_b, metric)
    for name, t in (("A", ta), ("B", tb)):
        if len(set(t)) != len(t):
            dup = sorted({x for x in t if t.count(x) > 1})[:5]
            raise ValueError(f"variant {name} has duplicate tile ids {dup}")
    if set(ta) != set(tb):
        only_a = sorted(set(ta) - set(tb))[:5]
        only_b = sorted(set(tb) - set(ta))[:5]
        raise ValueError(f"the two variants were scored on different tiles (only in A: {only_a}, only in B: "
                         f"{only_b}); a paired bootstrap needs the same tiles")
    if ia.shape[1] != ib.shape[1]:
        raise ValueError(f"the two variants have different class counts ({ia.shape[1]} vs {ib.shape[1]})")
    order = {t: i for i, t in enumerate(tb)}
    perm = np.asarray([order[t] for t in ta])
    return ia, ua, ib[perm], ub[perm]


MDE_POWER = 0.8


def _z(p: float) -> float:
    """The standard normal quantile."""
    from statistics import NormalDist
    return NormalDist().inv_cdf(p)


def mde_factor(alpha: float = 0.05, power: float = MDE_POWER) -> float:
    """``z(1 - alpha/2) + z(power)``: 2.80 at the 95 % level and 80 % power."""
    return _z(1 - alpha / 2) + _z(power)


def _bootstrap_one(ia, ua, ib, ub, n: int, rng: np.random.Generator, alpha: float,
                   chunk: int = 256, groups: Optional[np.ndarray] = None) -> dict[str, Any]:
    N = len(ia)
    G = int(groups.max()) + 1 if groups is not None else N
    a = float(_miou_from_sums(ia.sum(0), ua.sum(0)))
    b = float(_miou_from_sums(ib.sum(0), ub.sum(0)))
    deltas = np.empty(n)
    # stack A and B so one matrix product per chunk resamples both with the same draws
    stacked = np.concatenate([ia, ua, ib, ub], axis=1).astype(np.float64)      # [N, 4C]
    C = ia.shape[1]
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        draws = rng.integers(0, G, size=(m, G))
        w = np.bincount((draws + np.arange(m)[:, None] * G).ravel(), minlength=m * G).reshape(m, G)
        if groups is not None:              # a drawn block brings every one of its tiles
            w = w[:, groups]
        sums = w.astype(np.float64) @ stacked                                     # [m, 4C], exact integers
        ma = _miou_from_sums(sums[:, :C], sums[:, C:2 * C])
        mb = _miou_from_sums(sums[:, 2 * C:3 * C], sums[:, 3 * C:])
        deltas[s:s + m] = mb - ma
    ok = ~np.isnan(deltas)
    if not ok.any():
        lo = hi = float("nan")
    else:
        lo, hi = np.quantile(deltas[ok], [alpha / 2, 1 - alpha / 2])
    sig = bool(np.isfinite(lo) and (lo > 0 or hi < 0))
    # share of replicates on the other side of zero from the point estimate, two-sided
    delta = b - a
    if ok.any() and np.isfinite(delta):
        other = np.mean(deltas[ok] <= 0) if delta > 0 else np.mean(deltas[ok] >= 0)
        p = float(min(1.0, 2 * other))
    else:
        p = float("nan")
    se = float(np.std(deltas[ok], ddof=1)) if ok.sum() > 1 else float("nan")
    return {"delta": delta, "ci_low": float(lo), "ci_high": float(hi), "significant": sig, "a": a, "b": b,
            "p_value": p, "se": se, "mde": se * mde_factor(alpha)}


def _group_index(tiles: list[str], blocks: Any) -> tuple[np.ndarray, list[str]]:
    """Block index per tile (in ``tiles`` order) from a mapping tile -> block id or a sequence aligned to A's rows."""
    if isinstance(blocks, Mapping):
        missing = [t for t in tiles if t not in blocks]
        if missing:
            raise ValueError(f"blocks: no block for tiles {missing[:5]}")
        ids = [str(blocks[t]) for t in tiles]
    else:
        ids = [str(b) for b in blocks]
        if len(ids) != len(tiles):
            raise ValueError(f"blocks: {len(ids)} block ids for {len(tiles)} tiles")
    names = sorted(set(ids))
    pos = {b: i for i, b in enumerate(names)}
    return np.asarray([pos[b] for b in ids], np.int64), names


def paired_bootstrap(rows_a: Iterable[Mapping[str, Any]], rows_b: Iterable[Mapping[str, Any]], n: int = 2000,
                     seed: int = 0, alpha: float = 0.05, blocks: Any = None,
                     block_by: Optional[str] = None) -> dict[str, Any]:
    """Paired tile bootstrap of ``mIoU(B) - mIoU(A)`` (and of mBIoU).

    Returns ``{delta, ci_low, ci_high, significant, a, b, p_value}`` for mIoU at the top level, the same keys
    under ``"mbiou"`` for Boundary IoU (when the rows carry band areas), and ``n_tiles``, ``n_boot``, ``alpha``,
    ``seed``. ``delta`` is the full-set difference; the interval is the ``1-alpha`` percentile interval over ``n``
    resamples of the tiles (the same resample for A and B); ``significant``: the interval excludes 0; ``p_value``:
    a two-sided bootstrap estimate; ``se`` and ``mde`` (see the module doc). Fractions, not points.

    ``blocks`` (a mapping tile -> block id, or ids aligned to ``rows_a``) resamples spatial blocks instead of tiles:
    the top-level figures are then the block bootstrap's, ``n_blocks`` and ``block_by`` (a label, e.g. "scene")
    say what was resampled, and ``"tilewise"`` holds the tile-by-tile result for the same pair."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rows_a, rows_b = _rows_list(rows_a), _rows_list(rows_b)
    ia, ua, ib, ub = _paired(rows_a, rows_b, "miou")
    groups = None
    if blocks is not None:
        groups, names = _group_index([str(r["tile"]) for r in rows_a], blocks)
    out = _bootstrap_one(ia, ua, ib, ub, n, np.random.default_rng(seed), alpha, groups=groups)
    out.update({"metric": "miou", "n_tiles": len(ia), "n_boot": int(n), "alpha": alpha, "seed": seed,
                "power": MDE_POWER, "unit": "tile" if groups is None else "block"})
    has_bands = all("b_intersect" in r for r in rows_a) and all("b_intersect" in r for r in rows_b)
    if has_bands:
        bia, bua, bib, bub = _paired(rows_a, rows_b, "mbiou")
        has_bands = bool(bua.any() or bub.any())
        if has_bands:
            out["mbiou"] = _bootstrap_one(bia, bua, bib, bub, n, np.random.default_rng(seed), alpha, groups=groups)
    if groups is not None:
        out.update({"n_blocks": len(names), "block_by": block_by or "block"})
        tw = _bootstrap_one(ia, ua, ib, ub, n, np.random.default_rng(seed), alpha)
        if has_bands:
            tw["mbiou"] = _bootstrap_one(bia, bua, bib, bub, n, np.random.default_rng(seed), alpha)
        out["tilewise"] = tw
    return out


def paired_bootstrap_values(values_a: Iterable[float], values_b: Iterable[float], n: int = 2000, seed: int = 0,
                            alpha: float = 0.05) -> dict[str, Any]:
    """Paired bootstrap of ``mean(B) - mean(A)`` over paired units that each carry one figure per side -- the
    (fold, seed) runs of two repeat/fold groups, say. The same resampling core as :func:`paired_bootstrap`: a unit
    is a "tile" with one class whose intersection is its figure and whose union is 1, so the replicate's
    dataset-level ratio is the mean of the drawn units' figures and its delta the mean of their paired
    differences. Same keys as :func:`paired_bootstrap` (``delta``, ``ci_low``, ``ci_high``, ``significant``,
    ``p_value``, ``se``, ``mde``, ``a``, ``b``) plus ``n_units``; fractions in, fractions out. Units with a
    missing figure on either side are dropped."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    a = np.asarray(list(values_a), np.float64)
    b = np.asarray(list(values_b), np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need two equally long lists, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) == 0:
        raise ValueError("no pair has a figure on both sides")
    ones = np.ones((len(a), 1))
    out = _bootstrap_one(a[:, None], ones, b[:, None], ones, n, np.random.default_rng(seed), alpha)
    out.update({"metric": "mean", "n_units": int(len(a)), "n_boot": int(n), "alpha": alpha, "seed": seed,
                "power": MDE_POWER, "unit": "pair"})
    return out
