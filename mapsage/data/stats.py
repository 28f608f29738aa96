"""Pixel statistics of a dataset's masks: per-class counts for class-aware sampling and the ``data inspect`` report.

* :func:`sample_class_counts` - ``int64 [N, C]`` pixels of each class in each sample's whole mask (cached on the
  dataset object); :func:`class_pixel_counts` - their sum ``[C]``. Training's class-aware sampling reads these.
* :func:`scan_dataset` - one record per sample: class counts, ignored pixels by cause (which colour / value),
  colours or values the config does not name, and any problem (unreadable file, size mismatch) - collected, not
  raised, so that one pass reports everything wrong with a dataset.
* :func:`inspect_config` - the report of ``mapsage data inspect``: per split and in total.

Masks are decoded in a small thread pool (PNG decoding and the numpy lookups release the GIL).
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np

from ..config import cfg_source, resolve_path
from ..config.schema import Config
from ..errors import DataError, UserError
from .decode import MaskStats, color_hex, parse_color
from .io import image_size, load_image

ProgressFn = Callable[[int], None]


def _workers(n: int | None) -> int:
    if n:
        return max(1, int(n))
    return max(1, min(4, os.cpu_count() or 1))


def _map(fn, items: Iterable, workers: int, progress: Optional[ProgressFn]):
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        for it in items:
            out = fn(it)
            if progress:
                progress(1)
            yield out
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for out in pool.map(fn, items):
            if progress:
                progress(1)
            yield out


def sample_class_counts(dataset, workers: int | None = None, progress: Optional[ProgressFn] = None) -> np.ndarray:
    """``int64 [N, C]``: pixels of each class in each sample's whole (untransformed) mask. Cached on the dataset.

    Raises :class:`DataError` on an unreadable mask or an unknown colour/value (as training would)."""
    cached = getattr(dataset, "_class_counts", None)
    if cached is not None and len(cached) == len(dataset):
        return cached
    if not dataset.has_masks:
        raise DataError(f"split '{dataset.split}' of {dataset.name} has no masks: no class statistics")

    def one(i: int) -> np.ndarray:
        _, stats = dataset.load_mask_with_stats(i, strict=True)
        return stats.class_counts

    rows = list(_map(one, range(len(dataset)), _workers(workers), progress))
    counts = np.stack(rows).astype(np.int64) if rows else np.zeros((0, dataset.num_classes), np.int64)
    dataset._class_counts = counts
    return counts


def class_pixel_counts(dataset, workers: int | None = None, progress: Optional[ProgressFn] = None) -> np.ndarray:
    """``int64 [C]``: labelled pixels of each class over the whole split."""
    return sample_class_counts(dataset, workers, progress).sum(axis=0)


@dataclass
class SampleScan:
    id: str
    domain: Optional[str]
    stats: Optional[MaskStats]
    image_size: Optional[tuple[int, int]] = None       # (H, W)
    mask_size: Optional[tuple[int, int]] = None
    problems: list[str] = field(default_factory=list)


def scan_sample(dataset, i: int, verify_images: bool = False) -> SampleScan:
    s = dataset.samples[i]
    rec = SampleScan(id=s.id, domain=s.domain, stats=None)
    try:
        if verify_images:
            rec.image_size = tuple(load_image(s.image_path).shape[:2])
        else:
            rec.image_size = image_size(s.image_path)
    except UserError as exc:
        rec.problems.append(str(exc))
    if s.mask_path is not None:
        try:
            mask, stats = dataset.load_mask_with_stats(i, strict=False)
            rec.stats = stats
            rec.mask_size = tuple(mask.shape[:2])
            if stats.unknown:
                listed = ", ".join(f"{k}: {v} px" for k, v in sorted(stats.unknown.items(), key=lambda kv: -kv[1]))
                rec.problems.append(f"{s.mask_path}: {len(stats.unknown)} mask {dataset.decoder.kind}(s) not named "
                                    f"by the config: {listed}")
        except UserError as exc:
            rec.problems.append(str(exc))
    if (rec.image_size and rec.mask_size and rec.image_size != rec.mask_size
            and getattr(getattr(dataset, "ds", None), "type", "") == "part_mask"):
        (h, w), (H, W) = rec.mask_size, rec.image_size
        if not (H % h or W % w) and H // h == W // w:      # part labels are scaled up by a whole factor
            rec.mask_size = rec.image_size
    if rec.image_size and rec.mask_size and rec.image_size != rec.mask_size:
        rec.problems.append(f"{s.mask_path}: mask is {rec.mask_size[1]}x{rec.mask_size[0]} (WxH) but its image "
                            f"{s.image_path} is {rec.image_size[1]}x{rec.image_size[0]}")
    return rec


def scan_dataset(dataset, verify_images: bool = False, workers: int | None = None,
                 progress: Optional[ProgressFn] = None) -> list[SampleScan]:
    """Scan every sample; problems are recorded per sample, never raised."""
    return list(_map(lambda i: scan_sample(dataset, i, verify_images), range(len(dataset)), _workers(workers),
                     progress))


def ignore_causes(ds) -> list[str]:
    """The labels of the config's explicit ignore rules, as the decoders count them."""
    if ds.type == "color_mask":
        return [color_hex(parse_color(c, "dataset.ignore_colors")) for c in ds.ignore_colors]
    return [f"value {int(v)}" for v in ds.ignore_values]


