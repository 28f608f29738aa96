"""Check 3 — normalisation: the mean/std the data pipeline really applies, against the statistics the backbone was
pretrained with, and the value range of the inputs after the training transforms.

* **Reference**: the backbone's pretrained configuration — the weights' sidecar ``config.json`` if the local
  weights file has one, else timm's ``pretrained_cfg`` / smp's encoder settings
  (``mapsage.data.normalization_info`` with the ``model.mean/std`` override removed).
* **In use**: recovered from the pipeline itself, not read from the config: for a few validation tiles the
  dataset's output tensor is regressed on the raw image (``out = (raw/255 - mean) / std`` per channel, least
  squares), which catches a pipeline that normalises twice, forgets to scale to 0..1, or swaps channels.
* **Range**: training samples (all transforms on) must lie within what 8-bit input can produce after that
  normalisation, ``[(0 - mean)/std, (1 - mean)/std]`` per channel, cover a fair part of it, and be finite.

An override (``model.mean/std``) that differs from the reference fails when pretrained weights are loaded (the
weights expect their own statistics) and warns on a randomly initialised model."""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .context import HealthRun
from .result import CheckResult

TOL = 2e-3           # on mean/std in 0..1 units: 0.5/255 of quantisation plus float error
RANGE_SLACK = 0.05   # normalised units beyond the theoretical range
MIN_COVERAGE = 0.25  # share of the theoretical range the observed values must span


def reference_normalisation(cfg) -> dict:
    from ..data import normalization_info

    ref_cfg = copy.deepcopy(cfg)
    ref_cfg.model.mean = None
    ref_cfg.model.std = None
    return normalization_info(ref_cfg)


