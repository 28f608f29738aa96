"""Stage 0 health checks on good cases: every check passes on the bundled demo recipe (Dubai) and on the LoveDA
sample tiles, with the evidence it claims; plus the pieces the checks are built from (perceptual hashes on real
images, the eval fingerprint, the result table)."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from mapsage.data.hashing import content_hash, hamming, image_hashes
from mapsage.events import EventWriter, read_events
from mapsage.health import CHECKS, CheckResult, format_table, run_check, run_checks
from mapsage.health.alignment import correlation_ratio, derive_label, offset_scan
from mapsage.health.eval_consistency import eval_fingerprint, fingerprint_diff
from mapsage.health.result import health_records
from tests.support.health import DUBAI_ROOT, dubai_cfg, health_run, loveda_cfg


def _img(tile: int, part: int) -> np.ndarray:
    p = DUBAI_ROOT / f"Tile {tile}" / "images" / f"image_part_{part:03d}.jpg"
    return cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)


# ------------------------------------------------------------------------------------------ building blocks
def test_perceptual_hashes_match_edited_copies_and_separate_other_tiles():
    a = _img(1, 1)
    h = image_hashes(a)
    # re-encoded as JPEG at quality 60, brightened by 8 %, halved in size: still within a few bits
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(a, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 60])
    edited = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    edited = np.clip(edited.astype(np.float32) * 1.08, 0, 255).astype(np.uint8)
    edited = cv2.resize(edited, (a.shape[1] // 2, a.shape[0] // 2), interpolation=cv2.INTER_AREA)
    he = image_hashes(edited)
    assert he["sha1"] != h["sha1"]
    assert int(hamming(he["phash"][0], h["phash"][0])) <= 6
    assert int(hamming(he["dhash"][0], h["dhash"][0])) <= 6
    # a horizontally flipped copy matches through the dihedral variants (variant 1 = identity flipped)
    hf = image_hashes(np.ascontiguousarray(a[:, ::-1]))
    assert int(hamming(h["phash"][1], hf["phash"][0])) <= 2
    # a different real tile is far away in both hashes
    other = image_hashes(_img(3, 5))
    assert int(hamming(other["phash"][0], h["phash"][0])) > 12
    assert content_hash(a) == content_hash(a.copy()) != content_hash(edited)


def test_correlation_ratio_and_offset_scan_find_a_known_shift():
    img = _img(2, 4)[:300, :300]
    lab = derive_label(img, 5)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    eta = correlation_ratio(gray, lab, np.ones(lab.shape, bool), 4)
    assert 0.7 < eta <= 1.0
    shifted = np.roll(gray, (3, -2), axis=(0, 1))      # the image moved 3 px down, 2 px left
    _, best = offset_scan(shifted[8:-8, 8:-8], lab[8:-8, 8:-8].astype(np.int64), 255, 4)
    assert best == (3, -2)


def test_fingerprint_sees_window_tta_and_normalisation():
    cfg = dubai_cfg()
    same = eval_fingerprint(cfg)
    assert fingerprint_diff(same, eval_fingerprint(dubai_cfg())) == []
    other = dubai_cfg("eval.mode=whole", "eval.tta.hflip=true", "model.mean=[0.5,0.5,0.5]", "model.std=[0.5,0.5,0.5]")
    keys = {d["setting"] for d in fingerprint_diff(same, eval_fingerprint(other))}
    assert {"window.mode", "window.tile", "window.stride", "tta.hflip",
            "preprocessing.normalisation.mean", "preprocessing.normalisation.std"} <= keys


def test_result_table_and_event_round_trip(tmp_path):
    results = [CheckResult("ids", "pass", "all good"), CheckResult("splits", "warn", "one split only " * 12),
               CheckResult("metric", "fail", "mIoU averages absent classes")]
    text = format_table(results, width=100)
    assert "ids" in text and "WARN" in text and "FAIL" in text
    assert text.splitlines()[-1] == "health FAILED: 1 pass, 1 warn, 1 fail"
    assert max(len(line) for line in text.splitlines()) <= 100
    ev = EventWriter(tmp_path)
    for r in results:
        ev.emit("health", **r.to_event())
    ev.emit("health", **CheckResult("metric", "pass", "fixed").to_event())   # a re-run of one check
    rows = health_records(tmp_path)
    assert [(r["check"], r["status"]) for r in rows] == [("ids", "pass"), ("splits", "warn"), ("metric", "pass")]
    with pytest.raises(ValueError):
        CheckResult("x", "ok", "bad status")


# ------------------------------------------------------------------------------------------ the checks, Dubai
def test_cheap_checks_pass_on_the_dubai_demo(tmp_path, one_thread):
    h = health_run(dubai_cfg(), tmp_path)
    results = {r.check: r for r in run_checks(h, ["ids", "normalisation", "splits", "eval_consistency", "metric"])}
    for name, r in results.items():
        assert r.status == "pass", f"{name}: {r.verdict}"
    ids = results["ids"].evidence
    assert ids["masks_scanned"] == 16 and ids["decoded_values_outside_classes"] == {}
    assert set(ids["mask_modes"]) == {"RGB", "P"}                 # palette PNGs of Tiles 2 and 4 among them
    assert ids["loss_probe"]["max_grad_on_ignore_pixels"] == 0.0
    assert ids["model_probe"]["model_channels"] == 5
    assert set(ids["ignored_by_rule"]) <= {"#9B9B9B", "#000000"}   # the explicit ignore colours, counted
    norm = results["normalisation"].evidence
    for row in norm["in_use_recovered"]:
        assert np.allclose(row["mean"], [0.485, 0.456, 0.406], atol=2e-3)
        assert np.allclose(row["std"], [0.229, 0.224, 0.225], atol=2e-3)
    splits = results["splits"].evidence
    assert splits["splits"] == {"train": 54, "val": 18} and splits["n_near_duplicates"] == 0
    ec = results["eval_consistency"].evidence
    assert ec["finals"] and all(not f["differences"] for f in ec["finals"])   # the stage-3 demo templates
    assert all(c["ok"] for c in results["metric"].evidence["cases"])
    # every result went to the event writer as a ``health`` record (a NullEvents here): the table renders
    assert "health PASSED" in format_table(list(results.values()))


def test_alignment_passes_and_stores_its_overlay(tmp_path, one_thread):
    run = tmp_path / "run"
    events = EventWriter(run)
    h = health_run(dubai_cfg(), tmp_path, events=events)
    r = run_check(h, "alignment")
    assert r.status == "pass", r.verdict
    assert r.picture == "health/alignment.png" and (run / r.picture).is_file()
    pic = cv2.imread(str(run / r.picture))
    assert pic.shape[0] > 200 and pic.shape[1] > 1000
    assert all(t["eta2_zero"] > 0.5 * r.evidence["eta2_untransformed"] for t in r.evidence["trials"])
    arts = [e for e in read_events(run / "events.jsonl")[0] if e["type"] == "artifact"]
    assert arts and arts[0]["path"] == "health/alignment.png" and arts[0]["kind"] == "overlay"


def test_sanity_fit_learns_and_stores_its_curve(tmp_path, one_thread):
    run = tmp_path / "run"
    events = EventWriter(run)
    h = health_run(dubai_cfg(), tmp_path, events=events)
    r = run_check(h, "sanity")
    assert r.status == "pass", r.verdict
    ev = r.evidence
    assert ev["reached_at_step"] is not None and ev["best_smoothed"] < 0.5 * ev["start"]
    got, total = (int(v) for v in ev["params_with_grad"].split("/"))
    assert got >= 0.9 * total          # stochastic depth may drop a block of mit_b0 for this batch
    records = read_events(run / "events.jsonl")[0]
    curve = [e["values"]["loss"] for e in records if e["type"] == "scalars" and e["split"] == "sanity"]
    assert curve == pytest.approx(ev["curve"], rel=1e-4)
    assert (run / "health" / "sanity_curve.png").is_file()


def test_per_class_reads_the_latest_evaluation_of_the_run_under_test(tmp_path, tmp_workspace):
    """stage.checkpoint names a run; its event file holds a training-time validation and a final evaluation made
    by the real metrics engine on real masks; the check reads the final one and names the weakest classes."""
    from mapsage.config import save_resolved
    from mapsage.data import build_dataset, load_mask
    from mapsage.metrics import SegMetrics

    cfg = dubai_cfg()
    rid = "run-under-test"
    run = tmp_workspace / "runs" / rid
    save_resolved(dubai_cfg(), run)                 # the run's resolved config, as every run has
    ev = EventWriter(run)
    val = build_dataset(cfg, "val")
    m = SegMetrics(5, 255, class_names=list(cfg.dataset.classes))
    for s in val.samples[:3]:
        label = load_mask(s.mask_path, cfg.dataset)
        pred = np.roll(label, 9, axis=1).copy()
        pred[pred == 255] = 1
        pred[pred == 2] = 1              # road predicted as land: road becomes the weakest class
        m.update(pred, label)
    res = m.result()
    ev.emit("metrics", **res.to_event("val", "all", "raw", epoch=3))
    ev.emit("metrics", **res.to_event("val", "all", "ema", epoch=None))
    cfg.stage.checkpoint = rid
    r = run_check(health_run(cfg, tmp_path), "per_class")
    assert r.status in ("pass", "warn"), r.verdict
    assert "final evaluation of run run-under-test" in r.evidence["source"]
    assert r.evidence["weakest"][0]["class"] == "road" and r.evidence["weakest"][0]["iou"] == 0.0
    assert math.isclose(r.evidence["miou"], res.miou, abs_tol=1e-9)
    # the evaluation-consistency check compares the run's own resolved config with the final templates
    r = run_check(health_run(cfg, tmp_path), "eval_consistency")
    assert r.status == "pass" and r.evidence["training_config"] == str(run / "config.yaml")


# ------------------------------------------------------------------------------------------ LoveDA samples
def test_loveda_samples_pass_the_data_checks(tmp_path, one_thread):
    h = health_run(loveda_cfg(), tmp_path)
    results = {r.check: r for r in run_checks(h, ["ids", "normalisation", "splits", "metric"])}
    for name, r in results.items():
        assert r.status == ("warn" if name == "ids" else "pass"), f"{name}: {r.verdict}"
    # the three sample tiles hold no 'barren' pixel: a warning (the class cannot be learnt from them), not a failure
    assert "['barren'] never occur" in results["ids"].verdict
    ids = results["ids"].evidence
    assert ids["mask_modes"] == {"L": 3} and ids["class_pixels"]["barren"] == 0
    # raw ids 1..7 become classes 0..6 (no no-data pixel in these tiles); agriculture (raw 7) dominates
    assert ids["ignored_pixels"] == 0 and ids["class_pixels"]["agriculture"] == 868612 + 528446 + 97166
    assert results["splits"].evidence["splits"] == {"train": 2, "val": 1}
    assert results["normalisation"].evidence["reference"]["source"].startswith("smp encoder mit_b2")


def test_every_check_is_registered_and_unknown_names_fail_early(tmp_path):
    from mapsage.config import ConfigError

    assert list(CHECKS) == ["ids", "label_ids", "per_class", "normalisation", "alignment", "splits", "eval_consistency",
                            "metric", "sanity"]
    h = health_run(dubai_cfg(), tmp_path)
    with pytest.raises(ConfigError, match="unknown check 'splitz'"):
        run_checks(h, ["metric", "splitz"])
