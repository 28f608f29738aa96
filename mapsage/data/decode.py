"""Mask decoding: from what is stored on disk to class ids ``0..C-1`` and the ignore index.

Two decoders share one interface (``decode(raw, path, strict) -> (mask, MaskStats)``):

* :class:`ColorMaskDecoder` - RGB colour codes (the Dubai set). Each pixel's colour is packed into one ``uint32``
  and mapped through a 2**24-entry lookup table (one gather, no Python loop per colour). A colour that the config
  neither maps to a class (``dataset.color_map``) nor to ignore (``dataset.ignore_colors``) is an error listing
  the colours and their pixel counts.
* :class:`IndexMaskDecoder` - stored class values (LoveDA, index PNGs) with ``dataset.value_map`` (raw value ->
  class id) and ``dataset.ignore_values``. Unknown values are an error, listed with their pixel counts.
  ``dataset.reduce_zero_label`` reads masks converted by mmsegmentation with ``reduce_zero_label=True`` (stored
  0 = ignore, 1..K = classes 0..K-1, 255 = ignore), exactly as mmseg's loader does.
* :class:`PartMaskDecoder` - face-parsing part masks (CelebAMask-HQ layout): one binary PNG per part, painted
  into one label map in ``dataset.part_masks.parts`` order (a later part wins where parts overlap).

Pixels that become the ignore index are counted by cause (the colour or raw value), so a report can say how many
pixels each explicit ignore rule affected.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..config import ConfigError
from ..config.schema import Config, DatasetCfg, PartMaskCfg
from ..errors import DataError
from .io import read_color_mask, read_index_mask

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")
_UNKNOWN = 255            # lookup code for "not in the map"
_MAX_LISTED = 12          # unknown colours/values listed in an error message


def parse_color(text: str, key: str) -> tuple[int, int, int]:
    """``"#RRGGBB"`` (or ``RRGGBB``) -> (r, g, b). ``key`` names the config key in the error."""
    m = _HEX.match(str(text).strip())
    if not m:
        raise ConfigError(f"{key}: {text!r} is not a colour; write colours as \"#RRGGBB\" (quoted in YAML)")
    v = int(m.group(1), 16)
    return (v >> 16) & 255, (v >> 8) & 255, v & 255


def color_hex(rgb) -> str:
    r, g, b = (int(c) for c in rgb)
    return f"#{r:02X}{g:02X}{b:02X}"


def _pack(r: int, g: int, b: int) -> int:
    """The packing used by :func:`pack_rgb` (little-endian RGBA viewed as uint32, alpha dropped)."""
    return r | (g << 8) | (b << 16)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]`` -> ``uint32 [H, W]`` holding ``r | g << 8 | b << 16`` (vectorised, one cv2 call)."""
    rgb = np.ascontiguousarray(rgb)
    rgba = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    return rgba.view(np.uint32)[..., 0] & np.uint32(0x00FFFFFF)


def unpack_rgb(packed: int) -> tuple[int, int, int]:
    packed = int(packed)
    return packed & 255, (packed >> 8) & 255, (packed >> 16) & 255


@dataclass
class MaskStats:
    """Pixel accounting of one decoded mask (or a sum of many)."""
    class_counts: np.ndarray                               # int64 [C]
    ignored: dict[str, int] = field(default_factory=dict)  # cause ("#9B9B9B", "value 0") -> pixels
    unknown: dict[str, int] = field(default_factory=dict)  # colours/values the config does not name -> pixels
    total: int = 0                                         # all mask pixels

    @classmethod
    def zeros(cls, num_classes: int) -> "MaskStats":
        return cls(class_counts=np.zeros(num_classes, np.int64))

    def add(self, other: "MaskStats") -> "MaskStats":
        self.class_counts = self.class_counts + other.class_counts
        for src, dst in ((other.ignored, self.ignored), (other.unknown, self.unknown)):
            for k, v in src.items():
                dst[k] = dst.get(k, 0) + int(v)
        self.total += int(other.total)
        return self

    @property
    def ignored_total(self) -> int:
        return int(sum(self.ignored.values()))

    @property
    def unknown_total(self) -> int:
        return int(sum(self.unknown.values()))


