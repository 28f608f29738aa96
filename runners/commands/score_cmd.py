"""``mapsage score PRED_DIR GT_DIR --num-classes N [--ignore-index 255] [--boundary-px 3] [--class-names a,b,..]
[--palette '#RRGGBB,...'] [--reduce-zero-label] [--boundary-strip-px S] [--matched-only] [--json]``: score a
folder of predicted id masks against a folder of label id masks.

What it reads, in either folder (searched recursively, matched by the path below the folder without suffix):

* single-channel PNGs of class ids (8- or 16-bit greyscale, or palette PNGs whose indices are the ids);
* grey RGB PNGs (R = G = B: the ids written as grey levels);
* colour PNGs when ``--palette`` gives the class colours in id order (``--ignore-colors`` lists label colours that
  mean ignore); a colour the palette does not name is an error naming it. A palette PNG whose colours are all
  among those is read by its colours (its indices are file-specific codes), any other by its indices;
* TIFF / GeoTIFF id rasters (``.tif``, ``.tiff``: band 1);
* the workbench's own prediction folders, which hold ``<tile>.png`` (ids) beside ``<tile>_color.png`` (the
  picture): the colour twin of an id file is skipped.

The numbers come from :class:`mapsage.metrics.SegMetrics`, the engine training and evaluation use: dataset-level
areas, the ignore index dropped, classes absent from prediction and label left out and listed. Labels converted by
mmsegmentation with ``reduce_zero_label`` (0 = ignore, 1..K = classes) need ``--reduce-zero-label``; the command
warns when the labels look shifted by one against the predictions.

Names that do not pair up are counted and listed, and stop the command unless ``--matched-only`` scores the pairs
that match. A size mismatch, a colour image without a palette, or a value that is not a class id (or, in the
labels, the ignore index) stops the command with an error naming the file (exit status 2).

``--json`` prints ``{miou, macc, aacc, mf1 (Dice, mmseg mDice), mfscore (mmseg mFscore), mfscore_fg, mbiou,
per_image_miou, excluded_classes, classes: [{id, name, iou, acc, precision, f1, fscore, biou, boundary_pixels}],
warnings, unmatched, ...}`` with fractions in [0, 1] and null for NaN; otherwise a per-class table.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mapsage.errors import DataError, UserError

MASK_SUFFIXES = (".png", ".tif", ".tiff")
COLOR_SUFFIX = "_color"
_LISTED = 10


def register(sub) -> None:
    p = sub.add_parser("score", help="score predicted id masks against label id masks (mIoU, Boundary IoU, ...)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("pred_dir", metavar="PRED_DIR", help="folder of predicted class-id masks")
    p.add_argument("gt_dir", metavar="GT_DIR", help="folder of label class-id masks (same names)")
    p.add_argument("--num-classes", type=int, required=True, metavar="N", help="number of classes (ids 0..N-1)")
    p.add_argument("--ignore-index", type=int, default=255, help="label value to ignore (default 255)")
    p.add_argument("--boundary-px", type=int, default=3, help="Boundary IoU band width d in pixels (default 3)")
    p.add_argument("--boundary-ratio", type=float, default=None,
                   help="band width as a ratio of the image diagonal instead (the reference uses 0.02)")
    p.add_argument("--border-is-edge", action="store_true",
                   help="count the image border as a class edge for Boundary IoU (off by default)")
    p.add_argument("--boundary-strip-px", type=int, default=0, metavar="S",
                   help="labels with ignore strips along class borders (ISPRS eroded): strips up to S px count "
                        "as the border in Boundary IoU (default 0: off)")
    p.add_argument("--class-names", default=None, metavar="a,b,..", help="comma-separated class names (N of them)")
    p.add_argument("--background", default=None, metavar="a,b",
                   help="classes left out of the foreground mean F-score (default: a class named background)")
    p.add_argument("--palette", default=None, metavar="#RRGGBB,..",
                   help="class colours in id order: colour masks (prediction or label) are read through it")
    p.add_argument("--ignore-colors", default=None, metavar="#RRGGBB,..",
                   help="label colours that mean ignore (with --palette)")
    p.add_argument("--reduce-zero-label", action="store_true",
                   help="labels converted by mmsegmentation: stored 0 = ignore, 1..N = classes 0..N-1")
    p.add_argument("--matched-only", action="store_true",
                   help="score the pairs whose names match and list the rest (default: unmatched names stop)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=score_cmd)


def _key(rel) -> str:
    """Match key of a mask file: its path below the folder without suffix, each part made file-system safe (so a
    label ``Tile 1/x.png`` meets the app's prediction ``Tile_1/x.png``)."""
    from mapsage.infer.predictions import safe_part

    parts = list(rel.with_suffix("").parts)
    return "/".join(safe_part(p) for p in parts)


def _mask_files(folder: Path, role: str, option: str) -> tuple[dict[str, tuple[Path, bool]], int]:
    """``{key: (path, is_colour_twin)}`` and the number of ``_color`` pictures skipped beside their id file."""

    if not folder.exists():
        raise UserError(f"{role} folder {folder} does not exist ({option})")
    if not folder.is_dir():
        raise UserError(f"{role} folder {folder} is not a folder ({option})")
    ids: dict[str, Path] = {}
    colours: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if not (path.is_file() and path.suffix.lower() in MASK_SUFFIXES):
            continue
        rel = path.relative_to(folder)
        stem = rel.with_suffix("").name
        if stem.endswith(COLOR_SUFFIX) and stem != COLOR_SUFFIX:
            colours[_key(rel.with_name(stem[: -len(COLOR_SUFFIX)] + path.suffix))] = path
            continue
        key = _key(rel)
        if key in ids:
            raise UserError(f"{role} folder has two files with the name {key!r}: {ids[key]} and {path}; keep one")
        ids[key] = path
    files = {k: (p, False) for k, p in ids.items()}
    skipped = 0
    for k, p in colours.items():
        if k in files:
            skipped += 1                   # the picture beside an id file (the workbench's prediction folders)
        else:
            files[k] = (p, True)           # a colour mask of its own: read through --palette
    if not files:
        raise UserError(f"{role} folder {folder} holds no .png/.tif masks ({option})")
    return files, skipped


def parse_palette(text: str | None, option: str) -> list[tuple[int, int, int]]:
    if not text:
        return []
    out = []
    for item in text.split(","):
        h = item.strip().lstrip("#")
        if len(h) != 6:
            raise UserError(f"{option}: {item.strip()!r} is not a colour; write '#RRGGBB,#RRGGBB,...'")
        try:
            out.append((int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)))
        except ValueError as exc:
            raise UserError(f"{option}: {item.strip()!r} is not a colour; write '#RRGGBB,...'") from exc
    return out


