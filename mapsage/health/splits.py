"""Check 5 — split hygiene: no image in two splits (exactly or nearly), no split unit (tile group) on both sides,
the official splits where the dataset has them, and no id from the leak list in training."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..config import resolve_path
from ..data import load_image
from ..data.hashing import image_hashes, near_pairs
from .context import HealthRun
from .result import CheckResult

OFFICIAL_SPLIT_DATASETS = ("loveda",)


def _read_leak_list(path: Path) -> list[str]:
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(line.split()[0] if "," not in line else line.split(",")[0].strip())
    return ids


def _id_keys(sample) -> set[str]:
    """The names a leak list may use for a sample: its id, its file name and stem (with and without folders)."""
    keys = {str(sample.id)}
    p = Path(str(sample.image_path))
    keys |= {p.name, p.stem}
    sid = str(sample.id)
    keys.add(Path(sid).name)
    keys.add(Path(sid).stem)
    return {k for k in keys if k}


def check_splits(h: HealthRun) -> CheckResult:
    cfg = h.cfg
    hc = cfg.health
    splits = h.splits()
    samples: dict[str, list] = {}          # what is hashed (``health.hash_max_images`` may cap it)
    all_samples: dict[str, list] = {}      # every sample, for the group and leak-list checks
    excluded_by_loader: dict[str, int] = {}
    for split in splits:
        try:
            ds = h.dataset(split, train=False)
        except Exception:   # a missing optional test split is not a hygiene problem
            if split == cfg.dataset.test_split:
                continue
            raise
        samples[split] = list(ds.samples)
        all_samples[split] = list(ds.samples)
        excluded_by_loader[split] = len(getattr(ds, "excluded", []) or [])
    evidence: dict = {"splits": {s: len(v) for s, v in samples.items()}, "phash_distance": hc.phash_distance}
    problems: list[str] = []
    warnings: list[str] = []

    # 1. official splits where the dataset has them
    if cfg.dataset.type in OFFICIAL_SPLIT_DATASETS and cfg.dataset.split.method != "official":
        problems.append(f"{cfg.dataset.type} has official Train/Val/Test folders but dataset.split.method is "
                        f"'{cfg.dataset.split.method}'; set dataset.split.method: official")

    # 2. split units: a group (e.g. one large tile cut into parts) on both sides leaks neighbouring pixels
    group_splits: dict[str, set] = {}
    for split, items in all_samples.items():
        for s in items:
            g = getattr(s, "group", None)
            if g:
                group_splits.setdefault(str(g), set()).add(split)
    shared_groups = {g: sorted(v) for g, v in group_splits.items() if len(v) > 1}
    if shared_groups:
        evidence["groups_in_several_splits"] = shared_groups
        problems.append(f"{len(shared_groups)} split group(s) in several splits (e.g. {next(iter(shared_groups))!r}"
                        f" in {shared_groups[next(iter(shared_groups))]})")

    # 3. exact and near duplicates across splits
    t0 = time.perf_counter()
    hashes: dict[str, list[dict]] = {}
    n_total = sum(len(v) for v in samples.values())
    done = 0
    for split, items in samples.items():
        if hc.hash_max_images is not None:
            items = items[:hc.hash_max_images]
            samples[split] = items
        rows = []
        for s in items:
            if h.should_stop():
                break
            img = load_image(s.image_path)
            rows.append(image_hashes(img))
            done += 1
            if done % 16 == 0:
                h.progress(f"splits: hashed {done}/{n_total} images")
        hashes[split] = rows
    evidence["hashed_images"] = done
    evidence["hash_seconds"] = round(time.perf_counter() - t0, 2)

    exact = []
    near = []
    names = list(hashes)
    for a_i, a in enumerate(names):
        for b in names[a_i + 1:]:
            by_sha: dict[str, list[int]] = {}
            for j, r in enumerate(hashes[b]):
                by_sha.setdefault(r["sha1"], []).append(j)
            for i, r in enumerate(hashes[a]):
                for j in by_sha.get(r["sha1"], []):
                    exact.append({"a": samples[a][i].id, "split_a": a, "b": samples[b][j].id, "split_b": b})
            if not hashes[a] or not hashes[b]:
                continue
            qp = np.stack([r["phash"] for r in hashes[a]])
            qd = np.stack([r["dhash"] for r in hashes[a]])
            rp = np.array([r["phash"][0] for r in hashes[b]], dtype=np.uint64)
            rd = np.array([r["dhash"][0] for r in hashes[b]], dtype=np.uint64)
            exact_pairs = {(e["a"], e["b"]) for e in exact}
            for i, j, dp, dd in near_pairs(qp, qd, rp, rd, hc.phash_distance):
                if (samples[a][i].id, samples[b][j].id) in exact_pairs:
                    continue
                near.append({"a": samples[a][i].id, "split_a": a, "b": samples[b][j].id, "split_b": b,
                             "phash_bits": dp, "dhash_bits": dd})
    evidence["exact_duplicates"] = exact[:50]
    evidence["near_duplicates"] = near[:50]
    evidence["n_exact_duplicates"] = len(exact)
    evidence["n_near_duplicates"] = len(near)
    if exact:
        e = exact[0]
        problems.append(f"{len(exact)} image(s) exactly duplicated across splits (e.g. {e['a']} [{e['split_a']}] = "
                        f"{e['b']} [{e['split_b']}])")
    if near:
        e = near[0]
        problems.append(f"{len(near)} near-duplicate pair(s) across splits (e.g. {e['a']} [{e['split_a']}] ~ "
                        f"{e['b']} [{e['split_b']}], pHash {e['phash_bits']} / dHash {e['dhash_bits']} bits "
                        f"<= {hc.phash_distance})")

    # 4. leak list (e.g. EarthVQA images that duplicate LoveDA ones) against training
    if cfg.dataset.leak_list:
        path = resolve_path(cfg.dataset.leak_list)
        if not path.exists():
            problems.append(f"dataset.leak_list file {path} not found; fix the path or set dataset.leak_list: null")
        else:
            leak_ids = _read_leak_list(path)
            leak_set = set(leak_ids)
            train_items = all_samples.get(cfg.dataset.train_split, [])
            hits = [s.id for s in train_items if _id_keys(s) & leak_set]
            evidence["leak_list"] = {"file": str(path), "ids": len(leak_ids), "found_in_training": hits[:50],
                                     "n_found_in_training": len(hits),
                                     "excluded_by_loader": excluded_by_loader.get(cfg.dataset.train_split, 0)}
            if hits:
                problems.append(f"{len(hits)} id(s) of the leak list {path.name} are in the training split "
                                f"'{cfg.dataset.train_split}' (e.g. {hits[0]})")
    if len(samples) < 2:
        warnings.append("only one split has samples; nothing to compare")

    summary = ", ".join(f"{s} {len(hashes.get(s, []))}" for s in samples)
    if problems:
        return CheckResult("splits", "fail", "; ".join(problems), evidence)
    leak = ""
    if cfg.dataset.leak_list:
        n_ex = excluded_by_loader.get(cfg.dataset.train_split, 0)
        leak = f", no leak-list id in training ({n_ex} excluded by the loader)"
    verdict = (f"no exact or near-duplicate image across splits ({summary} images; content hash, pHash/dHash "
               f"<= {hc.phash_distance} bits incl. flips/rotations), no split group on two sides{leak}")
    if warnings:
        return CheckResult("splits", "warn", verdict + "; " + "; ".join(warnings), evidence)
    return CheckResult("splits", "pass", verdict, evidence)
