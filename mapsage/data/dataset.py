"""``SegDataset`` and ``build_dataset(cfg, split, train=False)``.

``dataset[i]`` is a dict: ``image`` float32 ``[3, H, W]`` normalised with the backbone's mean/std, ``mask`` int64
``[H, W]`` (class ids ``0..C-1``, ignore index elsewhere; absent for predict-only splits), ``id``, ``domain``
(``""`` when the dataset has none, so that the default collate works), ``path`` (the image file).
``train=True`` applies :func:`mapsage.data.transforms.build_train_transform`; ``train=False`` returns the whole
tile untouched.

Decoded masks are kept in a per-dataset LRU cache (``cache_mb``, 64 MiB by default, per process - each DataLoader
worker fills its own; 0 turns it off). Augmentation randomness is
seeded per process from ``train.seed`` and ``torch.initial_seed()`` (which DataLoader workers get as base seed +
worker id), so runs with the same seed see the same crops, and workers never repeat each other.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import ConfigError, resolve_path
from ..config.schema import Config, DatasetCfg
from ..errors import DataError
from .decode import MaskDecoder, MaskStats, decoder_for
from .io import load_image
from .normalization import get_normalization, normalize_image
from .samples import Sample, discover_samples
from .splits import assign_splits, split_names


class SegDataset:
    """A map-style dataset (``len`` + indexing), usable with ``torch.utils.data.DataLoader``. torch is imported only
    when an item is built, so listing and scanning a dataset (``mapsage data inspect``, the app) stay light."""

    def __init__(self, samples: list[Sample], cfg: Config, split: str, *, train: bool = False,
                 decoder: MaskDecoder | None = None, cache_mb: float = 64, excluded: list[str] | None = None):
        self.samples = list(samples)
        self.cfg = cfg
        self.ds: DatasetCfg = cfg.dataset
        self.split = split
        self.train = train
        self.decoder = decoder or decoder_for(self.ds)
        self.classes = list(self.ds.classes)
        self.num_classes = self.ds.num_classes
        self.ignore_index = int(self.ds.ignore_index)
        self.palette = list(self.ds.palette)
        self.name = self.ds.name
        self.has_masks = all(s.mask_path is not None for s in self.samples)
        self.excluded = list(excluded or [])           # ids dropped by dataset.leak_list
        self._norm: tuple | None = None             # (mean, std), resolved on first use
        if train and not self.has_masks:
            raise DataError(f"split '{split}' of {self.name} has no masks (predict-only); it cannot be used for "
                            f"training - set dataset.train_split to a labelled split")
        self.transform = None
        if train:
            from .transforms import build_train_transform
            self.transform = build_train_transform(cfg)
        self._cache_bytes = int(cache_mb * 2 ** 20)
        self._cache: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self._cached = 0
        self._seed_key: tuple | None = None
        self._class_counts: Optional[np.ndarray] = None      # [N, C], filled by stats.sample_class_counts

    def __getstate__(self):      # spawned DataLoader workers start with an empty mask cache
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        state["_cached"] = 0
        state["_seed_key"] = None
        return state

    @property
    def mean(self) -> tuple[float, float, float]:
        """Normalisation mean (0..1 scale) from the backbone's pretrained config or ``model.mean``."""
        if self._norm is None:
            self._norm = get_normalization(self.cfg)
        return self._norm[0]

    @property
    def std(self) -> tuple[float, float, float]:
        if self._norm is None:
            self._norm = get_normalization(self.cfg)
        return self._norm[1]

    # ----------------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (f"SegDataset({self.name!r}, split={self.split!r}, n={len(self)}, train={self.train}, "
                f"classes={self.num_classes})")

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def index_of(self, sample_id: str) -> int:
        for i, s in enumerate(self.samples):
            if s.id == sample_id:
                return i
        raise KeyError(sample_id)

    # ----------------------------------------------------------------------------------------------------------
    def load_image(self, i: int) -> np.ndarray:
        return load_image(self.samples[i].image_path)

    def load_mask(self, i: int, strict: bool = True) -> Optional[np.ndarray]:
        """The decoded mask ``uint8 [H, W]`` (class ids / ignore index), cached; None for predict-only."""
        s = self.samples[i]
        corrected = getattr(self, "label_overrides", None) or {}
        if s.id in corrected:          # a reviewer's correction (dataset.label_version) replaces the label
            from .label_versions import read_correction

            return read_correction(corrected[s.id])
        if s.mask_path is None:
            return None
        if strict and i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        mask, _ = self.decoder.load(s.mask_path, strict=strict)
        if strict and self._cache_bytes > 0 and mask.nbytes <= self._cache_bytes:
            mask.setflags(write=False)       # a transform that wrote into it would corrupt every later epoch
            self._cache[i] = mask
            self._cached += mask.nbytes
            while self._cached > self._cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= old.nbytes
        return mask

    def load_mask_with_stats(self, i: int, strict: bool = True) -> tuple[np.ndarray, MaskStats]:
        s = self.samples[i]
        if s.mask_path is None:
            raise DataError(f"{s.image_path}: sample {s.id} has no mask (predict-only split '{self.split}')")
        return self.decoder.load(s.mask_path, strict=strict)

    def load_pair(self, i: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """``(image uint8 [H, W, 3], mask uint8 [H, W] or None)``, sizes checked."""
        s = self.samples[i]
        image = self.load_image(i)
        mask = self.load_mask(i)
        if mask is not None and self.ds.type == "part_mask" and mask.shape != image.shape[:2]:
            from .parts import fit_to_image
            mask = fit_to_image(mask, image.shape[:2], s.mask_path)
        if mask is not None and mask.shape != image.shape[:2]:
            raise DataError(f"{s.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                            f"{s.image_path} is {image.shape[1]}x{image.shape[0]}; image and mask of a pair must "
                            f"have the same size - fix or remove the pair")
        return image, mask

    # ----------------------------------------------------------------------------------------------------------
    def _ensure_seed(self) -> None:
        if self.transform is None:
            return
        import torch
        key = (os.getpid(), torch.initial_seed())
        if key != self._seed_key:
            self._seed_key = key
            self.transform.set_random_seed((int(self.cfg.train.seed) * 1_000_003 + torch.initial_seed()) % 2 ** 32)

    def _generators(self) -> list:
        """(numpy Generator, random.Random) of the pipeline and of every transform in it: albumentations seeds
        each transform's own pair."""
        out, todo = [], [self.transform]
        while todo:
            t = todo.pop(0)
            if getattr(t, "random_generator", None) is not None and getattr(t, "py_random", None) is not None:
                out.append((t.random_generator, t.py_random))
            todo.extend(getattr(t, "transforms", None) or [])
        return out

    def augment_state(self) -> list | None:
        """The augmentation generators' state (this process's), for a mid-epoch checkpoint; plain ints and lists
        only."""
        if self.transform is None or self._seed_key is None:
            return None
        out = []
        for rng, py in self._generators():
            v, internal, gauss = py.getstate()
            out.append({"np": rng.bit_generator.state, "py": [v, list(internal), gauss]})
        return out

    def set_augment_state(self, state: list | None) -> None:
        """Continue the augmentation generators from :meth:`augment_state` (same process, same torch seed)."""
        if self.transform is None or not state:
            return
        import torch
        self._ensure_seed()
        self._seed_key = (os.getpid(), torch.initial_seed())
        gens = self._generators()
        if len(gens) != len(state):
            return          # another pipeline than the one saved: keep the fresh seeds
        for (rng, py), saved in zip(gens, state):
            rng.bit_generator.state = saved["np"]
            v, internal, gauss = saved["py"]
            py.setstate((v, tuple(internal), gauss))

    def __getitem__(self, i: int) -> dict:
        import torch

        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        s = self.samples[i]
        image, mask = self.load_pair(i)
        out: dict = {}
        if self.transform is not None:
            self._ensure_seed()
            out = self.transform(image=image, mask=mask, **self._extra_targets(image))
            image, mask = out["image"], out["mask"]
        item = {"image": normalize_image(image, self.mean, self.std), "id": s.id, "domain": s.domain or "",
                "path": str(s.image_path), **self._extra_items(out)}
        if mask is not None:
            item["mask"] = torch.from_numpy(mask.astype(np.int64))    # a copy: the cached mask stays intact
        return item

    # hooks for datasets that carry one more target through the same transform (distillation's teacher view)
    def _extra_targets(self, image: np.ndarray) -> dict:
        """Extra named inputs of the training transform for this image (none here)."""
        return {}

    def _extra_items(self, transformed: dict) -> dict:
        """Extra entries of the item, from the transform's output (none here)."""
        return {}


# --------------------------------------------------------------------------------------------------------------


def _read_leak_list(ds: DatasetCfg) -> set[str]:
    if not ds.leak_list:
        return set()
    path = resolve_path(ds.leak_list)
    if not path.is_file():
        raise DataError(f"dataset.leak_list: {path} not found")
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line)
    return names


