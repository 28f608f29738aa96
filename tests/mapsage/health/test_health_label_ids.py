"""Health check ``label_ids`` on mmseg-converted masks built from real data: the off-by-one of masks read without
``dataset.reduce_zero_label`` fails, the right reading passes, and ISPRS-style ignore strips warn for Boundary IoU
until ``eval.boundary_strip_px`` is set."""
from __future__ import annotations

import torch

from mapsage.config import load_config
from mapsage.data import format_report, inspect_config
from mapsage.health import HealthRun, run_check
from tests.support.formats import isprs_style_layout, mmseg_loveda_layout

torch.set_num_threads(1)
LOVEDA_MMSEG = "configs/stage1_baselines/segformer_mit-b2_loveda-mmseg.yaml"
POTSDAM = "configs/stage1_baselines/segformer_mit-b2_potsdam.yaml"
DUBAI5 = ["dataset.classes=[water, land, road, building, vegetation]",
          "dataset.palette=['#E2A929', '#8429F6', '#6EC1E4', '#3C1098', '#FEDD3A']"]


def _check(cfg, tmp_path):
    return run_check(HealthRun(cfg=cfg, out_dir=tmp_path / "health"), "label_ids")


def test_mmseg_loveda_without_reduce_zero_label_fails_and_with_it_passes(tmp_path):
    root = mmseg_loveda_layout(tmp_path / "loveDA")
    bad = _check(load_config(LOVEDA_MMSEG, [f"dataset.root={root}", "dataset.reduce_zero_label=false"]), tmp_path)
    assert bad.status == "fail", bad.verdict
    assert "dataset.reduce_zero_label: true" in bad.verdict and "value 7" in bad.verdict
    assert bad.evidence["values"][-1] == 7
    good = _check(load_config(LOVEDA_MMSEG, [f"dataset.root={root}"]), tmp_path)
    assert good.status == "pass", good.verdict
    assert good.evidence["boundary_masks_scored"] == 3 and "boundary_warnings" not in good.evidence
    assert "reduce_zero_label" in good.verdict


def test_isprs_style_labels_off_by_one_strips_and_boundary_warning(tmp_path):
    root = isprs_style_layout(tmp_path / "potsdam")
    base = [f"dataset.root={root}", *DUBAI5]
    # read as plain ids: value 5 is no class id of 5 classes -> fail naming the fix
    bad = _check(load_config(POTSDAM, base + ["dataset.reduce_zero_label=false"]), tmp_path)
    assert bad.status == "fail" and "reduce_zero_label" in bad.verdict
    assert bad.evidence["value0_ignore_like_share"] > 0.9          # value 0 is the strip along every border
    # a class table with room for the ids (0 taken as a sixth class): the strip shape gives it away -> warn
    six = ["dataset.classes=[boundary, water, land, road, building, vegetation]",
           "dataset.palette=['#000000', '#E2A929', '#8429F6', '#6EC1E4', '#3C1098', '#FEDD3A']"]
    odd = _check(load_config(POTSDAM, [f"dataset.root={root}", *six, "dataset.reduce_zero_label=false"]), tmp_path)
    assert odd.status == "warn" and "looks like an ignore value" in odd.verdict
    # right reading, plain Boundary IoU: the classes have no boundary pixels -> warn naming eval.boundary_strip_px
    plain = _check(load_config(POTSDAM, base + ["eval.boundary_strip_px=0"]), tmp_path)
    assert plain.status == "warn" and "eval.boundary_strip_px" in plain.verdict
    assert sum(plain.evidence["boundary_pixels"].values()) == 0
    # the template's strip rule: boundaries exist, the check passes
    ok = _check(load_config(POTSDAM, base), tmp_path)
    assert ok.status == "pass", ok.verdict
    assert min(ok.evidence["boundary_pixels"].values()) > 0


def test_data_inspect_warns_on_classes_without_pixels(tmp_path):
    root = mmseg_loveda_layout(tmp_path / "loveDA")
    cfg = load_config(LOVEDA_MMSEG, [f"dataset.root={root}"])
    report = inspect_config(cfg, progress=False, workers=1)
    warned = " ".join(report["warnings"])
    assert "class 4 'barren' has no pixels in any scanned split" in warned      # no barren in these tiles
    text = format_report(report)
    assert "WARNING class 4 'barren'" in text and "warning(s) above" in text