def _read_tiff(path: Path) -> np.ndarray:
    from PIL import Image


    try:
        with Image.open(path) as im:
            if im.mode in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1", "F"):
                return np.asarray(im)
            if im.mode in ("RGB", "RGBA"):
                return np.asarray(im)[..., :3]
    except Exception:            # Pillow cannot read many GeoTIFFs: rasterio can
        pass
    try:
        import rasterio
        with rasterio.open(path) as src:
            return src.read(1)
    except Exception as exc:
        raise DataError(f"{path}: cannot read the TIFF ({type(exc).__name__}: {exc})") from exc


def read_id_mask(path: Path, palette: list | None = None, ignore_colors: list | None = None,
                 ignore_index: int = 255) -> np.ndarray:
    """A class-id mask as an integer array (see the module docs for what is read); ``DataError`` naming the file
    otherwise."""
    from PIL import Image, UnidentifiedImageError


    if path.suffix.lower() in (".tif", ".tiff"):
        arr = _read_tiff(path)
    else:
        try:
            with Image.open(path) as im:
                mode = im.mode
                if mode == "P" and palette and _palette_colours_known(im, palette, ignore_colors or []):
                    arr = np.asarray(im.convert("RGB"))     # a colour mask stored as a palette PNG
                elif mode in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
                    arr = np.asarray(im)
                elif mode in ("RGB", "RGBA", "LA"):
                    arr = np.asarray(im.convert("RGB"))
                else:
                    raise DataError(f"{path}: a {mode} image; score needs class-id masks (greyscale, palette "
                                    "indices, grey RGB, TIFF) or colour masks with --palette")
        except (OSError, UnidentifiedImageError, SyntaxError) as exc:
            raise DataError(f"{path}: cannot read the mask ({exc})") from exc
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 3:
        arr = _from_colour(arr, path, palette or [], ignore_colors or [], ignore_index)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(f"{path}: a floating-point raster with fractional values; class ids must be integers")
        arr = arr.astype(np.int64)
    return arr