def _leaks(sample: Sample, names: set[str]) -> bool:
    p = Path(sample.image_path)
    return bool({sample.id, sample.group, p.name, p.stem} & names)


def resolve_split(ds: DatasetCfg, split: str) -> str:
    names = split_names(ds)
    for n in names:
        if n == split or n.lower() == str(split).lower():
            return n
    raise ConfigError(f"split {split!r} is not one of {names} (dataset.split / dataset.splits of {ds.name}); "
                      f"check dataset.train_split / dataset.val_split / eval.split")


def build_dataset(cfg: Config, split: str, train: bool = False, *, domain: str | None = None,
                  samples: list[Sample] | None = None, cache_mb: float = 64) -> SegDataset:
    """The samples of one split (optionally one domain), as a :class:`SegDataset`.

    ``samples`` lets a caller that already listed the dataset (:func:`discover_samples`) skip the listing."""
    ds = cfg.dataset
    name = resolve_split(ds, split)
    all_samples = discover_samples(ds) if samples is None else samples
    assignment = assign_splits(all_samples, ds)
    chosen = [s if s.split == assignment[s.id] else _with_split(s, assignment[s.id])
              for s in all_samples if assignment[s.id] == name]
    if domain is not None:
        known = sorted({s.domain for s in all_samples if s.domain} | set(ds.domains))
        if domain not in known and domain.lower() not in [k.lower() for k in known]:
            raise ConfigError(f"domain {domain!r} is not in {ds.name} (its domains: {known or 'none'})")
        chosen = [s for s in chosen if s.domain and s.domain.lower() == domain.lower()]
    excluded: list[str] = []
    if name == ds.train_split:
        leak = _read_leak_list(ds)
        if leak:
            excluded = [s.id for s in chosen if _leaks(s, leak)]
            chosen = [s for s in chosen if not _leaks(s, leak)]
    split_total = len(chosen)                  # the whole split, before dataset.max_samples trims it
    if ds.max_samples is not None:
        chosen = chosen[: max(0, int(ds.max_samples))]
    if not chosen:
        where = resolve_path(ds.root)
        if ds.type == "loveda":
            folder = next((f for f in ds.splits if f.lower() == name), name)
            where = where / folder
        raise DataError(f"split '{name}'{f' / domain {domain}' if domain else ''} of {ds.name} has no samples "
                        f"(looked under {where}); check dataset.root and dataset.split")
    dataset = SegDataset(chosen, cfg, name, train=train, cache_mb=cache_mb, excluded=excluded)
    if getattr(ds, "label_version", None):
        from .label_versions import labels_root, resolve

        dataset.label_overrides = resolve(labels_root(ds), ds.label_version)
    dataset.split_total = split_total          # evaluations on fewer tiles are subsets (mapsage.evalid)
    return dataset


def _with_split(s: Sample, split: str) -> Sample:
    return Sample(id=s.id, image_path=s.image_path, mask_path=s.mask_path, domain=s.domain, group=s.group,
                  split=split)


def available_splits(cfg: Config, samples: list[Sample] | None = None) -> dict[str, int]:
    """``{split name: number of samples}`` for every split the config names (0 where a split is empty/absent)."""
    ds = cfg.dataset
    all_samples = discover_samples(ds) if samples is None else samples
    assignment = assign_splits(all_samples, ds)
    out = {n: 0 for n in split_names(ds)}
    for v in assignment.values():
        out[v] = out.get(v, 0) + 1
    return out
