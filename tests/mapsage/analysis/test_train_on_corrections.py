"""A REAL training run on "original + corrections v1" reads the corrected pixels.

A reviewer's correction of one Dubai validation tile is stored as label version v1; a tiny training run of the demo
template (SegFormer-B0, 1 epoch of 2 steps, validated on 2 whole tiles) is launched with
``dataset.label_version=1`` through the job worker. The label pixels per class that the run's own validation
counted for each tile (its ``tiles`` event, ``label_area``) are compared with the corrected mask and with the
original label: the corrected tile follows the correction, the other tile its original label."""
from __future__ import annotations

import numpy as np
import pytest

from tests.support.app import DEMO, run_in_process

pytestmark = pytest.mark.slow

TRAIN = ["train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2", "train.num_workers=0",
         "augment.crop_size=[128, 128]", "dataset.max_samples=2", "eval.mode=whole", "eval.save_predictions=false",
         "train.ema.enabled=false", "runtime.threads=1", "runtime.device=cpu"]


def _areas(mask: np.ndarray, num_classes: int, ignore: int) -> list[int]:
    m = mask[mask != ignore].astype(np.int64)
    return np.bincount(m, minlength=num_classes)[:num_classes].tolist()


def test_training_on_original_plus_corrections_reads_the_corrected_label(tmp_workspace):
    import torch

    import store
    from mapsage.analysis import labels as lv
    from mapsage.config import load_config
    from mapsage.data import build_dataset
    from tests.support.app import PROJECT_ROOT

    cfg = load_config(PROJECT_ROOT / DEMO, TRAIN)
    C, ignore = cfg.dataset.num_classes, cfg.dataset.ignore_index
    val = build_dataset(cfg, "val")
    assert len(val) == 2
    fixed_tile, other_tile = val.samples[0].id, val.samples[1].id
    original = val.load_mask(0).copy()
    other = val.load_mask(1).copy()
    water = list(cfg.dataset.classes).index("water")
    corrected = original.copy()
    h, w = corrected.shape
    corrected[: h // 2, : w // 2][corrected[: h // 2, : w // 2] != ignore] = water   # a quarter becomes water
    assert _areas(corrected, C, ignore) != _areas(original, C, ignore)
    lv.add_version(lv.labels_root(cfg.dataset), {fixed_tile: corrected}, reviewer="ana", num_classes=C,
                   originals={fixed_tile: original}, dataset=cfg.dataset.name)

    threads = torch.get_num_threads()
    try:
        rid = run_in_process(DEMO, TRAIN + ["dataset.label_version=1", "stage.name=train-on-corrections"])
    finally:
        torch.set_num_threads(threads)
    store.ingest_all()
    assert store.run(rid)["config"]["dataset"]["label_version"] == 1
    rows = store.tiles(rid, split="val")
    got = {t: [int(x) for x in a] for t, a in zip(rows["tile"], rows["label_area"])}
    assert set(got) == {fixed_tile, other_tile}
    assert got[fixed_tile] == _areas(corrected, C, ignore)            # the run read the corrected label ...
    assert got[fixed_tile] != _areas(original, C, ignore)             # ... not the original
    assert got[other_tile] == _areas(other, C, ignore)                # an uncorrected tile keeps its label
    # the dataset's own files are untouched
    assert np.array_equal(build_dataset(cfg, "val").load_mask(0), original)
