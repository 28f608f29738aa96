"""Classification data: images with a labels CSV (``filename,category_id``) or a class-per-folder tree.

The ``category_id -> class index`` mapping is kept (``classify.category_ids``, aligned with ``dataset.classes``),
so a submission carries the organisers' ids, never the model's 0-based indices. Every sample has a group (the CSV's
``classify.group_column``, e.g. the source tile a patch was cut from; the filename otherwise): splits and k-fold
CV keep a group whole, and ``dataset.split.group_regex`` may coarsen it further (it is applied to
``<group>/<filename>``).
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import ConfigError, resolve_path
from ..errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


@dataclass
class ClsSample:
    id: str                  # the filename relative to the image folder (what a submission names)
    image_path: Path
    label: Optional[int]     # class index 0..C-1 (None: unlabelled)
    group: str               # the unit kept whole in one split / fold
    split: Optional[str] = None
    # what mapsage.data.folds expects of a sample
    mask_path: Optional[Path] = None
    domain: Optional[str] = None


def dataset_root(cfg) -> Path:
    return resolve_path(cfg.dataset.root)


def category_ids(cfg) -> list[int]:
    """The category id of each class index."""
    ids = list(cfg.classify.category_ids)
    c = len(cfg.dataset.classes)
    if ids and len(ids) != c:
        raise ConfigError(f"classify.category_ids has {len(ids)} ids for {c} dataset.classes; give one id per "
                          f"class, in the order of dataset.classes")
    return ids or list(range(c))


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found; set classify.images (relative to dataset.root)")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_samples(cfg) -> list[ClsSample]:
    """Every labelled training image of the config's dataset (before splits)."""
    root = dataset_root(cfg)
    ccfg = cfg.classify
    folder = root / ccfg.images
    classes = list(cfg.dataset.classes)
    if ccfg.layout == "folders":
        names = {n: i for i, n in enumerate(classes)}
        out = []
        for p in list_images(folder):
            rel = p.relative_to(folder)
            if len(rel.parts) < 2:
                raise DataError(f"{p}: a class-per-folder dataset keeps every image in a class folder "
                                f"(<classify.images>/<class>/<file>)")
            cls = rel.parts[0]
            if cls not in names:
                raise DataError(f"{folder / cls}: folder {cls!r} is not a class in dataset.classes {classes}; add "
                                f"it or remove the folder")
            out.append(ClsSample(str(rel), p, names[cls], str(rel)))
        if not out:
            raise DataError(f"{folder}: no images in class folders")
        return _regroup(cfg, out)
    path = root / ccfg.labels_csv
    if not path.is_file():
        raise DataError(f"{path}: labels file not found; set classify.labels_csv (relative to dataset.root)")
    ids = category_ids(cfg)
    index = {int(cid): i for i, cid in enumerate(ids)}
    out, seen = [], set()
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        for need in ("filename", "category_id"):
            if need not in cols:
                raise DataError(f"{path}: no {need!r} column (columns: {cols}); the file needs filename,category_id")
        group_col = ccfg.group_column if ccfg.group_column in cols else ""
        for n, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            fname = row["filename"]
            try:
                cid = int(float(row["category_id"]))
            except ValueError:
                raise DataError(f"{path}:{n}: category_id {row['category_id']!r} is not an integer") from None
            if cid not in index:
                raise DataError(f"{path}:{n}: category_id {cid} is not in classify.category_ids {ids}; add it "
                                f"(with its class in dataset.classes) or fix the row")
            if fname in seen:
                raise DataError(f"{path}:{n}: {fname} is listed twice")
            seen.add(fname)
            p = folder / fname
            if not p.is_file():
                raise DataError(f"{path}:{n}: image {p} not found (filenames are relative to {folder})")
            out.append(ClsSample(fname, p, index[cid], row.get(group_col) or fname if group_col else fname))
    if not out:
        raise DataError(f"{path}: no rows")
    return _regroup(cfg, out)


def _regroup(cfg, samples: list[ClsSample]) -> list[ClsSample]:
    """Apply ``dataset.split.group_regex`` to ``<group>/<filename>`` when it matches (a coarser unit, e.g. the
    scene a source tile belongs to); the group stays as it is otherwise."""
    rx = cfg.dataset.split.group_regex
    if not rx:
        return samples
    pat = re.compile(rx)
    for s in samples:
        m = pat.search(f"{s.group}/{s.id}")
        if m and "group" in m.groupdict() and m.group("group"):
            s.group = m.group("group")
    return samples


def assign_splits(cfg, samples: list[ClsSample]) -> list[ClsSample]:
    """``train``/``val`` on every sample: k-fold (``dataset.split.folds``; stratified by label, whole groups,
    near-duplicates joined -- :func:`mapsage.data.folds.assign_folds`) or a seeded group split by ``ratios``."""
    sp = cfg.dataset.split
    if sp.folds and sp.folds > 1:
        folds = fold_of(cfg, samples)
        for s in samples:
            s.split = "val" if folds[s.id] == sp.fold else "train"
        return samples
    groups = sorted({s.group for s in samples})
    rng = np.random.default_rng(sp.seed)
    order = list(rng.permutation(len(groups)))
    n_val = max(1, int(round(len(groups) * float(sp.ratios.get("val", 0.25)))))
    val = {groups[i] for i in order[:n_val]}
    for s in samples:
        s.split = "val" if s.group in val else "train"
    return samples


def fold_of(cfg, samples: list[ClsSample]) -> dict[str, int]:
    from ..data.folds import assign_folds

    sp = cfg.dataset.split
    c = len(cfg.dataset.classes)
    presence = np.zeros((len(samples), c), dtype=bool)
    for i, s in enumerate(samples):
        presence[i, s.label] = True
    return assign_folds(samples, cfg.dataset, int(sp.folds), int(sp.seed), int(sp.near_dup_bits), presence=presence)