def _unknown_error(path, kind: str, unknown: dict[str, int], total: int, hint: str) -> DataError:
    items = sorted(unknown.items(), key=lambda kv: -kv[1])
    listed = ", ".join(f"{k}: {v} px ({100.0 * v / max(total, 1):.2f} %)" for k, v in items[:_MAX_LISTED])
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return DataError(f"{path}: {len(items)} mask {kind}(s) not named by the config: {listed}{more}. {hint}")


class MaskDecoder:
    """Common interface. ``num_classes``, ``ignore_index``, ``kind`` ("colour" | "value")."""

    num_classes: int
    ignore_index: int

    def read(self, path: str | Path) -> np.ndarray:
        raise NotImplementedError

    def decode(self, raw: np.ndarray, path: str | Path = "<array>", strict: bool = True
               ) -> tuple[np.ndarray, MaskStats]:
        raise NotImplementedError

    def load(self, path: str | Path, strict: bool = True) -> tuple[np.ndarray, MaskStats]:
        return self.decode(self.read(path), path, strict)


class ColorMaskDecoder(MaskDecoder):
    kind = "colour"

    def __init__(self, ds: DatasetCfg):
        self.num_classes = ds.num_classes
        self.ignore_index = int(ds.ignore_index)
        if not ds.color_map:
            raise ConfigError("dataset.color_map is empty: a color_mask dataset needs the class of each mask colour, "
                              "e.g. {\"#8429F6\": land}")
        class_ids = {name: i for i, name in enumerate(ds.classes)}
        colours: list[tuple[int, int, int]] = []
        code_class: list[int] = []
        self.labels: list[str] = []
        seen: dict[int, str] = {}
        for text, cls_name in ds.color_map.items():
            rgb = parse_color(text, f"dataset.color_map[{text!r}]")
            if cls_name not in class_ids:
                near = [c for c in ds.classes if c.lower() == str(cls_name).lower()]
                hint = f" (did you mean '{near[0]}'?)" if near else f"; classes are {ds.classes}"
                raise ConfigError(f"dataset.color_map[{text!r}]: class '{cls_name}' is not in dataset.classes{hint}")
            key = _pack(*rgb)
            if key in seen:
                raise ConfigError(f"dataset.color_map: colour {color_hex(rgb)} is listed twice")
            seen[key] = "map"
            colours.append(rgb)
            code_class.append(class_ids[cls_name])
            self.labels.append(color_hex(rgb))
        for i, text in enumerate(ds.ignore_colors):
            rgb = parse_color(text, f"dataset.ignore_colors[{i}]")
            key = _pack(*rgb)
            if key in seen:
                raise ConfigError(f"dataset.ignore_colors: colour {color_hex(rgb)} is also "
                                  f"{'mapped to a class in dataset.color_map' if seen[key] == 'map' else 'listed twice'}"
                                  f"; a colour is either a class or ignored")
            seen[key] = "ignore"
            colours.append(rgb)
            code_class.append(self.ignore_index)
            self.labels.append(color_hex(rgb))
        missing = [c for c, i in class_ids.items() if i not in code_class]
        if missing:
            raise ConfigError(f"dataset.color_map maps no colour to class(es) {missing}; add their mask colours or "
                              f"remove them from dataset.classes")
        if len(colours) >= _UNKNOWN:
            raise ConfigError(f"dataset.color_map + dataset.ignore_colors name {len(colours)} colours; at most 254")
        self.colours = colours
        self.n_ignore_codes = len(ds.ignore_colors)
        self._keys = np.array([_pack(*c) for c in colours], np.uint32)
        self._code_class = np.full(256, self.ignore_index, np.uint8)
        self._code_class[: len(code_class)] = code_class
        self._code_is_ignore = np.zeros(256, bool)
        self._code_is_ignore[len(ds.color_map): len(colours)] = True
        self._lut: np.ndarray | None = None

    def __getstate__(self):      # the 16 MiB lookup table is rebuilt on demand, not shipped to workers
        state = dict(self.__dict__)
        state["_lut"] = None
        return state

    def _table(self) -> np.ndarray:
        if self._lut is None:
            lut = np.full(1 << 24, _UNKNOWN, np.uint8)
            lut[self._keys] = np.arange(len(self._keys), dtype=np.uint8)
            self._lut = lut
        return self._lut

    def read(self, path):
        return read_color_mask(path)

    def decode(self, raw, path="<array>", strict=True):
        if raw.ndim != 3 or raw.shape[2] != 3:
            raise DataError(f"{path}: a colour mask must be RGB [H, W, 3], got shape {raw.shape}")
        packed = pack_rgb(raw)
        codes = self._table()[packed]
        counts = np.bincount(codes.ravel(), minlength=256)
        stats = MaskStats(class_counts=np.zeros(self.num_classes, np.int64), total=int(codes.size))
        for code, n in enumerate(counts[: len(self.colours)]):
            if not n:
                continue
            cls = int(self._code_class[code])
            if self._code_is_ignore[code]:
                stats.ignored[self.labels[code]] = stats.ignored.get(self.labels[code], 0) + int(n)
            else:
                stats.class_counts[cls] += int(n)
        if counts[_UNKNOWN]:
            vals, cnt = np.unique(packed[codes == _UNKNOWN], return_counts=True)
            stats.unknown = {color_hex(unpack_rgb(v)): int(c) for v, c in zip(vals, cnt)}
            if strict:
                raise _unknown_error(path, "colour", stats.unknown, stats.total,
                                     "Map each to a class in dataset.color_map, or to the ignore index by listing "
                                     "it in dataset.ignore_colors (its pixels are then counted as ignored).")
        mask = self._code_class[codes]
        return mask, stats


