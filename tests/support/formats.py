"""Dataset layouts as people have them, built from the real bundled data (imported by the format tests; not a
pytest conftest): mmsegmentation-converted LoveDA (img_dir/ann_dir, raw ids read with reduce_zero_label) and a
CelebAMask-HQ-style part-mask layout written from real Dubai masks (one binary PNG per class per image)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from scipy import ndimage

from tests.support.data import DUBAI_ROOT, LOVEDA_ROOT
from tests.support.metrics import IGN, decode_dubai, dubai_masks

ROOT = Path(__file__).resolve().parents[2]
FACE_TEMPLATE = ROOT / "configs/stage1_baselines/faceparsing_segformer_mit-b0_celebamask-hq.yaml"
PART_CLASSES = ["background", "water", "land", "road", "building", "vegetation"]   # Dubai ids + 1; 0 = unlabelled
DUBAI_PARTS = [("Tile 1", "image_part_001"), ("Tile 2", "image_part_003"), ("Tile 3", "image_part_002"),
               ("Tile 5", "image_part_004"), ("Tile 7", "image_part_005"), ("Tile 8", "image_part_003")]


def mmseg_loveda_layout(dst: Path) -> Path:
    """The three real LoveDA tiles in mmseg's converted layout: img_dir/{train,val}, ann_dir/{train,val}."""
    for split_dir, split in (("Train", "train"), ("Val", "val")):
        for img in sorted((LOVEDA_ROOT / split_dir / "Rural" / "images_png").glob("*.png")):
            for sub, src in (("img_dir", img), ("ann_dir", img.parent.parent / "masks_png" / img.name)):
                out = dst / sub / split
                out.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, out / img.name)
    return dst


def dubai_part_layout(dst: Path, crop: int = 256) -> dict[str, np.ndarray]:
    """Real Dubai image/mask pairs, cropped to ``crop``², written in the CelebAMask-HQ layout:
    ``images/<n>.jpg`` and ``masks/<n // 3>/<n:05d>_<class>.png`` (one binary 0/255 PNG per class present).
    Unlabelled/ignored pixels get no part file: they are background. Returns ``{image stem: expected label}``
    with class ids in :data:`PART_CLASSES` order."""
    expected = {}
    for n, (tile, part) in enumerate(DUBAI_PARTS):
        img = Image.open(DUBAI_ROOT / tile / "images" / f"{part}.jpg").convert("RGB")
        lab = decode_dubai(DUBAI_ROOT / tile / "masks" / f"{part}.png")
        img = np.asarray(img)[:crop, :crop]
        lab = lab[:crop, :crop]
        ids = np.where(lab == IGN, 0, lab.astype(np.int64) + 1).astype(np.uint8)
        (dst / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(dst / "images" / f"{n}.jpg", quality=95)
        folder = dst / "masks" / str(n // 3)
        folder.mkdir(parents=True, exist_ok=True)
        for k, name in enumerate(PART_CLASSES[1:], start=1):
            on = ids == k
            if on.any():
                Image.fromarray((on * 255).astype(np.uint8), mode="L").save(folder / f"{n:05d}_{name}.png")
        expected[str(n)] = ids
    return expected


def part_config(dst: Path, **extra) -> Path:
    """A config file that inherits the face-parsing template and points it at a Dubai part layout."""
    data = {
        "_base_": [str(FACE_TEMPLATE)],
        "dataset": {
            "name": "dubai-parts", "root": str(dst), "image_glob": "images/*.jpg",
            "classes": PART_CLASSES,
            "palette": ["#000000", "#E2A929", "#8429F6", "#6EC1E4", "#3C1098", "#FEDD3A"],
            "part_masks": {"_replace_": True, "dir": "masks", "background": "background",
                           "parts": {c: c for c in PART_CLASSES[1:]}},
            "split": {"method": "by_group", "group_regex": "^images/(?P<group>.+)$",
                      "assign": {"train": ["0", "1", "2", "3"], "val": ["4", "5"]}},
        },
    }
    for key, value in extra.items():
        data.setdefault(key, {}).update(value)
    path = dst / "faceparsing_dubai-parts.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def carve_strips(label: np.ndarray, half: int = 2) -> np.ndarray:
    """ISPRS-style eroded label: every pixel within ``half`` px of another class becomes ignored (a strip of
    about 2*half px centred on each border); existing ignored pixels stay ignored and create no strip."""
    out = label.copy()
    valid = label != IGN
    size = 2 * half + 1
    near_other = np.zeros(label.shape, bool)
    for k in np.unique(label[valid]):
        other = valid & (label != k)
        near_other |= (label == k) & ndimage.maximum_filter(other, size=size, mode="constant", cval=False)
    out[near_other] = IGN
    return out



def fill_ignored(label: np.ndarray) -> np.ndarray:
    """Give ignored pixels the nearest class (so that carved strips are the only ignored pixels)."""
    ign = label == IGN
    if not ign.any():
        return label
    idx = ndimage.distance_transform_edt(ign, return_distances=False, return_indices=True)
    return label[idx[0], idx[1]]


def isprs_style_layout(dst: Path, crop: int = 384) -> Path:
    """Real Dubai pairs as ISPRS "eroded" labels converted by mmseg: a ~4 px ignore strip carved along every class
    border, stored as 0 = strip, 1..5 = the five classes (img_dir/{train,val}, ann_dir/{train,val} PNGs)."""
    names = ["Tile 1/masks/image_part_001.png", "Tile 2/masks/image_part_003.png", "Tile 8/masks/image_part_003.png"]
    for n, (name, lab) in enumerate(dubai_masks(tuple(names))):
        split = "val" if n == 2 else "train"
        lab = carve_strips(fill_ignored(lab[:crop, :crop]))
        raw = np.where(lab == IGN, 0, lab.astype(np.int64) + 1).astype(np.uint8)
        img = Image.open(DUBAI_ROOT / name.replace("/masks/", "/images/").replace(".png", ".jpg")).convert("RGB")
        for sub, arr in (("img_dir", np.asarray(img)[:crop, :crop]), ("ann_dir", raw)):
            out = dst / sub / split
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(out / f"{n}.png")
    return dst