def split_samples(cfg) -> tuple[list[ClsSample], list[ClsSample]]:
    samples = assign_splits(cfg, read_samples(cfg))
    train = [s for s in samples if s.split == "train"]
    val = [s for s in samples if s.split == "val"]
    if cfg.classify.max_images:
        rng = np.random.default_rng(cfg.train.seed)
        keep = sorted(rng.permutation(len(train))[: int(cfg.classify.max_images)])
        train = [train[i] for i in keep]
    if not train or not val:
        raise DataError(f"dataset {cfg.dataset.name}: the split gave {len(train)} training and {len(val)} validation "
                        f"images; check dataset.split")
    return train, val


def class_counts(samples: list[ClsSample], num_classes: int) -> np.ndarray:
    return np.bincount([s.label for s in samples], minlength=num_classes)


def load_rgb(path: Path) -> np.ndarray:
    from ..data.io import load_image

    return load_image(path)


class ClsDataset:
    """``dataset[i]`` -> ``{"image": float32 [3,S,S] normalised, "label": int, "id": str, "index": i}``.

    Training: RandomResizedCrop (``classify.rrc_scale``), flips, 90-degree rotations, colour jitter
    (``augment.color_jitter``), timm's RandAugment (``classify.randaugment``), random erasing
    (``augment.random_erasing_p``); evaluation: a resize to the size.
    ``size`` can change between epochs (progressive resolution)."""

    def __init__(self, samples: list[ClsSample], cfg, train: bool, size: int, mean, std, corruption=None):
        self.samples = samples
        self.cfg = cfg
        self.train = train
        self.mean = np.asarray(mean, np.float32) * 255.0
        self.std = np.asarray(std, np.float32) * 255.0
        self.corruption = corruption          # (name, severity): evaluation on corrupted copies
        self.set_size(size)

    def set_size(self, size: int) -> None:
        import albumentations as A

        self.size = int(size)
        a, c = self.cfg.augment, self.cfg.classify
        if self.train:
            ops = [A.RandomResizedCrop(size=(self.size, self.size), scale=tuple(c.rrc_scale), p=1.0)]
            if a.hflip:
                ops.append(A.HorizontalFlip(p=a.hflip))
            if a.vflip:
                ops.append(A.VerticalFlip(p=a.vflip))
            if c.rotate90:
                ops.append(A.RandomRotate90(p=0.5))
            if a.color_jitter_p > 0:
                b, ct, s, h = (list(a.color_jitter) + [0, 0, 0, 0])[:4]
                ops.append(A.ColorJitter(brightness=b, contrast=ct, saturation=s, hue=h, p=a.color_jitter_p))
            # seeded per size change (num_workers 0: one stream); with loader workers albumentations reseeds each
            self.tf = A.Compose(ops, seed=int(self.cfg.train.seed) + self.size)
        else:
            self.tf = A.Compose([A.Resize(self.size, self.size)])
        self.erase_p = float(a.random_erasing_p) if self.train else 0.0
        self.randaug = None
        if self.train and c.randaugment:
            from timm.data.auto_augment import rand_augment_transform

            mean = tuple(int(round(v)) for v in np.clip(self.mean, 0, 255))
            self.randaug = rand_augment_transform(str(c.randaugment), {"translate_const": int(self.size * 0.45),
                                                                       "img_mean": mean})

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        import torch

        s = self.samples[i]
        img = load_rgb(s.image_path)
        if self.corruption is not None:
            from ..reliability.corruptions import corrupt

            img = corrupt(img, self.corruption[0], int(self.corruption[1]), s.id).image
        img = self.tf(image=img)["image"]
        if self.randaug is not None:
            from PIL import Image

            img = np.asarray(self.randaug(Image.fromarray(np.ascontiguousarray(img))), dtype=np.uint8)
        x = (img.astype(np.float32) - self.mean) / self.std
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
        if self.erase_p > 0:
            from timm.data.random_erasing import RandomErasing

            lo, hi = self.cfg.augment.random_erasing_scale
            t = RandomErasing(probability=self.erase_p, min_area=lo, max_area=hi, mode="pixel", device="cpu")(t)
        return {"image": t, "label": -1 if s.label is None else int(s.label), "id": s.id, "index": i}


def normalization(cfg) -> tuple[tuple, tuple]:
    """(mean, std) in 0..1: ``model.mean/std`` when set, else the timm model's pretrained config."""
    if cfg.model.mean and cfg.model.std:
        return tuple(cfg.model.mean), tuple(cfg.model.std)
    try:
        import timm

        pc = timm.models.get_pretrained_cfg(cfg.classify.model)
        if pc is not None:
            d = pc.to_dict() if hasattr(pc, "to_dict") else dict(pc)
            return tuple(d.get("mean") or (0.485, 0.456, 0.406)), tuple(d.get("std") or (0.229, 0.224, 0.225))
    except Exception:  # noqa: BLE001 - an unknown name is reported where the model is built
        pass
    return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def check_launch(cfg) -> None:
    """What would make a classification job fail at its start: labels, images, folds, local weights."""
    from .model import check_weights

    samples = read_samples(cfg)
    if cfg.dataset.split.folds:
        groups = {s.group for s in samples}
        if len(groups) < cfg.dataset.split.folds:
            raise ConfigError(f"dataset.split.folds={cfg.dataset.split.folds}: only {len(groups)} groups "
                              f"(classify.group_column / dataset.split.group_regex)")
    check_weights(cfg)
