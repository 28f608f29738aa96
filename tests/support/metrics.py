"""Helpers for the metrics tests: real masks, predictions derived from them, and an independent plain
implementation of the metric definitions (per class boolean masks, Python loops, scipy morphology: nothing shared
with the engine's histogram / OpenCV code)."""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[2]
LOVEDA = ROOT / "tests" / "data" / "loveda"
DUBAI = ROOT / "data" / "demo" / "dubai-aerial" / "Semantic segmentation dataset"
LOVEDA_CLASSES = ["background", "building", "road", "water", "barren", "forest", "agriculture"]
IGN = 255


@lru_cache(maxsize=None)
def loveda_masks() -> tuple[tuple[str, np.ndarray], ...]:
    """The three real LoveDA masks as class ids 0..6 with 255 for no-data (raw 0), in a fixed order."""
    out = []
    for path in sorted(LOVEDA.glob("*/*/masks_png/*.png")):
        raw = np.array(Image.open(path)).astype(np.int16)
        ids = raw - 1
        ids[raw == 0] = IGN
        out.append((f"{path.parent.parent.name}/{path.stem}", ids.astype(np.uint8)))
    assert len(out) == 3, out
    return tuple(out)


@lru_cache(maxsize=None)
def dubai_colour_map() -> tuple[list[str], dict[tuple[int, int, int], int], set]:
    cfg = yaml.safe_load((ROOT / "configs" / "_base_" / "datasets" / "dubai.yaml").read_text())["dataset"]
    classes = cfg["classes"]

    def rgb(h: str) -> tuple[int, int, int]:
        h = h.lstrip("#")
        return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))

    cmap = {rgb(c): classes.index(name) for c, name in cfg["color_map"].items()}
    ignore = {rgb(c) for c in cfg["ignore_colors"]}
    return classes, cmap, ignore


def decode_dubai(path: Path) -> np.ndarray:
    """A Dubai RGB (or palette) colour mask -> class ids, ignore colours -> 255; an unknown colour fails."""
    _, cmap, ignore = dubai_colour_map()
    rgb = np.array(Image.open(path).convert("RGB")).astype(np.int32)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    out = np.full(code.shape, 254, np.uint8)
    for (r, g, b), k in cmap.items():
        out[code == ((r << 16) | (g << 8) | b)] = k
    for (r, g, b) in ignore:
        out[code == ((r << 16) | (g << 8) | b)] = IGN
    assert not (out == 254).any(), f"unknown colour in {path}"
    return out


def dubai_masks(names=("Tile 1/masks/image_part_001.png", "Tile 2/masks/image_part_003.png",
                       "Tile 8/masks/image_part_003.png")) -> list[tuple[str, np.ndarray]]:
    """Some real Dubai masks (Tile 2 is a palette PNG; Tile 8 part 3 has ~17 % black = ignored pixels)."""
    return [(n, decode_dubai(DUBAI / n)) for n in names]


