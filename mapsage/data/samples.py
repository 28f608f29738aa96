"""Finding the image/mask pairs of a dataset on disk.

* ``loveda``: the official layout ``ROOT/{Train,Val,Test}/{Urban,Rural}/{images_png,masks_png}/*.png``. The split
  comes from the folder (``Train`` -> ``train``), the domain from the domain folder. The split named by
  ``dataset.test_split`` may lack ``masks_png`` (LoveDA's Test labels are not public): it is then predict-only.
* ``color_mask`` / ``index_mask``: every file matching ``dataset.image_glob`` under the root; its mask path comes
  from ``dataset.mask_from_image``: pairs of strings replaced in the image's path, e.g.
  ``["/images/", "/masks/", ".jpg", ".png"]``. The pairs are applied to the path relative to the root (written
  with a leading "/": ``/Tile 1/images/x.jpg``); pairs written as absolute paths (``/data/potsdam/img_dir/``)
  are applied to the image's absolute path instead. When the first pair's "from" is a folder (ends with "/",
  relative or absolute, with or without a leading "/"), that folder is left out of the sample ids.
  Splits are assigned later (:mod:`mapsage.data.splits`).
* ``part_mask``: every file matching ``dataset.image_glob``; its part files are found below
  ``dataset.part_masks.dir`` (:mod:`mapsage.data.parts`).

A sample's ``id`` is its path below the root without the extension and without the images folder
(``Tile 1/image_part_001``; LoveDA ``Train/Rural/0``). Its ``group`` is the unit a split never cuts
(``dataset.split.group_regex`` on the id; LoveDA: the file stem, unique across the whole dataset).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..config import ConfigError, resolve_path
from ..config.schema import DatasetCfg
from ..errors import DataError

_MAX_LISTED = 5


@dataclass(frozen=True)
class Sample:
    id: str
    image_path: Path
    mask_path: Optional[Path]
    domain: Optional[str]
    group: str
    split: Optional[str] = None      # the official split (loveda) or the assigned one; None before assignment

    def to_dict(self) -> dict:
        return {"id": self.id, "image_path": str(self.image_path),
                "mask_path": str(self.mask_path) if self.mask_path else None, "domain": self.domain,
                "group": self.group, "split": self.split}


def dataset_root(ds: DatasetCfg) -> Path:
    root = resolve_path(ds.root)
    if not root.is_dir():
        raise DataError(f"dataset.root: folder {root} not found; point it at your copy of the dataset "
                        f"(--set dataset.root=/path/to/{ds.name})")
    return root


def _missing_masks_error(pairs: list[tuple[Path, Path]], key: str) -> DataError:
    listed = "; ".join(f"{img} -> expected {msk}" for img, msk in pairs[:_MAX_LISTED])
    more = f" (and {len(pairs) - _MAX_LISTED} more)" if len(pairs) > _MAX_LISTED else ""
    return DataError(f"{len(pairs)} image(s) have no mask: {listed}{more}. Add the mask files, remove the images, "
                     f"or fix {key}")


# --------------------------------------------------------------------------------------------------------------
# LoveDA


def _loveda_samples(ds: DatasetCfg, root: Path) -> list[Sample]:
    samples: list[Sample] = []
    test_split = (ds.test_split or "").lower()
    for split_dir in ds.splits:
        sdir = root / split_dir
        if not sdir.is_dir():
            continue                       # a split folder that is absent: that split simply has no samples
        split = split_dir.lower()
        domains = ds.domains or sorted(p.name for p in sdir.iterdir() if p.is_dir())
        with_masks = [d for d in domains if (sdir / d / "masks_png").is_dir()]
        predict_only = not with_masks and split == test_split
        missing: list[tuple[Path, Path]] = []
        for domain in domains:
            img_dir = sdir / domain / "images_png"
            if not img_dir.is_dir():
                continue
            msk_dir = sdir / domain / "masks_png"
            if not predict_only and not msk_dir.is_dir():
                raise DataError(f"{msk_dir}: mask folder not found for the labelled split '{split_dir}'. LoveDA's "
                                f"layout is ROOT/{split_dir}/{domain}/{{images_png,masks_png}}; only the split "
                                f"named by dataset.test_split ({ds.test_split!r}) may come without masks")
            for img in sorted(img_dir.glob("*.png"), key=_natural_key):
                if not img.is_file():
                    continue
                mask = None
                if not predict_only:
                    mask = msk_dir / img.name
                    if not mask.is_file():
                        missing.append((img, mask))
                        continue
                samples.append(Sample(id=f"{split_dir}/{domain}/{img.stem}", image_path=img, mask_path=mask,
                                      domain=domain, group=img.stem, split=split))
        if missing:
            raise _missing_masks_error(missing, f"the {split_dir}/*/masks_png folders")
    return samples


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


# --------------------------------------------------------------------------------------------------------------
# Folder datasets (colour or index masks)


def _replace_pairs(ds: DatasetCfg) -> list[tuple[str, str]]:
    pairs = ds.mask_from_image
    if len(pairs) % 2 or not pairs:
        raise ConfigError(f"dataset.mask_from_image must be pairs of strings [from, to, from, to, ...] that turn an "
                          f"image path into its mask path, got {pairs}")
    return [(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)]


def _group_of(ds: DatasetCfg, sample_id: str, regex: re.Pattern) -> str:
    m = regex.search(sample_id)
    if not m:
        raise ConfigError(f"dataset.split.group_regex {ds.split.group_regex!r} does not match sample id "
                          f"{sample_id!r}; write a pattern whose named group 'group' captures the split unit "
                          f"(tile, scene)")
    if "group" in m.groupdict():
        return m.group("group")
    return m.group(1) if m.groups() else m.group(0)


def _folder_samples(ds: DatasetCfg, root: Path) -> list[Sample]:
    pairs = _replace_pairs(ds)
    images = sorted((p for p in root.glob(ds.image_glob) if p.is_file()), key=lambda p: _natural_key_rel(p, root))
    if not images:
        raise DataError(f"dataset.image_glob: no file under {root} matches {ds.image_glob!r}; fix the pattern "
                        f"(relative to dataset.root) or dataset.root")
    try:
        regex = re.compile(ds.split.group_regex)
    except re.error as exc:
        raise ConfigError(f"dataset.split.group_regex: {ds.split.group_regex!r} is not a valid regular "
                          f"expression ({exc})") from exc
    img_dir_token = _image_dir_token(pairs[0][0], root)
    samples: list[Sample] = []
    missing: list[tuple[Path, Path]] = []
    for img in images:
        rel = "/" + img.relative_to(root).as_posix()
        mrel = _replace_all(rel, pairs)
        if mrel != rel:
            mask = root / mrel.lstrip("/")
        else:
            absolute = img.absolute().as_posix()
            mabs = _replace_all(absolute, pairs)
            if mabs == absolute:
                raise ConfigError(f"dataset.mask_from_image {ds.mask_from_image} leaves {img} unchanged, so its "
                                  f"mask would be the image itself; fix the replacement pairs")
            mask = Path(mabs)
        if not mask.is_file():
            missing.append((img, mask))
            continue
        sid = rel.replace(img_dir_token, "/", 1) if img_dir_token and img_dir_token in rel else rel
        sid = sid.lstrip("/").rsplit(".", 1)[0]
        parts = sid.split("/")
        domain = next((p for p in parts if p in ds.domains), None) if ds.domains else None
        samples.append(Sample(id=sid, image_path=img, mask_path=mask, domain=domain,
                              group=_group_of(ds, sid, regex)))
    if missing:
        raise _missing_masks_error(missing, "dataset.mask_from_image")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:_MAX_LISTED]
        raise DataError(f"dataset.image_glob {ds.image_glob!r} finds several images with the same id {dup} "
                        f"(same name, different extension?); narrow the pattern")
    return samples


def _replace_all(text: str, pairs: list[tuple[str, str]]) -> str:
    for a, b in pairs:
        text = text.replace(a, b)
    return text


def _image_dir_token(first: str, root: Path) -> str | None:
    """The image folder named by the first replacement pair, as ``/<folder>/`` relative to the root (None when the
    pair is not a folder). ``images/``, ``/images/`` and ``/data/x/images/`` (under root ``/data/x``) all work."""
    if not first.endswith("/") or not first.strip("/"):
        return None
    if first.startswith("/"):
        try:
            inside = Path(first.rstrip("/")).relative_to(root.absolute()).as_posix()
            return "/" + inside + "/"
        except ValueError:
            return first                   # root-relative, written with a leading "/"
    return "/" + first


def _part_samples(ds: DatasetCfg, root: Path) -> list[Sample]:
    from .parts import index_part_files, mask_stem_for
    images = sorted((p for p in root.glob(ds.image_glob) if p.is_file()), key=lambda p: _natural_key_rel(p, root))
    if not images:
        raise DataError(f"dataset.image_glob: no file under {root} matches {ds.image_glob!r}; fix the pattern "
                        f"(relative to dataset.root) or dataset.root")
    try:
        regex = re.compile(ds.split.group_regex)
    except re.error as exc:
        raise ConfigError(f"dataset.split.group_regex: {ds.split.group_regex!r} is not a valid regular "
                          f"expression ({exc})") from exc
    index = index_part_files(ds, root)
    samples, missing = [], []
    for img in images:
        stem = mask_stem_for(img, index, ds)
        if stem is None:
            missing.append((img, root / ds.part_masks.dir / f"{img.stem}_<part>.png"))
            continue
        sid = img.relative_to(root).as_posix().rsplit(".", 1)[0]
        parts = sid.split("/")
        domain = next((p for p in parts if p in ds.domains), None) if ds.domains else None
        samples.append(Sample(id=sid, image_path=img, mask_path=stem, domain=domain, group=_group_of(ds, sid, regex)))
    if missing:
        raise _missing_masks_error(missing, "dataset.part_masks")
    return samples


def _natural_key_rel(p: Path, root: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.relative_to(root).as_posix())]


def discover_samples(ds: DatasetCfg) -> list[Sample]:
    """All samples of the dataset (every split), in a deterministic order."""
    root = dataset_root(ds)
    if ds.type == "loveda":
        samples = _loveda_samples(ds, root)
        if not samples:
            raise DataError(f"dataset.root: {root} holds no LoveDA images; expected "
                            f"{root}/{{{','.join(ds.splits)}}}/{{{','.join(ds.domains)}}}/images_png/*.png")
        return samples
    if ds.type == "part_mask":
        return _part_samples(ds, root)
    return _folder_samples(ds, root)