def summarize(scans: list[SampleScan], classes: list[str], causes: list[str] = ()) -> dict:
    """Aggregate sample scans into the report block of one split (or of several). ``causes``: ignore rules that
    are listed even when they affected no pixel."""
    total = MaskStats.zeros(len(classes))
    total.ignored = {c: 0 for c in causes}
    domains: dict[str, int] = {}
    unknown_files: dict[str, int] = {}
    problems = []
    with_masks = 0
    for rec in scans:
        if rec.domain:
            domains[rec.domain] = domains.get(rec.domain, 0) + 1
        if rec.stats is not None:
            with_masks += 1
            total.add(rec.stats)
            for k in rec.stats.unknown:
                unknown_files[k] = unknown_files.get(k, 0) + 1
        for p in rec.problems:
            problems.append({"id": rec.id, "problem": p})
    labelled = int(total.class_counts.sum())
    pixels = int(total.total)
    rows = []
    for i, name in enumerate(classes):
        n = int(total.class_counts[i])
        rows.append({"id": i, "name": name, "pixels": n,
                     "share": n / pixels if pixels else 0.0,
                     "share_labelled": n / labelled if labelled else 0.0})
    ignored = {k: {"pixels": int(v), "share": v / pixels if pixels else 0.0}
               for k, v in sorted(total.ignored.items(), key=lambda kv: -kv[1])}
    unknown = {k: {"pixels": int(v), "share": v / pixels if pixels else 0.0, "files": unknown_files.get(k, 0)}
               for k, v in sorted(total.unknown.items(), key=lambda kv: -kv[1])}
    return {
        "samples": len(scans),
        "with_masks": with_masks,
        "domains": dict(sorted(domains.items())),
        "pixels": pixels,
        "labelled_pixels": labelled,
        "classes": rows,
        "ignored": ignored,
        "ignored_pixels": int(total.ignored_total),
        "unknown": unknown,
        "unknown_pixels": int(total.unknown_total),
        "problems": problems,
    }


def inspect_config(cfg: Config, splits: list[str] | None = None, verify_images: bool = False,
                   progress: bool = True, workers: int | None = None) -> dict:
    """The ``mapsage data inspect`` report (a JSON-able dict)."""
    from .dataset import available_splits, build_dataset
    from .samples import discover_samples

    ds = cfg.dataset
    samples = discover_samples(ds)
    counts = available_splits(cfg, samples)
    if splits:
        from .dataset import resolve_split
        wanted = [resolve_split(ds, s) for s in splits]
    else:
        wanted = list(counts)
    present = [s for s in wanted if counts.get(s, 0) > 0]
    datasets = {s: build_dataset(cfg, s, train=False, samples=samples, cache_mb=0) for s in present}
    n_total = sum(len(d) for d in datasets.values())
    bar = None
    if progress and n_total:
        from tqdm import tqdm
        bar = tqdm(total=n_total, desc=f"scanning {ds.name}", unit="tile", file=sys.stderr, leave=False,
                   dynamic_ncols=True)
    report: dict = {
        "config": cfg_source(cfg),
        "dataset": ds.name,
        "type": ds.type,
        "root": str(resolve_path(ds.root)),
        "classes": list(ds.classes),
        "ignore_index": int(ds.ignore_index),
        "ignore_rules": ({"colors": list(ds.ignore_colors)} if ds.type == "color_mask"
                         else {"values": [int(v) for v in ds.ignore_values]}),
        "split_method": ds.split.method,
        "splits": {},
        "absent_splits": [s for s in wanted if counts.get(s, 0) == 0],
    }
    all_scans: list[SampleScan] = []
    try:
        for name, dset in datasets.items():
            scans = scan_dataset(dset, verify_images=verify_images, workers=workers,
                                 progress=(bar.update if bar else None))
            block = summarize(scans, ds.classes, ignore_causes(ds))
            block["predict_only"] = not dset.has_masks
            if dset.excluded:
                block["excluded_by_leak_list"] = list(dset.excluded)
            if ds.split.method == "by_group":
                block["groups"] = sorted({s.group for s in dset.samples})
            report["splits"][name] = block
            all_scans.extend(scans)
    finally:
        if bar is not None:
            bar.close()
    if len(datasets) > 1:
        report["total"] = summarize(all_scans, ds.classes, ignore_causes(ds))
    report["warnings"] = class_warnings(report)
    report["ok"] = not any(b["problems"] for b in report["splits"].values())
    return report


