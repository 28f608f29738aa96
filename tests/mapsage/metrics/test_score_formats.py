"""``mapsage score`` on what people have: the workbench's own prediction folders (ids beside _color.png), grey RGB
labels, TIFF / GeoTIFF id rasters, the real Dubai colour masks read through --palette, unmatched names counted
and listed, and mmseg-converted labels (off by one without --reduce-zero-label)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mapsage.infer.predictions import PredictionWriter
from mapsage.metrics import SegMetrics
from runners.cli import main
from tests.support.data import DUBAI_COLOURS, DUBAI_ROOT
from tests.support.formats import mmseg_loveda_layout
from tests.support.metrics import decode_dubai, derived_predictions

TILES = ["Tile 1/image_part_001", "Tile 2/image_part_003", "Tile 8/image_part_003"]
PALETTE = ",".join(["#E2A929", "#8429F6", "#6EC1E4", "#3C1098", "#FEDD3A"])     # water land road building veg
assert [DUBAI_COLOURS[c] for c in PALETTE.split(",")] == ["water", "land", "road", "building", "vegetation"]


def _labels():
    return {t: decode_dubai(_mask_file(t)).copy() for t in TILES}


def _mask_file(tile):
    return DUBAI_ROOT / (tile.replace("/", "/masks/") + ".png")


def _reference(pairs):
    m = SegMetrics(5)
    for pred, lab in pairs:
        m.update(pred, lab)
    return m.result()


def _score(capsys, *args):
    code = main(["score", *map(str, args), "--no-progress", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out), out.err


def test_app_prediction_folder_grey_rgb_labels_and_tiff(tmp_path, capsys):
    labels = _labels()
    preds = {t: derived_predictions(lab, 5, seed=i)["shifted"] for i, (t, lab) in enumerate(labels.items())}
    # predictions as the workbench writes them: <variant>/Tile_1/image_part_001.png + _color.png
    writer = PredictionWriter(tmp_path / "predictions", "raw", PALETTE.split(","), 5)
    for t, p in preds.items():
        writer.write(t, p)
    pred_dir = tmp_path / "predictions" / "raw"
    assert len(list(pred_dir.rglob("*_color.png"))) == 3
    # labels as grey RGB PNGs (ids as grey levels), in folders named like the dataset ("Tile 1" with a space)
    gt = tmp_path / "gt"
    for t, lab in labels.items():
        (gt / t).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.repeat(lab[..., None], 3, axis=2)).save(gt / f"{t}.png")
    data, err = _score(capsys, pred_dir, gt, "--num-classes", 5)
    ref = _reference([(preds[t], labels[t]) for t in TILES])
    assert data["pairs"] == 3 and data["colour_twins_skipped"] == 3
    assert data["miou"] == pytest.approx(ref.miou, abs=1e-12) and data["mbiou"] == pytest.approx(ref.mbiou, abs=1e-12)
    # the same predictions as TIFF (Pillow) and GeoTIFF (rasterio, with a CRS) id rasters
    import rasterio
    from rasterio.transform import from_origin
    tif = tmp_path / "tif"
    tif.mkdir()
    for i, (t, p) in enumerate(preds.items()):
        name = t.replace("/", "_")
        if i == 0:
            Image.fromarray(p).save(tif / f"{name}.tif")
        else:
            with rasterio.open(tif / f"{name}.tif", "w", driver="GTiff", width=p.shape[1], height=p.shape[0],
                               count=1, dtype="uint8", crs="EPSG:32640",
                               transform=from_origin(300000, 2800000, 0.5, 0.5)) as dst:
                dst.write(p, 1)
    flat = tmp_path / "gt_flat"
    flat.mkdir()
    for t, lab in labels.items():
        Image.fromarray(lab).save(flat / f"{t.replace('/', '_')}.png")
    data, _ = _score(capsys, tif, flat, "--num-classes", 5)
    assert data["pairs"] == 3 and data["miou"] == pytest.approx(ref.miou, abs=1e-12)


def test_real_colour_masks_with_a_palette(tmp_path, capsys):
    labels = _labels()
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    pred.mkdir()
    pairs = []
    for i, t in enumerate(TILES):
        name = t.replace("/", "_")
        (gt).mkdir(exist_ok=True)
        (gt / f"{name}.png").write_bytes(_mask_file(t).read_bytes())
        p = derived_predictions(labels[t], 5, seed=i)["noisy"]
        Image.fromarray(p).save(pred / f"{name}.png")
        pairs.append((p, labels[t]))
    data, _ = _score(capsys, pred, gt, "--num-classes", 5, "--palette", PALETTE, "--ignore-colors",
                     "#9B9B9B,#000000")
    ref = _reference(pairs)
    assert data["miou"] == pytest.approx(ref.miou, abs=1e-12) and data["n_ignored"] == ref.n_ignored > 0
    # without --ignore-colors the unlabelled colour is named
    code = main(["score", str(pred), str(gt), "--num-classes", "5", "--palette", PALETTE, "--no-progress"])
    assert code == 2 and "#9B9B9B" in capsys.readouterr().err


def test_unmatched_names_are_counted_and_listed(tmp_path, capsys):
    labels = _labels()
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for t, lab in labels.items():
        Image.fromarray(lab).save(gt / f"{t.replace('/', '_')}.png")
        Image.fromarray(lab).save(pred / f"{t.replace('/', '_')}.png")
    (pred / "Tile 2_image_part_003.png").rename(pred / "renamed.png")
    Image.fromarray(labels[TILES[0]]).save(pred / "stray.png")
    code = main(["score", str(pred), str(gt), "--num-classes", "5", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert "1 label(s) without a prediction" in err and "2 prediction(s) without a label" in err
    assert "renamed.png" in err and "stray.png" in err and "2 pair(s) match" in err and "--matched-only" in err
    data, warn = _score(capsys, pred, gt, "--num-classes", 5, "--matched-only")
    assert data["pairs"] == 2 and data["miou"] == 1.0
    assert len(data["unmatched"]["predictions_without_label"]) == 2 and "left out" in warn


def test_mmseg_converted_labels_warn_and_read_with_reduce_zero_label(tmp_path, capsys):
    root = mmseg_loveda_layout(tmp_path / "loveDA")
    gt = root / "ann_dir" / "train"
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in gt.glob("*.png"):
        raw = np.array(Image.open(f)).astype(np.int16)
        Image.fromarray(np.where(raw == 0, 0, raw - 1).astype(np.uint8)).save(pred / f.name)   # perfect
    # 7 classes: the raw 7 is no class id: the error names the fix
    code = main(["score", str(pred), str(gt), "--num-classes", "7", "--no-progress"])
    assert code == 2 and "--reduce-zero-label" in capsys.readouterr().err
    # a class table with room for the raw ids: it scores, badly, and warns
    data, warn = _score(capsys, pred, gt, "--num-classes", 8)
    assert data["miou"] < 0.1
    assert any("shifted by one" in w and "--reduce-zero-label" in w for w in data["warnings"])
    assert "warning: the labels look shifted by one" in warn
    # read as mmseg does
    data, warn = _score(capsys, pred, gt, "--num-classes", 7, "--reduce-zero-label")
    assert data["miou"] == 1.0 and not [w for w in data["warnings"] if "shift" in w or "reduce" in w]
