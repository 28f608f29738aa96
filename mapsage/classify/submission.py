"""The classification submission format and its validator.

``submission.csv``: a header ``filename,category_id,confidence`` (or ``filename,category_id``), one row per test
image. Valid when every image of the test folder appears exactly once, no other file is named, every
``category_id`` is a known id and every confidence is a number in [0, 1]. :func:`check_submission` lists every
problem, each one line naming the row; :func:`score_submission` scores a valid file against an answer key.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Optional, Sequence

HEADERS = (["filename", "category_id", "confidence"], ["filename", "category_id"])


def check_submission(path: str | Path, images: Iterable[str], known_ids: Sequence[int], limit: int = 20) -> list[str]:
    """Problems of the submission at ``path`` against the test file names ``images``; empty when valid."""
    path = Path(path)
    if not path.is_file():
        return [f"{path}: file not found"]
    want = set(images)
    known = {int(i) for i in known_ids}
    problems: list[str] = []
    seen: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return [f"{path}: empty file; the first line must be {','.join(HEADERS[0])}"]
    header = [h.strip() for h in rows[0]]
    if header not in HEADERS:
        return [f"{path}:1: header {','.join(header)!s} must be {','.join(HEADERS[0])} (or without confidence)"]
    width = len(header)
    for n, row in enumerate(rows[1:], start=2):
        if len(problems) >= limit:
            problems.append(f"... more problems after line {n - 1}")
            break
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != width:
            problems.append(f"{path}:{n}: {len(row)} fields, expected {width}")
            continue
        fname = row[0].strip()
        if fname in seen:
            problems.append(f"{path}:{n}: {fname} already on line {seen[fname]} (every test image exactly once)")
            continue
        seen[fname] = n
        if fname not in want:
            problems.append(f"{path}:{n}: {fname} is not a test image")
        try:
            cid = int(row[1].strip())
            if cid not in known:
                problems.append(f"{path}:{n}: category_id {cid} is not a known id {sorted(known)}")
        except ValueError:
            problems.append(f"{path}:{n}: category_id {row[1]!r} is not an integer")
        if width == 3:
            try:
                c = float(row[2])
                if not 0.0 <= c <= 1.0:
                    problems.append(f"{path}:{n}: confidence {c} outside [0, 1]")
            except ValueError:
                problems.append(f"{path}:{n}: confidence {row[2]!r} is not a number")
    missing = sorted(want - set(seen))
    if missing:
        problems.append(f"{path}: {len(missing)} test image(s) missing, e.g. {', '.join(missing[:3])}")
    return problems


def score_submission(path: str | Path, labels_csv: str | Path, category_ids: Sequence[int],
                     class_names: Optional[Sequence[str]] = None) -> dict:
    """Top-1 and macro F1 of a submission against an answer key (``filename,category_id``)."""
    import numpy as np

    from ..metrics.classification import classification_metrics

    index = {int(c): i for i, c in enumerate(category_ids)}
    with open(labels_csv, newline="", encoding="utf-8-sig") as fh:
        truth = {r["filename"]: index[int(r["category_id"])] for r in csv.DictReader(fh)}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        sub = {r["filename"]: index[int(r["category_id"])] for r in csv.DictReader(fh)}
    files = sorted(truth)
    probs = np.zeros((len(files), len(category_ids)))
    for i, f in enumerate(files):
        probs[i, sub[f]] = 1.0
    res = classification_metrics(probs, [truth[f] for f in files], class_names)
    return {"top1": res.top1, "macro_f1": res.macro_f1, "n_images": res.n_images}
