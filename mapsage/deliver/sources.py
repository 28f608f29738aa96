"""What ``predict`` runs on: a dataset split (LoveDA's Test split has no masks and needs none), a folder of images,
or a raster file. :func:`resolve_source` turns ``predict.source`` into a :class:`Source` listing its inputs."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..config import resolve_path
from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
LABEL_FOLDERS = {"masks", "masks_png", "labels", "label", "gt", "annotations"}   # skipped inside a folder source


@dataclass
class Input:
    id: str                                  # the prediction's name (split: the sample id; folder: relative stem)
    path: Path
    kind: str                                # "image" | "raster"


@dataclass
class Source:
    kind: str                                # "split" | "folder" | "raster"
    name: str                                # the split name, folder or raster path as given
    inputs: list[Input] = field(default_factory=list)
    split: Optional[str] = None

    def describe(self) -> str:
        return f"{self.kind} {self.name} ({len(self.inputs)} input{'s' if len(self.inputs) != 1 else ''})"


def _natural(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.as_posix())]


def _split_names(cfg) -> list[str]:
    ds = cfg.dataset
    names = {n.lower() for n in (ds.splits or [])}
    names |= {str(x).lower() for x in (ds.train_split, ds.val_split, ds.test_split) if x}
    return sorted(names)


def resolve_source(cfg, source: Optional[str] = None, key: str = "predict.source") -> Source:
    """``source`` (default ``cfg.predict.source``; empty = the dataset's test split): a split name of the config's
    dataset, an image folder, or a raster / image file."""

    text = str(source if source is not None else cfg.predict.source or "").strip()
    if not text:
        text = str(cfg.dataset.test_split or "test")
    if text.lower() in _split_names(cfg) and not Path(text).exists():
        from ..data import build_dataset
        split = text.lower()
        try:
            ds = build_dataset(cfg, split, train=False)
        except DataError as exc:
            raise DataError(f"{key}: {exc}") from exc
        inputs = [Input(str(s.id), Path(s.image_path),
                        "raster" if Path(s.image_path).suffix.lower() in RASTER_SUFFIXES else "image")
                  for s in ds.samples]
        return Source("split", split, inputs, split=split)
    path = Path(text).expanduser()
    if not path.is_absolute() and not path.exists():
        path = resolve_path(text)
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.is_file()
                        and p.suffix.lower() in IMAGE_SUFFIXES + RASTER_SUFFIXES and not p.name.startswith(".")
                        and not LABEL_FOLDERS & {q.lower() for q in p.relative_to(path).parts[:-1]}),
                       key=_natural)
        if not files:
            raise DataError(f"{key}: folder {path} holds no images ({', '.join(IMAGE_SUFFIXES + RASTER_SUFFIXES)}); "
                            "point it at a folder of images, a raster file or a split name "
                            f"({', '.join(_split_names(cfg))})")
        inputs = [Input(p.relative_to(path).with_suffix("").as_posix(), p,
                        "raster" if p.suffix.lower() in RASTER_SUFFIXES else "image") for p in files]
        return Source("folder", str(path), inputs)
    if path.is_file():
        kind = "raster" if path.suffix.lower() in RASTER_SUFFIXES else "image"
        return Source("raster" if kind == "raster" else "folder", str(path), [Input(path.stem, path, kind)])
    raise DataError(f"{key}: {text!r} is not a split of {cfg.dataset.name} ({', '.join(_split_names(cfg))}), "
                    "nor an existing folder or file; give a split name, an image folder or a GeoTIFF")