def class_warnings(report: dict) -> list[str]:
    """Classes with no pixel in any scanned split (the class table and the masks disagree: a wrong class list,
    an off-by-one reading, a colour never mapped), and classes missing from a labelled split."""
    blocks = {n: b for n, b in report["splits"].items() if b.get("with_masks")}
    if not blocks:
        return []
    out = []
    names = [r["name"] for r in next(iter(blocks.values()))["classes"]]
    for i, name in enumerate(names):
        empty = [n for n, b in blocks.items() if b["classes"][i]["pixels"] == 0]
        if len(empty) == len(blocks):
            out.append(f"class {i} '{name}' has no pixels in any scanned split ({', '.join(blocks)}): check "
                       f"dataset.classes against the masks (an id table off by one - mmseg-converted masks need "
                       f"dataset.reduce_zero_label - or a colour/value never mapped to it)")
        elif empty:
            out.append(f"class {i} '{name}' has no pixels in split(s) {', '.join(empty)}: its IoU there is "
                       f"undefined and it is left out of that split's means")
    return out


def format_report(report: dict) -> str:
    """The human-readable text of an inspect report."""
    lines = [f"dataset {report['dataset']} ({report['type']}) at {report['root']}",
             f"config  {report['config']}",
             f"classes {len(report['classes'])}; ignore index {report['ignore_index']}; split method "
             f"{report['split_method']}"]
    rules = report["ignore_rules"]
    if rules.get("colors"):
        lines.append(f"ignored by config: colours {', '.join(rules['colors'])}")
    elif rules.get("values"):
        lines.append(f"ignored by config: raw values {', '.join(str(v) for v in rules['values'])}")
    blocks = list(report["splits"].items())
    if "total" in report:
        blocks.append(("all splits", report["total"]))
    for name, b in blocks:
        lines.append("")
        dom = ", ".join(f"{k} {v}" for k, v in b["domains"].items())
        extra = f" ({dom})" if dom else ""
        only = "  [predict-only: no masks]" if b.get("predict_only") else ""
        lines.append(f"== {name}: {b['samples']} samples, {b['with_masks']} with masks{extra}{only}")
        if b.get("groups"):
            lines.append(f"   groups: {', '.join(b['groups'])}")
        if b.get("excluded_by_leak_list"):
            lines.append(f"   excluded by dataset.leak_list: {len(b['excluded_by_leak_list'])} samples")
        if not b["with_masks"]:
            continue
        lines.append(f"   {'id':>3}  {'class':<16}{'pixels':>14}  {'% all px':>9}  {'% labelled':>10}")
        for r in b["classes"]:
            lines.append(f"   {r['id']:>3}  {r['name']:<16}{r['pixels']:>14,}  {100 * r['share']:>8.2f}%  "
                         f"{100 * r['share_labelled']:>9.2f}%")
        for cause, v in b["ignored"].items():
            lines.append(f"   {'-':>3}  {'ignored ' + cause:<16}{v['pixels']:>14,}  {100 * v['share']:>8.2f}%")
        lines.append(f"        {'all mask pixels':<16}{b['pixels']:>14,}   labelled {b['labelled_pixels']:,}, "
                     f"ignored {b['ignored_pixels']:,}")
        if b["unknown"]:
            lines.append("   UNKNOWN (not in the config's map; training would stop on these):")
            for cause, v in b["unknown"].items():
                lines.append(f"        {cause:<16}{v['pixels']:>14,}  {100 * v['share']:>8.2f}%  in {v['files']} "
                             f"file(s)")
        else:
            lines.append("   unknown colours/values: none")
    problems = [(name, p) for name, b in report["splits"].items() for p in b["problems"]]
    if report["absent_splits"]:
        lines.append("")
        lines.append(f"absent splits (no samples): {', '.join(report['absent_splits'])}")
    lines.append("")
    for w in report.get("warnings", []):
        lines.append(f"WARNING {w}")
    if problems:
        lines.append(f"PROBLEMS: {len(problems)}")
        for name, p in problems[:50]:
            lines.append(f"  [{name}] {p['problem']}")
        if len(problems) > 50:
            lines.append(f"  ... and {len(problems) - 50} more (see --json)")
    else:
        n_warn = len(report.get("warnings", []))
        lines.append("no problems found" + (f"; {n_warn} warning(s) above" if n_warn else ""))
    return "\n".join(lines)
