"""Split assignment: which sample belongs to train / val / test, deterministically, and saved with each run.

``dataset.split.method``:

* ``official`` - the dataset's own folders (LoveDA ``Train/Val/Test`` -> ``train/val/test``). Nothing is mixed.
* ``by_group`` - whole groups (``dataset.split.group_regex`` on the sample id: a Dubai tile, a scene) go to one
  split, never parts of one group to two. ``dataset.split.assign`` ({split: [groups]}) fixes the assignment
  explicitly; otherwise ``ratios`` are applied to the number of groups: groups are ordered by a hash of
  ``(seed, group name)`` - stable for a group whatever else is in the folder - and cut into consecutive runs
  whose sizes follow the ratios (largest remainder, at least one group per split with a non-zero ratio).
* ``list`` - ``dataset.split.list_file``: lines ``sample_id split``, or a ``split.json`` saved by a former run
  (to reproduce its split exactly).

:func:`save_split` writes ``split.json`` into a run folder: the method, its parameters, each split's groups and
sample ids, so that a run's split can be audited and re-used.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from collections import OrderedDict
from pathlib import Path

from ..config import ConfigError, resolve_path
from ..config.schema import Config, DatasetCfg
from ..errors import DataError
from .samples import Sample, discover_samples

SPLIT_FILE = "split.json"


def _hash_key(seed: int, group: str) -> str:
    return hashlib.sha256(f"{seed}:{group}".encode("utf-8")).hexdigest()


def _allocate(n: int, ratios: "OrderedDict[str, float]") -> dict[str, int]:
    """Split ``n`` items into counts following ``ratios`` (largest remainder; a non-zero ratio gets >= 1)."""
    raw = {k: r * n for k, r in ratios.items()}
    counts = {k: int(v) for k, v in raw.items()}
    left = n - sum(counts.values())
    order = sorted(ratios, key=lambda k: (-(raw[k] - counts[k]), list(ratios).index(k)))
    for k in order[:left]:
        counts[k] += 1
    wanted = [k for k, r in ratios.items() if r > 0]
    if n >= len(wanted):
        for k in wanted:
            if counts[k] == 0:
                donor = max(counts, key=lambda d: counts[d])
                counts[donor] -= 1
                counts[k] += 1
    return counts


def _by_group(samples: list[Sample], ds: DatasetCfg) -> dict[str, str]:
    groups = sorted({s.group for s in samples})
    sc = ds.split
    group_split: dict[str, str] = {}
    if sc.assign:
        for split, names in sc.assign.items():
            for g in names:
                g = str(g)
                if g not in groups:
                    near = difflib.get_close_matches(g, groups, n=1)
                    hint = f"; did you mean {near[0]!r}?" if near else f"; groups are {groups[:10]}"
                    raise ConfigError(f"dataset.split.assign.{split}: group {g!r} matches no sample{hint}")
                if g in group_split and group_split[g] != split:
                    raise ConfigError(f"dataset.split.assign: group {g!r} is listed under both "
                                      f"'{group_split[g]}' and '{split}'; a group goes to one split only")
                group_split[g] = split
        left = [g for g in groups if g not in group_split]
        if left:
            raise ConfigError(f"dataset.split.assign leaves group(s) {left} without a split; list every group "
                              f"(or drop 'assign' to split by ratios)")
    else:
        ratios = OrderedDict((k, float(v)) for k, v in sc.ratios.items())
        if any(v < 0 for v in ratios.values()):
            raise ConfigError(f"dataset.split.ratios must be >= 0, got {dict(ratios)}")
        order = sorted(groups, key=lambda g: _hash_key(sc.seed, g))
        counts = _allocate(len(order), ratios)
        i = 0
        for split, n in counts.items():
            for g in order[i: i + n]:
                group_split[g] = split
            i += n
    return {s.id: group_split[s.group] for s in samples}


def _read_list_file(ds: DatasetCfg) -> dict[str, str]:
    if not ds.split.list_file:
        raise ConfigError("dataset.split.method is 'list' but dataset.split.list_file is not set; name a file of "
                          "'sample_id split' lines or a split.json from a former run")
    path = resolve_path(ds.split.list_file)
    if not path.is_file():
        raise DataError(f"dataset.split.list_file: {path} not found")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return {sid: split for split, ids in data["samples"].items() for sid in ids}
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{path}: not a split.json written by save_split ({exc})") from exc
    mapping: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        sid, sep, split = line.rpartition(" ")
        if not sep or not sid.strip():
            sid, sep, split = line.rpartition("\t")
        if not sep or not sid.strip():
            raise DataError(f"{path}:{n}: expected 'sample_id split', got {line!r}")
        mapping[sid.strip()] = split.strip()
    return mapping


def _by_list(samples: list[Sample], ds: DatasetCfg) -> dict[str, str]:
    mapping = _read_list_file(ds)
    ids = {s.id for s in samples}
    stale = [k for k in mapping if k not in ids]
    if stale:
        raise DataError(f"dataset.split.list_file: {len(stale)} listed id(s) match no sample, e.g. {stale[:5]}; "
                        f"the list does not belong to this dataset.root")
    unlisted = [s.id for s in samples if s.id not in mapping]
    if unlisted:
        raise DataError(f"dataset.split.list_file: {len(unlisted)} sample(s) are not listed, e.g. {unlisted[:5]}; "
                        f"give every sample a split")
    return {s.id: mapping[s.id] for s in samples}


def assign_splits(samples: list[Sample], ds: DatasetCfg) -> dict[str, str]:
    """``{sample id: split name}`` for every sample."""
    method = ds.split.method
    if ds.type == "loveda" and method != "official":
        raise ConfigError(f"dataset.split.method: LoveDA uses its official Train/Val/Test folders only (the plan "
                          f"forbids re-splitting it); set dataset.split.method: official, not {method!r}")
    if method == "official":
        if ds.type != "loveda":
            raise ConfigError(f"dataset.split.method: 'official' needs the LoveDA folder layout (dataset.type: "
                              f"loveda); for a {ds.type} folder use by_group or list")
        return {s.id: s.split for s in samples}
    if method == "by_group":
        if ds.split.folds:
            return _by_fold(samples, ds, _by_group(samples, ds))
        return _by_group(samples, ds)
    return _by_list(samples, ds)


def _by_fold(samples: list[Sample], ds: DatasetCfg, base: dict[str, str]) -> dict[str, str]:
    """k-fold (``split.folds``): the train + val pool cut into grouped, stratified folds (mapsage.data.folds);
    fold ``split.fold`` is the val split, the rest train; other splits (test) stay as ``base`` has them."""
    from .folds import assign_folds

    pool = [s for s in samples if base[s.id] in (ds.train_split, ds.val_split)]
    folds = assign_folds(pool, ds, int(ds.split.folds), seed=int(ds.split.seed),
                         near_dup_bits=int(ds.split.near_dup_bits))
    out = dict(base)
    for s in pool:
        out[s.id] = ds.val_split if folds[s.id] == int(ds.split.fold) else ds.train_split
    return out


def split_names(ds: DatasetCfg) -> list[str]:
    """The split names a config can ask for (whether or not they hold samples)."""
    if ds.split.method == "official":
        return [s.lower() for s in ds.splits]
    if ds.split.method == "by_group":
        return list(ds.split.assign) if ds.split.assign else list(ds.split.ratios)
    return sorted(set(_read_list_file(ds).values()))


def _dataset_cfg(cfg) -> DatasetCfg:
    return cfg.dataset if isinstance(cfg, Config) else cfg


def split_table(dataset_cfg, samples: list[Sample] | None = None) -> dict:
    """The split assignment as saved in ``split.json``."""
    ds = _dataset_cfg(dataset_cfg)
    samples = discover_samples(ds) if samples is None else samples
    assignment = assign_splits(samples, ds)
    names = split_names(ds)
    names += sorted({v for v in assignment.values() if v not in names})
    out_samples = {n: [] for n in names}
    out_groups: dict[str, list[str]] = {n: [] for n in names}
    for s in samples:
        split = assignment[s.id]
        out_samples[split].append(s.id)
        if s.group not in out_groups[split]:
            out_groups[split].append(s.group)
    split_of_group: dict[str, set] = {}
    for s in samples:
        split_of_group.setdefault(s.group, set()).add(assignment[s.id])
    shared = sorted(g for g, v in split_of_group.items() if len(v) > 1)
    return {
        "dataset": ds.name,
        "type": ds.type,
        "root": str(resolve_path(ds.root)),
        "method": ds.split.method,
        "seed": ds.split.seed if ds.split.method == "by_group" else None,
        "group_regex": ds.split.group_regex if ds.split.method == "by_group" else None,
        "ratios": dict(ds.split.ratios) if ds.split.method == "by_group" and not ds.split.assign else None,
        "folds": {"k": ds.split.folds, "fold": ds.split.fold, "near_dup_bits": ds.split.near_dup_bits}
        if ds.split.folds else None,
        "assign": {k: list(v) for k, v in ds.split.assign.items()} or None,
        "counts": {n: len(v) for n, v in out_samples.items()},
        "groups": out_groups,
        "groups_in_several_splits": shared,
        "samples": out_samples,
    }


def save_split(dataset_cfg, run_dir: str | Path) -> Path:
    """Write ``split.json`` (see :func:`split_table`) into ``run_dir``; returns its path."""
    table = split_table(dataset_cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / SPLIT_FILE
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out)
    return out


def load_split(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / SPLIT_FILE
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    return json.loads(path.read_text(encoding="utf-8"))
