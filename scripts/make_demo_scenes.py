"""Derive the bundled scene-classification demo set from the bundled Dubai segmentation data.

Deterministic: the same sources give byte-identical outputs (fixed window grid, fixed JPEG quality, sorted
order). Run from the project root::

    .venv/bin/python scripts/make_demo_scenes.py            # writes data/demo/dubai-scenes/

Rule (also in the set's README.md): every source image (``Tile N/image_part_MMM.jpg``) is cut into a grid of
non-overlapping ``WINDOW`` px windows from its top-left corner (the remainder at the right and bottom edges is
dropped). The real mask is decoded with the demo segmentation config (``configs/_base_/datasets/dubai.yaml``:
colours -> classes, Unlabeled and black -> ignore). A window is kept when at most ``MAX_IGNORED`` of its pixels
are ignored and its most frequent class fills at least ``MIN_SHARE`` of its labelled pixels; that class is its
label. Kept windows are resized to ``OUT`` px (area interpolation) and saved as JPEG (quality 90).

Tiles 1-7 become ``train/`` + ``train_labels.csv``; Tile 8 becomes ``test_dataset/`` (the images an organiser
would hand out) with its answer key ``test_labels.csv`` kept apart for scoring.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SRC = ROOT / "data/demo/dubai-aerial/Semantic segmentation dataset"
OUT_DIR = ROOT / "data/demo/dubai-scenes"
WINDOW = 256
OUT = 64
MIN_SHARE = 0.5
MAX_IGNORED = 0.2
TEST_TILES = ("Tile 8",)
# category ids: 1-based positions of the classes in the source's classes.json (Water, Land, Road, Building,
# Vegetation); submissions carry these ids, never the model's 0-based indices
CATEGORIES = [(1, "water"), (2, "land"), (3, "road"), (4, "building"), (5, "vegetation")]


def main() -> None:
    from mapsage.config import load_config
    from mapsage.data import load_image, load_mask

    ds = load_config(ROOT / "configs/stage1_baselines/demo_segformer_mit-b0_dubai.yaml").dataset
    name_to_id = {n: i for i, n in CATEGORIES}
    cls_names = list(ds.classes)
    rows = {"train": [], "test": []}
    for img_path in sorted(SRC.glob("Tile */images/*.jpg"), key=lambda p: (int(p.parts[-3].split()[1]), p.name)):
        tile = img_path.parts[-3]
        part = img_path.stem
        mask_path = img_path.parent.parent / "masks" / (img_path.stem + ".png")
        img = load_image(img_path)
        mask = load_mask(mask_path, ds)
        h, w = mask.shape
        split = "test" if tile in TEST_TILES else "train"
        for r in range(h // WINDOW):
            for c in range(w // WINDOW):
                m = mask[r * WINDOW:(r + 1) * WINDOW, c * WINDOW:(c + 1) * WINDOW]
                valid = m < len(cls_names)
                if valid.mean() < 1.0 - MAX_IGNORED:
                    continue
                counts = np.bincount(m[valid].ravel(), minlength=len(cls_names))
                k = int(counts.argmax())
                share = counts[k] / counts.sum()
                if share < MIN_SHARE:
                    continue
                crop = img[r * WINDOW:(r + 1) * WINDOW, c * WINDOW:(c + 1) * WINDOW]
                small = cv2.resize(crop, (OUT, OUT), interpolation=cv2.INTER_AREA)
                fname = f"{tile.replace(' ', '')}_{part.replace('image_part_', 'p')}_r{r}c{c}.jpg"
                rows[split].append({"filename": fname, "category_id": name_to_id[cls_names[k]],
                                    "source_tile": f"{tile}/{part}", "scene": tile, "row": r, "col": c,
                                    "share": f"{share:.3f}", "image": small})
    for split, folder, labels in (("train", "train", "train_labels.csv"), ("test", "test_dataset", "test_labels.csv")):
        d = OUT_DIR / folder
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.jpg"):
            old.unlink()
        for row in rows[split]:
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(row["image"], cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, 90])
            (d / row["filename"]).write_bytes(buf.tobytes())
        with open(OUT_DIR / labels, "w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(["filename", "category_id", "source_tile", "scene", "row", "col", "share"])
            for row in rows[split]:
                wr.writerow([row[k] for k in ("filename", "category_id", "source_tile", "scene", "row", "col",
                                              "share")])
    with open(OUT_DIR / "categories.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["category_id", "name"])
        wr.writerows(CATEGORIES)
    for split in rows:
        ids = [r["category_id"] for r in rows[split]]
        print(split, len(ids), {n: ids.count(i) for i, n in CATEGORIES})


if __name__ == "__main__":
    main()
