"""Check 7 — metric implementation: a known-answer self-test of the metrics engine.

Every case below was worked out by hand (the comments show the arithmetic); the engine must reproduce it exactly
(to 1e-9). Together they pin mmsegmentation's definition, the one the plan asks for:

* ``ignore``: pixels labelled with the ignore index are dropped from prediction *and* label, whatever was
  predicted there; an image of ignore pixels only changes nothing;
* ``absent``: a class absent from both prediction and label is NaN, left out of the mean and named as excluded
  (averaging it in as 0 — or 1 — is the classic bug that makes mIoU meaningless);
* ``unmatched``: a class present in the label but never predicted scores 0 and stays in the mean;
* ``accumulate``: areas are summed over the dataset before any ratio (not a mean of per-image mIoUs), each valid
  pixel is counted exactly once (the confusion matrix sums to the number of valid pixels), and a batch
  ``[B,H,W]`` equals the same images one by one;
* ``torch``: torch tensors give the numpy answer;
* ``real``: on a real decoded mask of the dataset, with a prediction made by shifting it and relabelling one class,
  the confusion matrix equals an independent ``np.bincount`` and mIoU its plain formula.

The engine under test is ``HealthRun.metric_class`` (``mapsage.metrics.SegMetrics``); a test injects a wrong one
and the check must fail."""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from .context import HealthRun
from .result import CheckResult

TOL = 1e-9


def _nan_eq(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return False
    return abs(float(a) - float(b)) <= TOL


def _per_class_iou(res) -> list:
    rows = res.per_class
    return [r["iou"] if isinstance(r, dict) else r.iou for r in rows]


def _observed(res) -> dict[str, Any]:
    return {"miou": float(res.miou), "macc": float(res.macc), "aacc": float(res.aacc),
            "iou": [None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 12)
                    for v in _per_class_iou(res)],
            "excluded": list(res.excluded_classes),
            "confusion": np.asarray(res.confusion).astype(np.int64).tolist()}


def _compare(case: str, res, expected: dict) -> list[str]:
    errs = []
    for key in ("miou", "macc", "aacc"):
        if key in expected and not _nan_eq(expected[key], float(getattr(res, key))):
            errs.append(f"{case}: {key} {float(getattr(res, key)):.6f}, expected {expected[key]:.6f}")
    if "iou" in expected:
        got = _per_class_iou(res)
        if len(got) != len(expected["iou"]):
            errs.append(f"{case}: {len(got)} per-class rows, expected {len(expected['iou'])}")
        else:
            for k, (g, e) in enumerate(zip(got, expected["iou"])):
                if not _nan_eq(e, g):
                    errs.append(f"{case}: IoU of class {k} {g}, expected {e}")
    if "excluded" in expected and list(res.excluded_classes) != expected["excluded"]:
        errs.append(f"{case}: excluded classes {list(res.excluded_classes)}, expected {expected['excluded']}")
    if "confusion" in expected:
        conf = np.asarray(res.confusion).astype(np.int64)
        if conf.shape != np.asarray(expected["confusion"]).shape or not np.array_equal(conf, expected["confusion"]):
            errs.append(f"{case}: confusion {conf.tolist()}, expected {np.asarray(expected['confusion']).tolist()}")
    return errs


# ---------------------------------------------------------------------------------------------- the cases
# label / prediction of case "ignore" (I = ignore). Valid pixels: 12.
#   label            pred
#   0 0 1 1          0 1 1 1
#   0 0 1 1          0 0 1 1
#   2 2 I I          2 0 2 1      <- predictions under I must not count
#   2 2 I I          2 2 0 0
# confusion (rows label): class 0 -> {0: 3, 1: 1}; class 1 -> {1: 4}; class 2 -> {2: 3, 0: 1}
# IoU0 = 3 / (4 + 4 - 3) = 0.6; IoU1 = 4 / (4 + 5 - 4) = 0.8; IoU2 = 3 / (4 + 3 - 3) = 0.75
# mIoU = 2.15 / 3; Acc = 3/4, 4/4, 3/4 -> mAcc = 2.5 / 3; aAcc = 10 / 12