def recover_mean_std(raw: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per channel least squares of ``out = a * raw/255 + b`` -> (mean = -b/a, std = 1/a, max residual)."""
    x = raw.reshape(-1, 3)
    y = out.reshape(3, -1).T
    step = max(1, len(x) // 200_000)          # a 200k-pixel lattice is plenty for a 2-parameter fit
    x = x[::step].astype(np.float64) / 255.0
    y = y[::step].astype(np.float64)
    means, stds, resid = [], [], 0.0
    for c in range(3):
        xc, yc = x[:, c], y[:, c]
        if xc.std() < 1e-6:      # a flat channel carries no slope information
            means.append(np.nan)
            stds.append(np.nan)
            continue
        a, b = np.polyfit(xc, yc, 1)
        resid = max(resid, float(np.abs(a * xc + b - yc).max()))
        stds.append(1.0 / a)
        means.append(-b / a)
    return np.array(means), np.array(stds), resid


def check_normalisation(h: HealthRun) -> CheckResult:
    import torch

    from ..data import load_image, normalization_info

    cfg = h.cfg
    problems: list[str] = []
    warnings: list[str] = []
    evidence: dict[str, Any] = {"encoder": cfg.model.encoder, "pretrained": cfg.model.pretrained}
    declared = normalization_info(cfg)
    reference = reference_normalisation(cfg)
    d_mean, d_std = np.array(declared["mean"]), np.array(declared["std"])
    r_mean, r_std = np.array(reference["mean"]), np.array(reference["std"])
    evidence["declared"] = {"mean": d_mean.round(6).tolist(), "std": d_std.round(6).tolist(),
                            "source": declared["source"]}
    evidence["reference"] = {"mean": r_mean.round(6).tolist(), "std": r_std.round(6).tolist(),
                             "source": reference["source"]}
    pretrained = bool(cfg.model.pretrained) and str(cfg.model.pretrained).lower() != "none"
    if np.abs(d_mean - r_mean).max() > TOL or np.abs(d_std - r_std).max() > TOL:
        msg = (f"model.mean/std {d_mean.round(4).tolist()}/{d_std.round(4).tolist()} differ from the backbone's "
               f"pretrained statistics {r_mean.round(4).tolist()}/{r_std.round(4).tolist()} ({reference['source']})")
        if pretrained:
            problems.append(msg + "; the loaded weights expect the latter - remove the override")
        else:
            warnings.append(msg + " (acceptable only because model.pretrained is none)")

    # in use: regress the pipeline's output on the raw pixels (validation tiles, no transforms)
    val = h.dataset(cfg.dataset.val_split, train=False)
    recovered = []
    n = min(3, len(val))
    for i in np.linspace(0, len(val) - 1, n).round().astype(int).tolist():
        item = val[i]
        raw = load_image(val.samples[i].image_path)
        img = item["image"].numpy() if isinstance(item["image"], torch.Tensor) else np.asarray(item["image"])
        if img.shape[1:] != raw.shape[:2]:
            evidence["in_use_note"] = (f"validation image {val.samples[i].id} comes out {tuple(img.shape[1:])} from "
                                       f"a {raw.shape[:2]} file (resized), regression skipped")
            break
        m, s, res = recover_mean_std(raw, img)
        recovered.append({"id": val.samples[i].id, "mean": np.round(m, 5).tolist(), "std": np.round(s, 5).tolist(),
                          "max_residual": round(res, 6)})
        if res > 0.05:
            problems.append(f"the pipeline's output for {val.samples[i].id} is not an affine function of the raw "
                            f"pixels per channel (residual {res:.3f}): channels swapped or mixed")
        elif np.nanmax(np.abs(m - d_mean)) > TOL or np.nanmax(np.abs(s - d_std)) > TOL:
            problems.append(f"the data pipeline normalises {val.samples[i].id} with mean {np.round(m, 4).tolist()} / "
                            f"std {np.round(s, 4).tolist()}, not the declared {d_mean.round(4).tolist()} / "
                            f"{d_std.round(4).tolist()}")
    evidence["in_use_recovered"] = recovered

    # range after the training transforms
    lo = (0.0 - d_mean) / d_std
    hi = (1.0 - d_mean) / d_std
    train = h.dataset(cfg.dataset.train_split, train=True)
    obs_min = np.full(3, np.inf)
    obs_max = np.full(3, -np.inf)
    sums = np.zeros(3)
    sq = np.zeros(3)
    count = 0
    finite = True
    k = min(4, len(train))
    for i in np.linspace(0, len(train) - 1, k).round().astype(int).tolist():
        img = train[i]["image"]
        arr = img.numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if arr.dtype != np.float32:
            problems.append(f"training images come out as {arr.dtype}, expected float32")
        arr = arr.reshape(3, -1).astype(np.float64)
        finite &= bool(np.isfinite(arr).all())
        obs_min = np.minimum(obs_min, arr.min(1))
        obs_max = np.maximum(obs_max, arr.max(1))
        sums += arr.sum(1)
        sq += (arr ** 2).sum(1)
        count += arr.shape[1]
    mean_obs = sums / max(count, 1)
    std_obs = np.sqrt(np.maximum(sq / max(count, 1) - mean_obs ** 2, 0))
    coverage = (obs_max - obs_min) / (hi - lo)
    evidence["train_range"] = {"samples": k, "min": obs_min.round(3).tolist(), "max": obs_max.round(3).tolist(),
                               "mean": mean_obs.round(3).tolist(), "std": std_obs.round(3).tolist(),
                               "expected_min": lo.round(3).tolist(), "expected_max": hi.round(3).tolist(),
                               "coverage": coverage.round(3).tolist()}
    if not finite:
        problems.append("training inputs hold NaN/inf after the transforms")
    elif (obs_min < lo - RANGE_SLACK).any() or (obs_max > hi + RANGE_SLACK).any():
        problems.append(f"training inputs range {obs_min.round(2).tolist()}..{obs_max.round(2).tolist()} exceeds what "
                        f"8-bit images normalised with the declared mean/std can give ({lo.round(2).tolist()}.."
                        f"{hi.round(2).tolist()}): input not scaled to 0..1 before normalising")
    elif (coverage < MIN_COVERAGE).any():
        problems.append(f"training inputs span only {coverage.round(3).tolist()} of the normalised range per channel: "
                        f"scaled twice (e.g. divided by 255 twice or normalised twice)")
    if problems:
        return CheckResult("normalisation", "fail", "; ".join(problems), evidence)
    matches_ref = not warnings
    where = (f"= the backbone's pretrained statistics ({reference['source']})" if matches_ref
             else f"= {declared['source']}")
    verdict = (f"mean {d_mean.round(3).tolist()} / std {d_std.round(3).tolist()} in use (recovered from the pipeline "
               f"on {len(recovered)} tiles) {where}; training inputs {obs_min.min():.2f}.."
               f"{obs_max.max():.2f}, mean {mean_obs.mean():+.2f}, std {std_obs.mean():.2f} within the expected "
               f"{lo.min():.2f}..{hi.max():.2f}")
    if warnings:
        return CheckResult("normalisation", "warn", verdict + "; " + "; ".join(warnings), evidence)
    return CheckResult("normalisation", "pass", verdict, evidence)
