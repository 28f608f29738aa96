"""``mapsage data inspect``: counts per split, class shares, ignored pixels by cause, unknown colours, problems."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mapsage.data import summarize
from runners.cli import main
from tests.support.data import (
    DUBAI_CONFIG,
    DUBAI_README_SHARES,
    LOVEDA_CLASSES,
    LOVEDA_CONFIG,
    copy_dubai_tiles,
    copy_loveda,
    dubai_full_scan,
)


def run_cli(capsys, *args):
    code = main(["data", "inspect", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_dubai_val_split_json_matches_an_independent_scan(capsys):
    code, out, err = run_cli(capsys, DUBAI_CONFIG, "--split", "val", "--json")
    assert code == 0
    report = json.loads(out)
    assert "scanning dubai" in err                                   # the progress bar is on stderr only
    assert list(report["splits"]) == ["val"] and "total" not in report
    val = report["splits"]["val"]
    assert val["samples"] == 18 and val["with_masks"] == 18 and val["problems"] == []
    assert val["groups"] == ["Tile 3", "Tile 8"]
    # the same numbers from the session's full scan of all 72 pairs, restricted to the val tiles
    ds, scans = dubai_full_scan()
    ref = summarize([s for s in scans if s.id.split("/")[0] in val["groups"]], ds.classes, ["#9B9B9B", "#000000"])
    assert [r["pixels"] for r in val["classes"]] == [r["pixels"] for r in ref["classes"]]
    assert val["ignored"] == ref["ignored"] and val["pixels"] == ref["pixels"]
    assert set(val["ignored"]) == {"#9B9B9B", "#000000"} and val["unknown"] == {}


def test_inspect_dubai_all_splits_text_matches_readme(capsys):
    # the text report's "all splits" block over the 72 pairs, against ../shared/data/README.md
    code, out, _ = run_cli(capsys, DUBAI_CONFIG, "--no-progress")
    assert code == 0
    assert "== train: 54 samples, 54 with masks" in out and "== val: 18 samples, 18 with masks" in out
    block = out.split("== all splits: 72 samples, 72 with masks")[1]
    shares = {}
    for line in block.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0].isdigit():
            shares[parts[1]] = float(parts[3].rstrip("%"))
    assert set(shares) == set(DUBAI_README_SHARES)
    for name, expected in DUBAI_README_SHARES.items():   # README: 1 decimal; text: 2 (road prints 9.35)
        assert shares[name] == pytest.approx(expected, abs=0.05 + 0.006), name
    assert "ignored #000000" in block and "ignored #9B9B9B" in block
    assert "unknown colours/values: none" in block and out.rstrip().endswith("no problems found")


def test_inspect_loveda_samples_in_loveda_order_with_id_0_ignored(capsys, tmp_path):
    code, out, _ = run_cli(capsys, LOVEDA_CONFIG, "--no-progress", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["classes"] == LOVEDA_CLASSES
    assert report["ignore_rules"] == {"values": [0]}
    assert {k: v["samples"] for k, v in report["splits"].items()} == {"train": 2, "val": 1}
    assert report["absent_splits"] == ["test"]
    assert [r["name"] for r in report["total"]["classes"]] == LOVEDA_CLASSES
    assert report["total"]["pixels"] == 3 * 1024 * 1024
    assert report["splits"]["train"]["domains"] == {"Rural": 2}
    assert report["total"]["ignored"] == {"value 0": {"pixels": 0, "share": 0.0}}
    # the real tiles hold no id 0; a copy with a no-data strip shows it counted as ignored, not as a class
    root = copy_loveda(tmp_path)
    raw = np.asarray(Image.open(root / "Val/Rural/masks_png/2.png")).copy()
    forest_before = int((raw == 6).sum())
    raw[:64] = 0
    Image.fromarray(raw).save(root / "Val/Rural/masks_png/2.png")
    code, out, _ = run_cli(capsys, LOVEDA_CONFIG, "--no-progress", "--split", "val", "--set", f"dataset.root={root}")
    assert code == 0
    ignored_line = next(line for line in out.splitlines() if "ignored value 0" in line)
    assert int(ignored_line.split()[-2].replace(",", "")) == 64 * 1024
    forest_line = next(line for line in out.splitlines() if " forest " in line)
    assert int(forest_line.split()[2].replace(",", "")) == int((raw == 6).sum()) < forest_before


def test_inspect_reports_unknown_colours_and_problems_without_stopping(capsys, tmp_path):
    root = copy_dubai_tiles(tmp_path, tiles=("Tile 8", "Tile 2"), parts=(3,))
    mask_path = root / "Tile 2/masks/image_part_003.png"
    img = Image.open(mask_path)
    img.crop((0, 0, img.width, img.height - 5)).save(mask_path)          # size mismatch in one pair
    code, out, _ = run_cli(capsys, DUBAI_CONFIG, "--no-progress", "--json", "--set", f"dataset.root={root}",
                           "--set", "dataset.ignore_colors=[]", "--set", "dataset.split.ratios={train: 1.0}")
    assert code == 1
    report = json.loads(out)
    train = report["splits"]["train"]
    assert set(train["unknown"]) == {"#000000", "#9B9B9B"}
    assert train["unknown"]["#000000"]["files"] >= 1 and train["unknown"]["#000000"]["pixels"] > 500_000
    assert train["ignored"] == {} and not report["ok"]
    problems = " | ".join(p["problem"] for p in train["problems"])
    assert "not named by the config: #000000" in problems
    assert str(mask_path) in problems and "image_part_003.jpg" in problems
    code, text, _ = run_cli(capsys, DUBAI_CONFIG, "--no-progress", "--set", f"dataset.root={root}",
                            "--set", "dataset.ignore_colors=[]", "--set", "dataset.split.ratios={train: 1.0}")
    assert code == 1 and "UNKNOWN (not in the config's map" in text and "PROBLEMS:" in text


def test_inspect_verify_images_finds_a_truncated_jpeg(capsys, tmp_path):
    root = copy_dubai_tiles(tmp_path, tiles=("Tile 2",), parts=(1, 2))
    bad = root / "Tile 2/images/image_part_002.jpg"
    bad.write_bytes(bad.read_bytes()[:5000])
    args = (DUBAI_CONFIG, "--no-progress", "--json", "--set", f"dataset.root={root}",
            "--set", "dataset.split.ratios={train: 1.0}")
    code, out, _ = run_cli(capsys, *args, "--verify-images")
    assert code == 1
    problems = json.loads(out)["splits"]["train"]["problems"]
    assert len(problems) == 1 and str(bad) in problems[0]["problem"]


def test_inspect_user_errors_exit_2_with_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, DUBAI_CONFIG, "--set", "dataset.ignore_colours=[]")
    assert code == 2 and "did you mean 'dataset.ignore_colors'?" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, DUBAI_CONFIG, "--set", f"dataset.root={tmp_path / 'absent'}")
    assert code == 2 and "dataset.root: folder" in err
    code, _, err = run_cli(capsys, DUBAI_CONFIG, "--split", "tets")
    assert code == 2 and "split 'tets' is not one of ['train', 'val']" in err


def test_data_split_command_saves_split_json(capsys, tmp_path):
    assert main(["data", "split", str(DUBAI_CONFIG)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["counts"] == {"train": 54, "val": 18} and shown["groups_in_several_splits"] == []
    assert main(["data", "split", str(DUBAI_CONFIG), "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "split.json").read_text())
    assert saved["groups"] == shown["groups"]