def _palette_colours_known(im, palette: list, ignore_colors: list) -> bool:
    """True when every colour a palette PNG uses is one of the given class / ignore colours: then its indices are
    file-specific codes of those colours (the Dubai masks), not class ids."""
    pal = np.asarray(im.getpalette() or [], np.int64).reshape(-1, 3)
    used = np.nonzero(np.bincount(np.asarray(im).ravel(), minlength=256))[0]
    known = {tuple(c) for c in palette} | {tuple(c) for c in ignore_colors}
    return all(i < len(pal) and tuple(int(v) for v in pal[i]) in known for i in used.tolist())


def _from_colour(rgb: np.ndarray, path: Path, palette: list, ignore_colors: list, ignore_index: int) -> np.ndarray:
    r, g, b = (rgb[..., i] for i in range(3))
    if (r == g).all() and (g == b).all():
        return np.ascontiguousarray(r)                 # grey RGB: the ids as grey levels
    if not palette:
        raise DataError(f"{path}: an RGB colour image; score needs class-id masks (greyscale, palette indices, grey "
                        f"RGB) - or pass --palette '#RRGGBB,...' (class colours in id order) to read colour masks")
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {(c[0] << 16) | (c[1] << 8) | c[2]: k for k, c in enumerate(palette)}
    for c in ignore_colors:
        table.setdefault((c[0] << 16) | (c[1] << 8) | c[2], ignore_index)
    keys = np.array(sorted(table), np.int64)
    vals = np.array([table[k] for k in keys.tolist()], np.int64)
    pos = np.clip(np.searchsorted(keys, packed), 0, len(keys) - 1)
    known = keys[pos] == packed
    if not known.all():
        uv, uc = np.unique(packed[~known], return_counts=True)
        listed = ", ".join(f"#{int(v):06X}: {int(n)} px" for v, n in list(zip(uv, uc))[:_LISTED])
        raise DataError(f"{path}: {len(uv)} colour(s) not in --palette / --ignore-colors: {listed}")
    return vals[pos]


