"""Reading images and raw masks from disk. Every failure is a :class:`DataError` that names the file.

* Images are read with Pillow without applying EXIF orientation (a JPEG rotated by its EXIF tag while its PNG
  mask is not would silently misalign image and label). Grey, palette and RGBA images become RGB; 8-bit
  GeoTIFFs that Pillow cannot open are read with rasterio (bands 1-3).
* Colour-coded masks are decoded to RGB, palette-mode PNGs included: the palette is applied, the palette index is
  never used as a class id.
* Index masks keep their stored values (for a palette PNG these are the indices, which is what index masks mean).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

Image.MAX_IMAGE_PIXELS = None        # remote-sensing scenes are legitimately huge; no decompression-bomb guard

_TIFF_SUFFIXES = {".tif", ".tiff"}


def _open(path: Path, what: str) -> Image.Image:
    if not path.exists():
        raise DataError(f"{path}: {what} file not found")
    try:
        img = Image.open(path)
        img.load()                   # force the decode now: a truncated file fails here, not later in training
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read {what} ({type(exc).__name__}: {exc}); the file is corrupt or not "
                        f"an image - re-export or remove it") from exc
    return img


def _read_tiff_rasterio(path: Path) -> np.ndarray:
    try:
        import rasterio
    except ImportError as exc:  # pragma: no cover - rasterio is a dependency
        raise DataError(f"{path}: Pillow cannot read this TIFF and rasterio is not installed") from exc
    try:
        with rasterio.open(path) as src:
            if src.count < 3 and src.count != 1:
                raise DataError(f"{path}: GeoTIFF with {src.count} bands; expected 1 or >= 3 (RGB)")
            bands = [1, 2, 3] if src.count >= 3 else [1, 1, 1]
            arr = src.read(bands)
    except DataError:
        raise
    except Exception as exc:  # rasterio raises its own error hierarchy
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    if arr.dtype != np.uint8:
        raise DataError(f"{path}: image data type is {arr.dtype}; the workbench trains on 8-bit RGB - convert it "
                        f"first (e.g. gdal_translate -ot Byte -scale)")
    return np.ascontiguousarray(arr.transpose(1, 2, 0))


def load_image(path: str | Path) -> np.ndarray:
    """Read an image as ``uint8 [H, W, 3]`` RGB. Raises :class:`DataError` naming the file on any problem."""
    path = Path(path)
    if path.suffix.lower() in _TIFF_SUFFIXES:
        try:
            img = _open(path, "image")
        except DataError:
            if not path.exists():
                raise
            return _read_tiff_rasterio(path)
    else:
        img = _open(path, "image")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise DataError(f"{path}: image mode {img.mode} (16/32-bit); the workbench trains on 8-bit RGB - convert "
                        f"it first")
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.array(img)              # a writable copy (np.asarray of a Pillow image is read-only)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise DataError(f"{path}: decoded to shape {arr.shape} {arr.dtype}; expected an RGB image")
    return arr


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` from the file header, without decoding the pixels."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        with Image.open(path) as img:
            w, h = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            try:
                import rasterio
                with rasterio.open(path) as src:
                    return int(src.height), int(src.width)
            except Exception:
                pass
        raise DataError(f"{path}: cannot read image header ({type(exc).__name__}: {exc}); the file is corrupt or "
                        f"not an image") from exc
    return int(h), int(w)


def read_color_mask(path: str | Path) -> np.ndarray:
    """A colour-coded mask as ``uint8 [H, W, 3]`` RGB; palette PNGs are decoded through their palette."""
    path = Path(path)
    img = _open(path, "mask")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise DataError(f"{path}: mask mode {img.mode} holds numbers, not colours; for a mask of class values set "
                        f"dataset.type: index_mask with dataset.value_map")
    if img.mode != "RGB":
        # "P" (palette) -> colours through the palette; "RGBA"/"LA" drop alpha; "L" -> grey colours
        img = img.convert("RGB")
    return np.asarray(img)


def read_index_mask(path: str | Path) -> np.ndarray:
    """An index mask's stored values as a 2-D integer array (``uint8``, or ``uint16``/``int32`` when wider)."""
    path = Path(path)
    img = _open(path, "mask")
    if img.mode in ("RGB", "RGBA"):
        arr = np.asarray(img)[..., :3]
        if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all():
            return np.ascontiguousarray(arr[..., 0])
        raise DataError(f"{path}: this mask is a colour image ({img.mode}), not class values; set dataset.type: "
                        f"color_mask and map its colours in dataset.color_map")
    if img.mode == "LA":
        img = img.getchannel("L")
    if img.mode == "1":
        img = img.convert("L")
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise DataError(f"{path}: mask decoded to shape {arr.shape}; expected a single-channel image")
    if arr.dtype not in (np.uint8, np.uint16):
        if arr.min() < 0:
            raise DataError(f"{path}: mask holds negative values; expected non-negative class values")
        arr = arr.astype(np.uint16) if arr.max() < 65536 else arr.astype(np.int64)
    return arr
