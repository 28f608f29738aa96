"""The classification track end to end on the CPU, timed: 5-fold CV of the demo template through the scheduler
(``mapsage run CONFIG --folds 5``), the group's mean ± sd of top-1 and macro F1 from the store, each fold's ECE
before and after temperature scaling, then the fused submission of the 5 folds on ``test_dataset/``, its
validation and its score against the answer key.

    .venv/bin/python bench/classify_cv.py [--folds 5] [--set train.epochs=3 ...]

Runs in a fresh temporary workspace (``--workspace`` keeps it). Prints figures only; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TEMPLATE = ROOT / "configs/stage1_classification/cls_test-byobnet_dubai-scenes_cpu.yaml"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--workspace", default=None)
    args = ap.parse_args()
    ws = Path(args.workspace or tempfile.mkdtemp(prefix="mapsage-cls-bench-"))
    os.environ["MAPSAGE_WORKSPACE"] = str(ws)

    import store
    from mapsage.classify.data import category_ids
    from mapsage.classify.predict import predict_folder, write_submission
    from mapsage.classify.submission import check_submission, score_submission
    from mapsage.config import load_config
    from mapsage.workspace import run_dir
    from runners import api
    from runners.groups import launch_group
    from store.groups import group_board

    t0 = time.time()
    gid, rids = launch_group(TEMPLATE, args.overrides, folds=args.folds)
    states = [api.wait(r, timeout=3600) for r in rids]
    cv_s = time.time() - t0
    store.ingest_all(wait=True)
    print(f"workspace {ws}")
    print(f"{args.folds}-fold CV: {cv_s:.0f} s wall ({cv_s / 60:.1f} min) for {len(rids)} runs: {states}")
    for metric in ("top1", "macro_f1"):
        b = group_board(split="val", metric=metric)
        r = b[b["group"] == gid].iloc[0]
        print(f"  {metric:9s} mean {100 * r['mean']:.2f} ± {100 * r['sd']:.2f} (sd)  95 % "
              f"[{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}]  min {100 * r['min']:.2f}  max {100 * r['max']:.2f}")
    print("  fold  T      ECE before  ECE after   NLL before  NLL after")
    for rid in rids:
        cal = json.loads((run_dir(rid) / "calibration.json").read_text())
        fold = json.loads((run_dir(rid) / "split.json").read_text())["fold"]
        print(f"  {fold:>4}  {cal['temperature']:.3f}  {100 * cal['ece_before']:9.2f} %  {100 * cal['ece_after']:8.2f} %"
              f"  {cal['nll_before']:10.4f}  {cal['nll_after']:9.4f}")
    cfg = load_config(TEMPLATE, args.overrides)
    test = ROOT / cfg.dataset.root / cfg.classify.test_images
    t1 = time.time()
    res = predict_folder([gid], test)
    out = write_submission(res, ws / "submission.csv")
    names = sorted(p.name for p in test.glob("*.jpg"))
    problems = check_submission(out, names, category_ids(cfg))
    sc = score_submission(out, ROOT / cfg.dataset.root / "test_labels.csv", category_ids(cfg), cfg.dataset.classes)
    print(f"fused submission of {len(res['members'])} folds on {len(names)} test images: {time.time() - t1:.0f} s; "
          f"validator: {'valid' if not problems else problems}; against test_labels.csv: top-1 "
          f"{100 * sc['top1']:.2f}, macro F1 {100 * sc['macro_f1']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