def _listing(keys: list[str], files: dict, limit: int = _LISTED) -> str:
    shown = ", ".join(str(files[k][0]) for k in keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


def _shift_warning(result) -> str | None:
    """Labels shifted by one against the predictions (mmseg reduce_zero_label read as ids, or the reverse)."""
    conf = result.confusion
    total = int(conf.sum())
    if total == 0 or conf.shape[0] < 2:
        return None
    diag = int(np.trace(conf))
    up = int(np.trace(conf, offset=-1))      # label k+1 met prediction k
    down = int(np.trace(conf, offset=1))     # label k met prediction k+1
    shift, which = max((up, "label k+1 meets prediction k"), (down, "label k meets prediction k+1"))
    if shift > 0.5 * total and shift > 2 * diag:
        return (f"the labels look shifted by one against the predictions: {which} on {100 * shift / total:.1f} % "
                f"of the valid pixels (the diagonal holds {100 * diag / total:.1f} %). Labels converted by "
                f"mmsegmentation store 0 = ignore and 1..K = the classes: pass --reduce-zero-label")
    return None


def score_dirs(pred_dir: str | Path, gt_dir: str | Path, num_classes: int, ignore_index: int = 255,
               boundary_px: int = 3, boundary_ratio: float | None = None, border_is_edge: bool = False,
               class_names: list[str] | None = None, progress: bool = True, *, palette: str | None = None,
               ignore_colors: str | None = None, reduce_zero_label: bool = False, boundary_strip_px: int = 0,
               background: list[str] | None = None, matched_only: bool = False, report: dict | None = None):
    """Score every label mask against the prediction of the same name; returns a ``MetricResult``. ``report``
    (a dict) receives ``warnings``, ``unmatched`` and ``colour_twins_skipped``."""
    from tqdm import tqdm

    from mapsage.health.label_ids import RawIdScan, judge_ids
    from mapsage.metrics import SegMetrics

    report = {} if report is None else report
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if class_names is not None and len(class_names) != num_classes:
        raise UserError(f"--class-names lists {len(class_names)} names for --num-classes {num_classes}")
    pal = parse_palette(palette, "--palette")
    if pal and len(pal) != num_classes:
        raise UserError(f"--palette lists {len(pal)} colours for --num-classes {num_classes}")
    ign_cols = parse_palette(ignore_colors, "--ignore-colors")
    try:
        metrics = SegMetrics(num_classes, ignore_index=ignore_index, class_names=class_names,
                             boundary_px=boundary_px, boundary_ratio=boundary_ratio, border_is_edge=border_is_edge,
                             boundary_strip_px=boundary_strip_px, background_classes=background)
    except ValueError as exc:
        raise UserError(f"invalid score settings: {exc} (--num-classes / --ignore-index / --boundary-px / "
                        f"--background)") from exc
    gts, gt_skipped = _mask_files(gt_dir, "label", "GT_DIR")
    preds, pred_skipped = _mask_files(pred_dir, "prediction", "PRED_DIR")
    missing = sorted(set(gts) - set(preds))
    extra = sorted(set(preds) - set(gts))
    report["unmatched"] = {"labels_without_prediction": [str(gts[k][0]) for k in missing],
                           "predictions_without_label": [str(preds[k][0]) for k in extra]}
    report["colour_twins_skipped"] = gt_skipped + pred_skipped
    report["pairs"] = len(set(gts) & set(preds))
    if (missing or extra) and not (matched_only and report["pairs"]):
        parts = []
        if missing:
            first = gts[missing[0]][0]
            parts.append(f"no prediction for label {first}: expected {pred_dir / missing[0]}.png; {len(missing)} "
                         f"label(s) without a prediction: {_listing(missing, gts)}")
        if extra:
            first = preds[extra[0]][0]
            parts.append(f"prediction {first} has no label: expected {gt_dir / extra[0]}.png; {len(extra)} "
                         f"prediction(s) without a label: {_listing(extra, preds)}")
        raise DataError("; ".join(parts) + f". {report['pairs']} pair(s) match; score only those with "
                        f"--matched-only")
    warnings = report.setdefault("warnings", [])
    if missing or extra:
        warnings.append(f"scored the {report['pairs']} matching pair(s); {len(missing)} label(s) without a "
                        f"prediction and {len(extra)} prediction(s) without a label left out (listed under "
                        f"'unmatched')")
    scan = RawIdScan()
    for key in tqdm(sorted(set(gts) & set(preds)), desc="scoring", unit="mask", file=sys.stderr,
                    disable=not progress):
        (gt_path, _), (pred_path, _) = gts[key], preds[key]
        label = read_id_mask(gt_path, pal, ign_cols, ignore_index)
        pred = read_id_mask(pred_path, pal, [], ignore_index)
        if pred.shape != label.shape:
            raise DataError(f"{pred_path}: size {pred.shape[1]}×{pred.shape[0]} differs from its label {gt_path} "
                            f"({label.shape[1]}×{label.shape[0]})")
        if reduce_zero_label:
            label = _reduce_zero_label(label, num_classes, ignore_index, gt_path)
        elif not pal and len(scan.counts) < 1_000 and scan.files < 200:
            scan.add(label)
        _check_values(pred, label, pred_path, gt_path, num_classes, ignore_index, reduce_zero_label)
        metrics.update(pred, label, tile=key)
    result = metrics.result()
    if scan.files:
        names = list(result.class_names)
        status, verdict, _ = judge_ids(scan, num_classes, names, False, identity=True)
        if status != "pass":
            warnings.append(verdict.replace("dataset.reduce_zero_label: true", "--reduce-zero-label"))
    shifted = _shift_warning(result)
    if shifted:
        warnings.append(shifted)
    warnings.extend(result.boundary_warnings)
    return result


def _reduce_zero_label(label: np.ndarray, C: int, ign: int, path: Path) -> np.ndarray:
    """mmseg's reduce_zero_label: 0 -> ignore, v -> v - 1, 255 stays ignored."""
    lab = label.astype(np.int64)
    out = lab - 1
    out[(lab == 0) | (lab == 255)] = ign
    return out


def _check_values(pred, label, pred_path, gt_path, C: int, ign: int, reduced: bool = False) -> None:
    """Name the file holding a value that is not a class id (the engine would only name the tile)."""

    bad_l = (label != ign) & ((label < 0) | (label >= C))
    if bad_l.any():
        vals = np.unique(label[bad_l])
        hint = ("" if reduced or int(vals.max()) != C else
                f"; labels holding {C} for {C} classes are often mmseg-converted (0 = ignore, 1..{C} = classes): "
                f"pass --reduce-zero-label")
        raise DataError(f"{gt_path}: label values {_vals(vals if not reduced else vals + 1)} are neither class ids "
                        f"0..{C - 1} nor the ignore index {ign} ({int(bad_l.sum())} pixels); check --num-classes / "
                        f"--ignore-index, or convert raw dataset values to class ids{hint}")
    bad_p = (label != ign) & ((pred < 0) | (pred >= C))
    if bad_p.any():
        vals = np.unique(pred[bad_p])
        raise DataError(f"{pred_path}: prediction values {_vals(vals)} are not class ids 0..{C - 1} "
                        f"({int(bad_p.sum())} pixels where the label is valid); check --num-classes")


def _vals(vals) -> str:
    vals = [int(v) for v in vals]
    return "[" + ", ".join(map(str, vals[:10])) + (", ..." if len(vals) > 10 else "") + "]"


def score_cmd(args) -> int:
    import json

    names = None
    if args.class_names:
        names = [n.strip() for n in args.class_names.split(",")]
    background = [n.strip() for n in args.background.split(",")] if args.background else None
    report: dict = {}
    result = score_dirs(args.pred_dir, args.gt_dir, args.num_classes, ignore_index=args.ignore_index,
                        boundary_px=args.boundary_px, boundary_ratio=args.boundary_ratio,
                        border_is_edge=args.border_is_edge, class_names=names, progress=not args.no_progress,
                        palette=args.palette, ignore_colors=args.ignore_colors,
                        reduce_zero_label=args.reduce_zero_label, boundary_strip_px=args.boundary_strip_px,
                        background=background, matched_only=args.matched_only, report=report)
    warnings = report.get("warnings", [])
    if args.json:
        data = result.to_dict()
        data["warnings"] = warnings
        data["unmatched"] = report["unmatched"]
        data["pairs"] = report["pairs"]
        data["colour_twins_skipped"] = report["colour_twins_skipped"]
        print(json.dumps(data, indent=2, allow_nan=False))
    else:
        print(result.table())
        print(f"pairs scored {report['pairs']}" + (f"; {report['colour_twins_skipped']} _color.png picture(s) "
                                                   f"beside id masks skipped" if report["colour_twins_skipped"]
                                                   else ""))
        for kind, paths in report["unmatched"].items():
            if paths:
                print(f"unmatched ({kind.replace('_', ' ')}): {len(paths)}: " + ", ".join(paths[:_LISTED])
                      + (" ..." if len(paths) > _LISTED else ""))
    for w in warnings:
        if not (not args.json and w in result.boundary_warnings):   # the table already prints those
            print(f"warning: {w}", file=sys.stderr)
    return 0