class IndexMaskDecoder(MaskDecoder):
    kind = "value"

    def __init__(self, ds: DatasetCfg):
        self.num_classes = ds.num_classes
        self.ignore_index = int(ds.ignore_index)
        value_map = {int(k): int(v) for k, v in ds.value_map.items()}
        if ds.reduce_zero_label and value_map:
            raise ConfigError("dataset.reduce_zero_label and dataset.value_map both remap raw values; use one")
        self.reduce_zero_label = bool(ds.reduce_zero_label)
        identity = not value_map and not self.reduce_zero_label
        if self.reduce_zero_label:  # mmseg: 0 -> ignore, v -> v - 1, 255 stays ignore
            value_map = {i + 1: i for i in range(self.num_classes)}
            extra_ignore = [0] + ([255] if self.num_classes < 255 else [])
            ds_ignore = [int(v) for v in ds.ignore_values]
            ignore_values_rz = ds_ignore + [v for v in extra_ignore if v not in ds_ignore]
        if identity:        # no table: stored values are the class ids; the ignore index stays the ignore index
            value_map = {i: i for i in range(self.num_classes)}
        for raw, cls in value_map.items():
            if not 0 <= cls < self.num_classes:
                raise ConfigError(f"dataset.value_map[{raw}]: class id {cls} is outside 0..{self.num_classes - 1} "
                                  f"(dataset.classes has {self.num_classes} names)")
            if raw < 0:
                raise ConfigError(f"dataset.value_map: raw value {raw} is negative")
        ignore_values = ignore_values_rz if self.reduce_zero_label else [int(v) for v in ds.ignore_values]
        if identity and self.ignore_index not in ignore_values:
            ignore_values.append(self.ignore_index)
        both = sorted(set(value_map) & set(ignore_values))
        if both:
            raise ConfigError(f"dataset.value_map and dataset.ignore_values both name raw value(s) {both}; a value "
                              f"is either a class or ignored")
        self.value_map = value_map
        self.ignore_values = ignore_values
        self.identity = identity
        size = 1 + max([*value_map, *ignore_values, 255])
        self._lut = np.full(size, -1, np.int32)         # raw value -> -1 unknown, -2 ignore, else class id
        self._tables: dict[int, np.ndarray] = {}
        for raw, cls in value_map.items():
            self._lut[raw] = cls
        for raw in ignore_values:
            self._lut[raw] = -2

    def read(self, path):
        return read_index_mask(path)

    def _table(self, width: int) -> np.ndarray:
        """raw value -> class id or ignore index, as a uint8 lookup of ``width`` entries (cached)."""
        cached = self._tables.get(width)
        if cached is None:
            cached = np.full(width, self.ignore_index, np.uint8)
            n = min(width, len(self._lut))
            ok = self._lut[:n] >= 0
            cached[:n][ok] = self._lut[:n][ok]
            self._tables[width] = cached
        return cached

    def decode(self, raw, path="<array>", strict=True):
        if raw.ndim != 2:
            raise DataError(f"{path}: an index mask must be 2-D [H, W], got shape {raw.shape}")
        lookup = raw.dtype in (np.uint8, np.uint16)
        if lookup:
            width = 256 if raw.dtype == np.uint8 else 65536
            counts = np.bincount(raw.ravel(), minlength=width)
            present = np.nonzero(counts)[0]
            present_counts = counts[present]
        else:
            present, present_counts = np.unique(raw, return_counts=True)
        stats = MaskStats(class_counts=np.zeros(self.num_classes, np.int64), total=int(raw.size))
        for v, n in zip(present.tolist(), present_counts.tolist()):
            c = int(self._lut[v]) if v < len(self._lut) else -1
            if c >= 0:
                stats.class_counts[c] += n
            elif c == -2:
                stats.ignored[f"value {v}"] = n
            else:
                stats.unknown[f"value {v}"] = n
        if stats.unknown:
            if strict:
                hint = ("Map each to a class in dataset.value_map or list it in dataset.ignore_values."
                        if not self.identity and not self.reduce_zero_label else
                        f"dataset.reduce_zero_label is on, so stored values must be 0 (ignore), 1..{self.num_classes}"
                        f" (the classes) or 255; check dataset.classes." if self.reduce_zero_label else
                        f"dataset.value_map is empty, so stored values must be class ids 0..{self.num_classes - 1} "
                        f"or {self.ignore_index}; map them in dataset.value_map or list them in "
                        f"dataset.ignore_values.")
                raise _unknown_error(path, "value", stats.unknown, stats.total, hint)
        if lookup:
            mask = self._table(width)[raw]
        else:
            mask = np.full(raw.shape, self.ignore_index, np.uint8)
            for v in present.tolist():
                c = int(self._lut[v]) if v < len(self._lut) else -1
                if c >= 0:
                    mask[raw == v] = c
        return mask, stats