def _case_arrays(ign: int):
    I = ign
    label = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, I, I], [2, 2, I, I]], dtype=np.int64)
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [2, 0, 2, 1], [2, 2, 0, 0]], dtype=np.int64)
    return label, pred


def run_cases(make: Callable[[int, int, list[str]], Any], ign: int, real: tuple | None = None) -> tuple[list, list]:
    """Run every known-answer case; ``make(num_classes, ignore_index, class_names)`` builds a fresh engine.
    Returns (case rows for the evidence, error strings)."""
    rows: list[dict] = []
    errors: list[str] = []

    def run(case: str, C: int, pairs: list, expected: dict, batch: bool = False):
        names = [f"class{k}" for k in range(C)]
        try:
            m = make(C, ign, names)
            if batch:
                m.update(np.stack([p for p, _ in pairs]), np.stack([l for _, l in pairs]))
            else:
                for pred, label in pairs:
                    m.update(pred, label)
            res = m.result()
            errs = _compare(case, res, expected)
            obs = _observed(res)
        except Exception as exc:   # an engine that crashes on a case fails it
            errs = [f"{case}: the engine raised {type(exc).__name__}: {exc}"]
            obs = None
        rows.append({"case": case, "ok": not errs, "observed": obs,
                     "expected": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in expected.items()}})
        errors.extend(errs)
        return obs

    label, pred = _case_arrays(ign)
    base = {"miou": 2.15 / 3, "macc": 2.5 / 3, "aacc": 10 / 12, "iou": [0.6, 0.8, 0.75], "excluded": [],
            "confusion": [[3, 1, 0], [0, 4, 0], [1, 0, 3]]}
    run("ignore", 3, [(pred, label)], base)

    # an image whose every pixel is ignored, with an arbitrary prediction, changes nothing
    all_ign = np.full((4, 4), ign, dtype=np.int64)
    junk = np.array([[0, 1, 2, 0]] * 4, dtype=np.int64)
    run("ignore-only image", 3, [(pred, label), (junk, all_ign)], base)

    # the same with a 4th class absent from both: NaN, excluded, and the mean is still 2.15 / 3 (not 2.15 / 4)
    absent = dict(base, iou=[0.6, 0.8, 0.75, None], excluded=["class3"],
                  confusion=[[3, 1, 0, 0], [0, 4, 0, 0], [1, 0, 3, 0], [0, 0, 0, 0]])
    run("absent class", 4, [(pred, label)], absent)

    # class 2 labelled but never predicted: IoU 0, kept in the mean; class 1 absent: excluded
    #   label 0 0 / 2 2, pred 0 0 / 0 0 -> IoU0 = 2 / (2 + 4 - 2) = 0.5, IoU2 = 0 / 2 = 0 -> mIoU 0.25
    l2 = np.array([[0, 0], [2, 2]], dtype=np.int64)
    p2 = np.zeros((2, 2), dtype=np.int64)
    run("unmatched class", 3, [(p2, l2)], {"miou": 0.25, "iou": [0.5, None, 0.0], "excluded": ["class1"],
                                            "confusion": [[2, 0, 0], [0, 0, 0], [2, 0, 0]], "aacc": 0.5})

    # dataset-level accumulation: image 1 perfect (all class 0), image 2 label 0 1 / 1 1 predicted all 1.
    #   summed confusion [[4,1],[0,3]] -> IoU0 = 4/5 = 0.8, IoU1 = 3/4 = 0.75, mIoU 0.775
    #   (the mean of per-image mIoUs would be (1.0 + 0.375) / 2 = 0.6875); 8 valid pixels counted once each
    a_l = np.zeros((2, 2), dtype=np.int64)
    a_p = np.zeros((2, 2), dtype=np.int64)
    b_l = np.array([[0, 1], [1, 1]], dtype=np.int64)
    b_p = np.ones((2, 2), dtype=np.int64)
    acc_expected = {"miou": 0.775, "iou": [0.8, 0.75, None], "excluded": ["class2"], "aacc": 7 / 8,
                    "confusion": [[4, 1, 0], [0, 3, 0], [0, 0, 0]]}
    run("accumulate", 3, [(a_p, a_l), (b_p, b_l)], acc_expected)
    run("accumulate batch", 3, [(a_p, a_l), (b_p, b_l)], acc_expected, batch=True)

    try:
        import torch

        names = [f"class{k}" for k in range(3)]
        try:
            m = make(3, ign, names)
            m.update(torch.from_numpy(pred), torch.from_numpy(label))
            res = m.result()
            errs = _compare("torch input", res, base)
            obs = _observed(res)
        except Exception as exc:
            errs, obs = [f"torch input: the engine raised {type(exc).__name__}: {exc}"], None
        rows.append({"case": "torch input", "ok": not errs, "observed": obs, "expected": base})
        errors.extend(errs)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass

    if real is not None:
        real_label, real_pred, C, desc = real
        valid = real_label != ign
        expected_conf = np.bincount(real_label[valid].astype(np.int64) * C + real_pred[valid].astype(np.int64),
                                    minlength=C * C).reshape(C, C)
        inter = np.diag(expected_conf).astype(np.float64)
        union = expected_conf.sum(0) + expected_conf.sum(1) - inter
        iou = [float(i / u) if u > 0 else None for i, u in zip(inter, union)]
        present = [v for v in iou if v is not None]
        expected = {"miou": float(np.mean(present)), "iou": iou, "confusion": expected_conf,
                    "aacc": float(inter.sum() / valid.sum())}
        run(f"real mask ({desc})", C, [(real_pred, real_label)], expected)
    return rows, errors