def derived_predictions(label: np.ndarray, num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Predictions made from a real label: eroded (grey erosion of the id map), shifted, relabelled, noisy.
    Pixels under the ignore index get arbitrary class ids (a model predicts something there)."""
    rng = np.random.default_rng(seed)
    base = label.copy()
    ign = base == IGN
    base[ign] = rng.integers(0, num_classes, int(ign.sum()))
    h, w = base.shape
    eroded = ndimage.grey_erosion(base, size=(5, 5)).astype(np.uint8)
    shifted = np.roll(base, (7, -4), axis=(0, 1))
    relabelled = base.copy()
    a, b = 0, num_classes - 1
    patch = (slice(h // 4, h // 2), slice(w // 3, 2 * w // 3))
    sub = relabelled[patch]
    sub_a, sub_b = sub == a, sub == b
    sub[sub_a], sub[sub_b] = b, a                      # swap two classes inside a patch
    relabelled[: h // 8] = 1 % num_classes             # and paint a strip with one class
    noisy = shifted.copy()
    flip = rng.random(base.shape) < 0.05
    noisy[flip] = rng.integers(0, num_classes, int(flip.sum()))
    return {"eroded": eroded, "shifted": shifted, "relabelled": relabelled, "noisy": noisy}


# --------------------------------------------------------------------------------------- plain reference
def plain_areas(pred: np.ndarray, label: np.ndarray, C: int, ignore: int = IGN) -> dict[str, list[int]]:
    """Per-class intersection / label / prediction areas with one boolean mask per class (no bincount)."""
    valid = label != ignore
    out = {"inter": [], "label": [], "pred": []}
    for k in range(C):
        lk = (label == k) & valid
        pk = (pred == k) & valid
        out["inter"].append(int(np.count_nonzero(lk & pk)))
        out["label"].append(int(np.count_nonzero(lk)))
        out["pred"].append(int(np.count_nonzero(pk)))
    return out


def plain_band(class_map: np.ndarray, k: int, d: int, valid: np.ndarray, border_is_edge: bool) -> np.ndarray:
    """Band of class k by the per-class definition: valid pixels of class k within Chebyshev distance d of a
    valid pixel of another class (or of the outside, with ``border_is_edge``). scipy binary dilation."""
    other = valid & (class_map != k)
    struct = np.ones((2 * d + 1, 2 * d + 1), bool)
    if border_is_edge:
        padded = np.pad(other, d, constant_values=True)
        near = ndimage.binary_dilation(padded, structure=struct)[d:-d, d:-d]
    else:
        near = ndimage.binary_dilation(other, structure=struct)
    return (class_map == k) & valid & near


def plain_band_areas(pred, label, C: int, d: int, border_is_edge: bool = False, ignore: int = IGN):
    valid = label != ignore
    bi, bu = [], []
    for k in range(C):
        bp = plain_band(pred, k, d, valid, border_is_edge)
        bl = plain_band(label, k, d, valid, border_is_edge)
        bi.append(int(np.count_nonzero(bp & bl)))
        bu.append(int(np.count_nonzero(bp | bl)))
    return bi, bu


def plain_metrics(pairs, C: int, d: int = 3, border_is_edge: bool = False, ignore: int = IGN) -> dict:
    """Dataset-level metrics from the plain areas, in Python loops, with the NaN rules written out."""
    I, L, P, BI, BU = [0] * C, [0] * C, [0] * C, [0] * C, [0] * C
    per_image = []
    for pred, label in pairs:
        a = plain_areas(pred, label, C, ignore)
        bi, bu = plain_band_areas(pred, label, C, d, border_is_edge, ignore)
        img = []
        for k in range(C):
            I[k] += a["inter"][k]
            L[k] += a["label"][k]
            P[k] += a["pred"][k]
            BI[k] += bi[k]
            BU[k] += bu[k]
            u = a["label"][k] + a["pred"][k] - a["inter"][k]
            if u > 0:
                img.append(a["inter"][k] / u)
        if img:
            per_image.append(sum(img) / len(img))
    nan = float("nan")
    iou, acc, prec, f1, biou = [], [], [], [], []
    for k in range(C):
        u = L[k] + P[k] - I[k]
        iou.append(I[k] / u if u else nan)
        acc.append(I[k] / L[k] if L[k] else nan)
        prec.append(I[k] / P[k] if P[k] else nan)
        f1.append(2 * I[k] / (L[k] + P[k]) if (L[k] + P[k]) else nan)
        biou.append(BI[k] / BU[k] if BU[k] else nan)

    def mean(xs):
        xs = [x for x in xs if not math.isnan(x)]
        return sum(xs) / len(xs) if xs else nan

    return {"iou": iou, "acc": acc, "precision": prec, "f1": f1, "biou": biou, "miou": mean(iou),
            "macc": mean(acc), "mf1": mean(f1), "mbiou": mean(biou), "aacc": sum(I) / sum(L) if sum(L) else nan,
            "per_image_miou": mean(per_image), "inter": I, "label": L, "pred": P, "b_inter": BI, "b_union": BU}


def mask_to_boundary_reference(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """The Boundary IoU API's ``mask_to_boundary`` (bowenc0221/boundary-iou-api, boundary_iou/utils/
    boundary_utils.py), copied verbatim in substance: pad by one background pixel, erode with a 3×3 kernel
    ``dilation`` times, subtract. (It counts the image border as an edge.)"""
    import cv2

    h, w = mask.shape
    img_diag = np.sqrt(h ** 2 + w ** 2)
    dilation = int(round(dilation_ratio * img_diag))
    if dilation < 1:
        dilation = 1
    new_mask = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    kernel = np.ones((3, 3), dtype=np.uint8)
    new_mask_erode = cv2.erode(new_mask, kernel, iterations=dilation)
    mask_erode = new_mask_erode[1: h + 1, 1: w + 1]
    return mask - mask_erode


def assert_close(got, expected, tol=1e-12, what=""):
    got, expected = float(got), float(expected)
    if math.isnan(expected):
        assert math.isnan(got), f"{what}: {got} != NaN"
    else:
        assert abs(got - expected) <= tol, f"{what}: {got} != {expected}"


def ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """One rank of the all-reduce test: scores its share of the LoveDA masks, all-reduces, writes what it sees."""
    import json
    import os

    import torch
    import torch.distributed as dist

    from mapsage.metrics import SegMetrics

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        m = SegMetrics(7, keep_tiles=True)
        for i, (name, lab) in enumerate(loveda_masks()):
            if i % world == rank:
                pred = derived_predictions(lab, 7, seed=i)["eroded"]
                m.update(pred, lab, tags="Urban" if i == 1 else "Rural", tile=name)
        m.all_reduce()
        r = m.result()
        urban = m.by_tag("domain")["Urban"]
        out = {"confusion": r.confusion.tolist(), "b_union": r.b_union.tolist(),
               "per_image_miou": r.per_image_miou, "urban_miou": urban.miou,
               "tiles": [t["tile"] for t in m.tile_rows()]}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
            json.dump(out, fh)
    finally:
        dist.destroy_process_group()
