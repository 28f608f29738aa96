"""``mapsage classify predict | check | score``: image-classification submissions.

* ``predict REF... [--on FOLDER] [--out submission.csv]``: fuse every classifier of the references (run ids,
  repeat/fold group ids, folders, checkpoint files; see :mod:`mapsage.classify.predict`) over the images of a
  folder, with TTA (``--scales``, ``--hflip``) and each member's temperature, write ``submission.csv``
  (``filename,category_id,confidence``) and validate it.
* ``check SUBMISSION --images FOLDER --ids 1,2,3 | --config CFG``: every test image exactly once, ids known.
* ``score SUBMISSION --labels ANSWERS.csv --config CFG``: top-1 and macro F1 against an answer key.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from mapsage.classify.data import ClsDataset, ClsSample, category_ids, list_images, load_rgb
from mapsage.classify.predict import discover, load_member, predict_folder, write_submission
from mapsage.classify.submission import check_submission, score_submission
from mapsage.config import load_config, resolve_path
from mapsage.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("classify", help="image classification: predict a folder into submission.csv, validate, score")
    cs = p.add_subparsers(dest="classify_command", metavar="ACTION")
    cs.required = True
    s = cs.add_parser("predict", help="fused prediction of a folder -> submission.csv (validated)")
    s.add_argument("refs", nargs="+", metavar="RUN|GROUP|DIR|FILE")
    s.add_argument("--on", default=None, metavar="FOLDER",
                   help="test images (default: the first member's dataset.root / classify.test_images)")
    s.add_argument("--out", default="submission.csv", metavar="CSV")
    s.add_argument("--scales", default="1.0", metavar="S,S", help="TTA scales, e.g. 1.0,1.25")
    s.add_argument("--hflip", action="store_true", help="TTA: add horizontally flipped views")
    s.add_argument("--no-calibrate", action="store_true", help="skip each member's fitted temperature")
    s.add_argument("--two-columns", action="store_true", help="write filename,category_id only")
    s.add_argument("--json", action="store_true", help="print the members and the validation as JSON")
    s.set_defaults(func=_predict)
    s = cs.add_parser("check", help="validate a submission.csv against the test folder and the known ids")
    s.add_argument("submission")
    s.add_argument("--images", required=True, metavar="FOLDER")
    s.add_argument("--ids", default=None, metavar="1,2,3", help="known category ids")
    s.add_argument("--config", default=None, metavar="CFG", help="take the known ids from a classification config")
    s.set_defaults(func=_check)
    s = cs.add_parser("gradcam", help="Grad-CAM of one image under a classification run's kept weights")
    s.add_argument("ref", metavar="RUN|FILE")
    s.add_argument("image")
    s.add_argument("--out", default=None, metavar="PNG", help="default: <image stem>_gradcam.png here")
    s.add_argument("--class", dest="cls", default=None, help="class name to explain (default: the prediction)")
    s.set_defaults(func=_gradcam)
    s = cs.add_parser("score", help="top-1 and macro F1 of a submission against an answer key")
    s.add_argument("submission")
    s.add_argument("--labels", required=True, metavar="ANSWERS.csv")
    s.add_argument("--config", required=True, metavar="CFG")
    s.set_defaults(func=_score)


def _images(folder: str | Path) -> list[str]:
    folder = Path(folder)
    return [str(p.relative_to(folder)) for p in list_images(folder)]


def _predict(args) -> int:
    from tqdm import tqdm


    try:
        scales = [float(v) for v in str(args.scales).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--scales {args.scales!r}: give numbers separated by commas, e.g. 1.0,1.25") from None
    folder = args.on
    if folder is None:
        _, _, cfg = load_member(discover(args.refs)[0].path)
        folder = resolve_path(cfg.dataset.root) / cfg.classify.test_images
    bar = tqdm(desc="classify", unit="img", file=sys.stderr)

    def progress(k, n, done, total):
        bar.total = n * total
        bar.n = k * total + done
        bar.set_postfix_str(f"model {k + 1}/{n}")
        bar.refresh()

    res = predict_folder(args.refs, folder, scales=scales, hflip=args.hflip, calibrate=not args.no_calibrate,
                         progress=progress)
    bar.close()
    out = write_submission(res, args.out, confidence=not args.two_columns)
    problems = check_submission(out, _images(folder), res["category_ids"])
    if args.json:
        print(json.dumps({"submission": str(out), "members": res["members"], "images": len(res["files"]),
                          "problems": problems}, indent=1))
    else:
        for m in res["members"]:
            print(f"member {Path(m['path']).name}  {m['model']}  T={m['temperature']:.3f}")
        print(f"{out}: {len(res['files'])} images, {len(res['members'])} model(s) fused, TTA scales "
              f"{scales}{' + hflip' if args.hflip else ''}")
        print("valid" if not problems else "\n".join(problems))
    return 0 if not problems else 1


def _known_ids(args) -> list[int]:
    if args.ids:
        return [int(v) for v in args.ids.split(",") if v.strip()]
    if args.config:
        return category_ids(load_config(args.config))
    raise UserError("give the known category ids: --ids 1,2,3 or --config CLASSIFICATION_CONFIG")


def _check(args) -> int:
    imgs = _images(args.images)
    problems = check_submission(args.submission, imgs, _known_ids(args))
    if problems:
        print("\n".join(problems))
        return 1
    print(f"{args.submission}: valid ({len(imgs)} test images, each exactly once; ids known)")
    return 0


def _score(args) -> int:
    cfg = load_config(args.config)
    out = score_submission(args.submission, args.labels, category_ids(cfg), cfg.dataset.classes)
    print(f"top-1 {100 * out['top1']:.2f}  macro F1 {100 * out['macro_f1']:.2f}  ({out['n_images']} images)")
    return 0


def _gradcam(args) -> int:
    import cv2

    from mapsage.classify.gradcam import grad_cam, overlay

    mem = discover([args.ref])[0]
    model, data, cfg = load_member(mem.path)
    names = list(data["classes"])
    target = None
    if args.cls is not None:
        if args.cls not in names:
            raise UserError(f"--class {args.cls!r} is not one of {names}")
        target = names.index(args.cls)
    img = Path(args.image)
    ds = ClsDataset([ClsSample(img.name, img, None, img.name)], cfg, False, int(data["img_size"]), data["mean"],
                    data["std"])
    cam, cls, p = grad_cam(model, ds[0]["image"], target)
    out = Path(args.out or f"{img.stem}_gradcam.png")
    cv2.imwrite(str(out), overlay(load_rgb(img), cam)[:, :, ::-1])
    print(f"{out}: Grad-CAM of {names[cls]} (p = {p:.3f}) from {mem.path.name}")
    return 0


def predict_to_submission(refs: list[str], on: str | None, out: str = "submission.csv") -> int:
    """``mapsage predict RUN|GROUP [--on FOLDER]`` for classification runs: ``submission.csv`` here, validated."""
    import argparse

    return _predict(argparse.Namespace(refs=refs, on=on, out=out, scales="1.0", hflip=False, no_calibrate=False,
                                       two_columns=False, json=False))
