"""``mapsage score``: real LoveDA id masks, the JSON contract, and every error path naming the file."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runners.cli import main
from tests.support.metrics import IGN, LOVEDA_CLASSES, derived_predictions, loveda_masks, plain_metrics

NAMES = ",".join(LOVEDA_CLASSES)


@pytest.fixture
def score_dirs(tmp_path) -> tuple[Path, Path, list]:
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    pairs = []
    for i, (name, lab) in enumerate(loveda_masks()):
        lab = lab.copy()
        if i == 1:
            lab[:100] = IGN
        p = derived_predictions(lab, 7, seed=i)["eroded" if i else "relabelled"]
        stem = name.replace("/", "_")
        Image.fromarray(lab).save(gt / f"{stem}.png")
        if i == 2:   # a palette PNG whose indices are the ids (how many tools save predictions)
            im = Image.frombytes("P", p.shape[::-1], np.ascontiguousarray(p).tobytes())
            im.putpalette([v for k in range(256) for v in (k * 37 % 256, 255 - k, 128)])
            im.save(pred / f"{stem}.png")
        else:
            Image.fromarray(p.astype(np.uint16) if i == 1 else p).save(pred / f"{stem}.png")
        pairs.append((p, lab))
    return pred, gt, pairs


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main(["score", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_score_json_matches_plain_implementation(score_dirs, capsys):
    pred, gt, pairs = score_dirs
    code, out, err = _run(capsys, pred, gt, "--num-classes", 7, "--class-names", NAMES, "--json")
    assert code == 0
    data = json.loads(out)
    assert {"miou", "macc", "aacc", "mf1", "mbiou", "excluded_classes", "classes"} <= set(data)
    ref = plain_metrics(pairs, 7, d=3)
    for key in ("miou", "macc", "aacc", "mf1", "mbiou"):
        assert data[key] == pytest.approx(ref[key], abs=1e-12), key
    assert data["excluded_classes"] == [LOVEDA_CLASSES[k] for k in range(7)
                                        if ref["label"][k] + ref["pred"][k] == 0]
    assert [c["name"] for c in data["classes"]] == LOVEDA_CLASSES
    assert set(data["classes"][0]) >= {"id", "name", "iou", "acc", "precision", "f1", "biou"}
    for name in data["excluded_classes"]:
        row = data["classes"][LOVEDA_CLASSES.index(name)]
        assert row["iou"] is None and row["biou"] is None and row["f1"] is None   # null for NaN
    for c in data["classes"]:
        for key in ("iou", "acc", "precision", "f1", "biou"):
            v = c[key]
            assert v is None or 0.0 <= v <= 1.0
            if v is not None:
                assert v == pytest.approx(ref[key][c["id"]], abs=1e-12)
    assert data["n_images"] == 3 and data["n_ignored"] == 100 * 1024
    assert "scoring" in err                                                 # tqdm on stderr


def test_score_table_and_options(score_dirs, capsys):
    pred, gt, pairs = score_dirs
    code, out, _ = _run(capsys, pred, gt, "--num-classes", 7, "--boundary-px", 2, "--border-is-edge",
                        "--no-progress")
    assert code == 0
    assert "class_6" in out and "d=2 px, image border counts as edge" in out and "mIoU" in out
    ref = plain_metrics(pairs, 7, d=2, border_is_edge=True)
    assert f"mBIoU {ref['mbiou'] * 100:.2f}" in out
    code, out, _ = _run(capsys, pred, gt, "--num-classes", 7, "--boundary-ratio", 0.02, "--json", "--no-progress")
    assert json.loads(out)["boundary_ratio"] == 0.02 and json.loads(out)["boundary_px"] is None


def _error(capsys, *args) -> str:
    code, out, err = _run(capsys, *args, "--no-progress")
    assert code == 2 and out == ""
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ")
    return line


def test_missing_and_extra_files_are_named(score_dirs, capsys):
    pred, gt, _ = score_dirs
    victim = sorted(pred.glob("*.png"))[0]
    victim.rename(pred / "unrelated.png")
    line = _error(capsys, pred, gt, "--num-classes", 7)
    assert f"expected {victim}" in line and "no prediction for label" in line
    (pred / "unrelated.png").rename(victim)
    (pred / "extra_one.png").write_bytes(victim.read_bytes())
    line = _error(capsys, pred, gt, "--num-classes", 7)
    assert f"prediction {pred / 'extra_one.png'} has no label: expected {gt / 'extra_one.png'}" in line


def test_size_mismatch_is_named(score_dirs, capsys):
    pred, gt, _ = score_dirs
    victim = sorted(pred.glob("*.png"))[1]
    Image.fromarray(np.zeros((1024, 1000), np.uint8)).save(victim)
    line = _error(capsys, pred, gt, "--num-classes", 7)
    assert str(victim) in line and "1000×1024" in line and "1024×1024" in line


def test_out_of_range_values_are_named(score_dirs, capsys):
    pred, gt, _ = score_dirs
    victim = sorted(pred.glob("*.png"))[0]
    arr = np.array(Image.open(victim))
    arr[500:510, 500:510] = 9
    Image.fromarray(arr).save(victim)
    line = _error(capsys, pred, gt, "--num-classes", 7)
    assert str(victim) in line and "prediction values [9]" in line
    # labels: with 5 classes, id 6 (agriculture) of the first label file is out of range
    line = _error(capsys, pred, gt, "--num-classes", 5)
    first_gt = sorted(gt.glob("*.png"))[0]
    assert f"error: {first_gt}: label values [6] are neither class ids 0..4" in line and "--ignore-index" in line


def test_colour_images_and_bad_arguments(score_dirs, capsys, tmp_path):
    pred, gt, _ = score_dirs
    victim = sorted(pred.glob("*.png"))[0]
    colour = np.zeros((1024, 1024, 3), np.uint8)
    colour[..., 0] = 200                             # not grey: a colour picture, not ids written as grey
    Image.fromarray(colour).save(victim)
    line = _error(capsys, pred, gt, "--num-classes", 7)
    assert str(victim) in line and "RGB" in line and "class-id" in line and "--palette" in line
    victim.write_bytes((gt / victim.name).read_bytes())
    line = _error(capsys, pred, gt, "--num-classes", 7, "--class-names", "a,b")
    assert "--class-names lists 2 names" in line
    line = _error(capsys, pred, tmp_path / "nope", "--num-classes", 7)
    assert "nope" in line and "does not exist" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _error(capsys, empty, gt, "--num-classes", 7)
    assert "holds no .png/.tif masks" in line
    line = _error(capsys, pred, gt, "--num-classes", 7, "--ignore-index", 3)
    assert "ignore_index 3" in line
    (pred / "broken.png").write_bytes(b"not a png")
    (gt / "broken.png").write_bytes(b"not a png")
    line = _error(capsys, pred, gt, "--num-classes", 7)
    assert "broken.png" in line and "cannot read" in line


def test_score_command_line_process(score_dirs):
    """The installed entry point: one error line, exit status 2, no traceback."""
    pred, gt, _ = score_dirs
    exe = Path(sys.executable).with_name("mapsage")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "runners.cli"]
    done = subprocess.run(cmd + ["score", str(pred), str(gt), "--num-classes", "7", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not math.isnan(json.loads(done.stdout)["miou"])
    done = subprocess.run(cmd + ["score", str(pred), str(gt), "--num-classes", "3"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "label values" in done.stderr