def _real_case(h: HealthRun) -> tuple | None:
    """A real decoded mask from the validation split and a prediction derived from it (shifted by 7 px down and
    right, class 0 relabelled as class 1), or None when no mask can be read."""
    cfg = h.cfg
    C = cfg.dataset.num_classes
    for split in (cfg.dataset.val_split, cfg.dataset.train_split):
        try:
            ds = h.dataset(split, train=False)
        except Exception:
            continue
        for s in ds.samples:
            if s.mask_path is None:
                continue
            from ..data import load_mask
            label = load_mask(s.mask_path, cfg.dataset).astype(np.int64)
            pred = np.roll(label, (7, 7), axis=(0, 1)).copy()
            pred[pred == cfg.ignore_index] = 0
            pred[pred == 0] = 1 % C
            return label, pred, C, s.id
    return None


def check_metric(h: HealthRun) -> CheckResult:
    cfg = h.cfg
    ign = cfg.ignore_index if not (0 <= cfg.ignore_index < 4) else 255
    metric_class = h.engine_class()

    def make(C, ignore, names):
        return metric_class(C, ignore_index=ignore, class_names=names)

    real = _real_case(h)
    rows, errors = run_cases(make, ign, real)
    evidence = {"engine": f"{getattr(metric_class, '__module__', '?')}.{getattr(metric_class, '__name__', '?')}",
                "ignore_index_used": ign, "cases": rows}
    n_ok = sum(1 for r in rows if r["ok"])
    if errors:
        evidence["errors"] = errors
        failed = [r["case"] for r in rows if not r["ok"]]
        return CheckResult("metric", "fail",
                           f"metrics engine failed {len(failed)}/{len(rows)} known-answer cases ({', '.join(failed)}): "
                           f"{errors[0]}", evidence)
    return CheckResult("metric", "pass",
                       f"metrics engine reproduces {n_ok}/{len(rows)} known answers: ignore dropped, absent classes "
                       f"excluded from the mean, unmatched classes scored 0, dataset-level areas counted once"
                       + (", real mask equals np.bincount" if real is not None else ""), evidence)
