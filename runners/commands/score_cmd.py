"""``mapsage score PRED_DIR GT_DIR --num-classes N [--ignore-index 255] [--boundary-px 3] [--class-names a,b,..]
[--json]``: score a folder of predicted id masks against a folder of label id masks.

Both folders hold single-channel PNGs of class ids (8- or 16-bit greyscale, or palette PNGs whose indices are the
ids), matched by file stem (``PRED_DIR/x.png`` scores against ``GT_DIR/x.png``). The numbers come from
:class:`mapsage.metrics.SegMetrics`, the engine training and evaluation use: dataset-level areas, the ignore
index dropped, classes absent from prediction and label left out and listed.

A missing or extra file, a size mismatch, a colour image, or a value that is not a class id (or, in the labels,
the ignore index) stops the command with an error naming the file (exit status 2).

``--json`` prints ``{miou, macc, aacc, mf1, mbiou, per_image_miou, excluded_classes, classes: [{id, name, iou,
acc, precision, f1, biou}], ...}`` with fractions in [0, 1] and null for NaN; otherwise a per-class table.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

MASK_SUFFIXES = (".png",)


def register(sub) -> None:
    p = sub.add_parser("score", help="score predicted id masks against label id masks (mIoU, Boundary IoU, ...)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("pred_dir", metavar="PRED_DIR", help="folder of predicted class-id PNGs")
    p.add_argument("gt_dir", metavar="GT_DIR", help="folder of label class-id PNGs (same stems)")
    p.add_argument("--num-classes", type=int, required=True, metavar="N", help="number of classes (ids 0..N-1)")
    p.add_argument("--ignore-index", type=int, default=255, help="label value to ignore (default 255)")
    p.add_argument("--boundary-px", type=int, default=3, help="Boundary IoU band width d in pixels (default 3)")
    p.add_argument("--boundary-ratio", type=float, default=None,
                   help="band width as a ratio of the image diagonal instead (the reference uses 0.02)")
    p.add_argument("--border-is-edge", action="store_true",
                   help="count the image border as a class edge for Boundary IoU (off by default)")
    p.add_argument("--class-names", default=None, metavar="a,b,..", help="comma-separated class names (N of them)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=score_cmd)


def _mask_files(folder: Path, role: str, option: str) -> dict[str, Path]:
    from mapsage.errors import UserError

    if not folder.exists():
        raise UserError(f"{role} folder {folder} does not exist ({option})")
    if not folder.is_dir():
        raise UserError(f"{role} folder {folder} is not a folder ({option})")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in MASK_SUFFIXES:
            if path.stem in files:
                raise UserError(f"{role} folder has two files with the stem {path.stem!r}: {files[path.stem]} "
                                f"and {path}; keep one")
            files[path.stem] = path
    if not files:
        raise UserError(f"{role} folder {folder} holds no .png masks ({option})")
    return files


def read_id_mask(path: Path) -> np.ndarray:
    """A single-channel class-id PNG as an integer array; ``DataError`` naming the file otherwise."""
    from PIL import Image, UnidentifiedImageError

    from mapsage.errors import DataError

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
                arr = np.asarray(im)
            else:
                raise DataError(f"{path}: a {mode} image; score needs single-channel class-id PNGs (greyscale or "
                                "palette indices). Convert colour masks to class ids first "
                                "(see `mapsage data inspect` for a dataset's colour map)")
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read the mask ({exc})") from exc
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return arr


def score_dirs(pred_dir: str | Path, gt_dir: str | Path, num_classes: int, ignore_index: int = 255,
               boundary_px: int = 3, boundary_ratio: float | None = None, border_is_edge: bool = False,
               class_names: list[str] | None = None, progress: bool = True):
    """Score every ``GT_DIR/*.png`` against ``PRED_DIR/<same stem>.png``; returns a ``MetricResult``."""
    from tqdm import tqdm

    from mapsage.errors import DataError, UserError
    from mapsage.metrics import SegMetrics

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if class_names is not None and len(class_names) != num_classes:
        raise UserError(f"--class-names lists {len(class_names)} names for --num-classes {num_classes}")
    try:
        metrics = SegMetrics(num_classes, ignore_index=ignore_index, class_names=class_names,
                             boundary_px=boundary_px, boundary_ratio=boundary_ratio, border_is_edge=border_is_edge)
    except ValueError as exc:
        raise UserError(f"invalid score settings: {exc} (--num-classes / --ignore-index / --boundary-px)") from exc
    gts = _mask_files(gt_dir, "label", "GT_DIR")
    preds = _mask_files(pred_dir, "prediction", "PRED_DIR")
    missing = sorted(set(gts) - set(preds))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"no prediction for label {gts[missing[0]]}: expected {pred_dir / (missing[0] + '.png')}"
                        f"{more}")
    extra = sorted(set(preds) - set(gts))
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise DataError(f"prediction {preds[extra[0]]} has no label: expected {gt_dir / (extra[0] + '.png')}{more}")
    for stem in tqdm(sorted(gts), desc="scoring", unit="mask", file=sys.stderr, disable=not progress):
        gt_path, pred_path = gts[stem], preds[stem]
        label = read_id_mask(gt_path)
        pred = read_id_mask(pred_path)
        if pred.shape != label.shape:
            raise DataError(f"{pred_path}: size {pred.shape[1]}×{pred.shape[0]} differs from its label {gt_path} "
                            f"({label.shape[1]}×{label.shape[0]})")
        _check_values(pred, label, pred_path, gt_path, num_classes, ignore_index)
        metrics.update(pred, label, tile=stem)
    return metrics.result()


def _check_values(pred, label, pred_path, gt_path, C: int, ign: int) -> None:
    """Name the file holding a value that is not a class id (the engine would only name the tile)."""
    from mapsage.errors import DataError

    bad_l = (label != ign) & ((label < 0) | (label >= C))
    if bad_l.any():
        vals = np.unique(label[bad_l])
        raise DataError(f"{gt_path}: label values {_vals(vals)} are neither class ids 0..{C - 1} nor the ignore "
                        f"index {ign} ({int(bad_l.sum())} pixels); check --num-classes / --ignore-index, or "
                        "convert raw dataset values to class ids")
    bad_p = (label != ign) & ((pred < 0) | (pred >= C))
    if bad_p.any():
        vals = np.unique(pred[bad_p])
        raise DataError(f"{pred_path}: prediction values {_vals(vals)} are not class ids 0..{C - 1} "
                        f"({int(bad_p.sum())} pixels where the label is valid); check --num-classes")


def _vals(vals) -> str:
    vals = [int(v) for v in vals]
    return "[" + ", ".join(map(str, vals[:10])) + (", ..." if len(vals) > 10 else "") + "]"


def score_cmd(args) -> int:
    names = None
    if args.class_names:
        names = [n.strip() for n in args.class_names.split(",")]
    result = score_dirs(args.pred_dir, args.gt_dir, args.num_classes, ignore_index=args.ignore_index,
                        boundary_px=args.boundary_px, boundary_ratio=args.boundary_ratio,
                        border_is_edge=args.border_is_edge, class_names=names, progress=not args.no_progress)
    if args.json:
        print(result.to_json())
    else:
        print(result.table())
    return 0