def build_decoder(ds: DatasetCfg) -> MaskDecoder:
    """The decoder for ``dataset.type``: color_mask -> colours; loveda / index_mask -> values."""
    if not 0 <= int(ds.ignore_index) <= 255:
        raise ConfigError(f"dataset.ignore_index: {ds.ignore_index} does not fit a uint8 mask; use 255 (the field's "
                          f"convention)")
    if ds.type == "color_mask":
        return ColorMaskDecoder(ds)
    if ds.type in ("loveda", "index_mask"):
        return IndexMaskDecoder(ds)
    if ds.type == "part_mask":
        from .parts import PartMaskDecoder
        return PartMaskDecoder(ds)
    raise ConfigError(f"dataset.type: unknown type {ds.type!r}")  # pragma: no cover - schema restricts it


def _decoder_key(ds: DatasetCfg) -> str:
    return json.dumps({"type": ds.type, "classes": list(ds.classes), "ignore_index": ds.ignore_index,
                       "color_map": dict(ds.color_map), "ignore_colors": list(ds.ignore_colors),
                       "value_map": {str(k): v for k, v in ds.value_map.items()},
                       "ignore_values": list(ds.ignore_values), "reduce_zero_label": bool(ds.reduce_zero_label),
                       "part_masks": {"dir": ds.part_masks.dir, "parts": [[k, v] for k, v in ds.part_masks.parts.items()],   # order matters
                                      "background": ds.part_masks.background,
                                      "numeric_ids": ds.part_masks.numeric_ids}}, sort_keys=True)


@functools.lru_cache(maxsize=8)
def _cached_decoder(key: str) -> MaskDecoder:
    data = json.loads(key)
    ds = DatasetCfg(name="decoder", type=data["type"], root=".", classes=data["classes"],
                    ignore_index=data["ignore_index"], color_map=data["color_map"],
                    ignore_colors=data["ignore_colors"],
                    value_map={int(k): v for k, v in data["value_map"].items()},
                    ignore_values=data["ignore_values"], reduce_zero_label=data["reduce_zero_label"],
                    part_masks=PartMaskCfg(**{**data["part_masks"],
                                              "parts": {k: v for k, v in data["part_masks"]["parts"]}}))
    return build_decoder(ds)


def decoder_for(dataset_cfg) -> MaskDecoder:
    """The mask decoder of a dataset config (a Config or its DatasetCfg), shared between calls."""
    ds = dataset_cfg.dataset if isinstance(dataset_cfg, Config) else dataset_cfg
    return _cached_decoder(_decoder_key(ds))
