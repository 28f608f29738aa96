"""Fixtures of the interop tests: an mmsegmentation 1.x work directory and a 0.x ``*.log.json`` written in
mmseg's exact file formats, and one real native LoveDA run.

The 1.x layout and line format follow mmsegmentation's visualization guide and mmengine's ``LocalVisBackend`` /
``LoggerHook`` / ``LogProcessor``: ``work_dirs/<config>/<config>.py`` (the dumped config), and per launch
``<timestamp>/<timestamp>.log`` (text log with the per-class tables ``IoUMetric`` prints) and
``<timestamp>/vis_data/{scalars.json, <timestamp>.json, config.py}``, one JSON object per line; training lines at
``step = iter`` with ``decode.acc_seg`` in percent, validation lines with ``aAcc`` / ``mIoU`` / ``mAcc`` in percent at
``step = iter`` (``log_metric_by_epoch=False``)."""
from __future__ import annotations

import json
import math
from pathlib import Path

MMSEG_CLASSES = ["background", "building", "road", "water", "barren", "forest", "agricultural"]
CONFIG_NAME = "segformer_mit-b0_8xb2-400_loveda-512x512"
STAMP = "20240301_101500"

# the dumped config (mmengine's pretty format), plus two lines a stranger's file might hold: never executed
CONFIG_PY = f"""import os
crop_size = (
    512,
    512,
)
data_root = 'data/loveDA'
dataset_type = 'LoveDADataset'
default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval=200, type='CheckpointHook'),
    logger=dict(interval=50, log_metric_by_epoch=False, type='LoggerHook'),
    timer=dict(type='IterTimerHook'))
model = dict(
    backbone=dict(
        embed_dims=32,
        init_cfg=dict(checkpoint='pretrain/mit_b0.pth', type='Pretrained'),
        num_layers=[2, 2, 2, 2],
        type='MixVisionTransformer'),
    decode_head=dict(
        channels=256,
        loss_decode=dict(loss_weight=1.0, type='CrossEntropyLoss', use_sigmoid=False),
        num_classes=7,
        type='SegformerHead'),
    type='EncoderDecoder')
optim_wrapper = dict(
    optimizer=dict(betas=(0.9, 0.999, ), lr=6e-05, type='AdamW', weight_decay=0.01),
    type='OptimWrapper')
param_scheduler = [
    dict(begin=0, by_epoch=False, end=100, start_factor=1e-06, type='LinearLR'),
    dict(begin=100, by_epoch=False, end=400, eta_min=0.0, power=1.0, type='PolyLR'),
]
train_cfg = dict(max_iters=400, type='IterBasedTrainLoop', val_interval=200)
train_dataloader = dict(batch_size=2, dataset=dict(data_root='data/loveDA', type='LoveDADataset'), num_workers=2)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(reduce_zero_label=True, type='LoadAnnotations'),
    dict(keep_ratio=True, ratio_range=(0.5, 2.0, ), scale=(2048, 512, ), type='RandomResize'),
    dict(cat_max_ratio=0.75, crop_size=(512, 512, ), type='RandomCrop'),
    dict(prob=0.5, type='RandomFlip'),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
work_dir = './work_dirs/{CONFIG_NAME}'
marker = os.system('touch {{marker}}')
"""

# per-class IoU / Acc (percent) of the two validations; water absent from both label and prediction at the first
VAL_CLASSES = [
    {"background": (40.10, 55.20), "building": (35.40, 47.00), "road": (30.20, 41.80), "water": (None, None),
     "barren": (12.50, 20.10), "forest": (28.30, 39.90), "agricultural": (45.60, 60.00)},
    {"background": (44.00, 58.10), "building": (41.20, 52.30), "road": (35.90, 46.40), "water": (50.10, 61.20),
     "barren": (15.00, 22.70), "forest": (31.80, 43.30), "agricultural": (49.90, 63.50)},
]
VAL_AACC = [70.12, 74.58]


def _mean(values):
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 2)


def train_lines() -> list[dict]:
    out = []
    for it in range(50, 401, 50):
        acc = 40.0 + it / 20.0
        out.append({"lr": 6e-05 * (1 - it / 400) + 1e-9, "data_time": 0.0042 + it * 1e-6, "loss": 1.5 - it / 500,
                    "decode.loss_ce": 1.5 - it / 500, "decode.acc_seg": acc, "time": 0.41 + it * 1e-5, "iter": it,
                    "memory": 3659, "step": it})
    return out


def val_line(i: int, step: int) -> dict:
    table = VAL_CLASSES[i]
    return {"aAcc": VAL_AACC[i], "mIoU": _mean(v[0] for v in table.values()),
            "mAcc": _mean(v[1] for v in table.values()), "data_time": 0.0021, "time": 0.118, "step": step}


def _table(i: int) -> str:
    rows = [("Class", "IoU", "Acc")] + [(n, "nan" if v[0] is None else f"{v[0]:.2f}",
                                         "nan" if v[1] is None else f"{v[1]:.2f}")
                                        for n, v in VAL_CLASSES[i].items()]
    w = [max(len(r[k]) for r in rows) + 2 for k in range(3)]
    sep = "+" + "+".join("-" * x for x in w) + "+"
    lines = [sep, "|" + "|".join(rows[0][k].center(w[k]) for k in range(3)) + "|", sep]
    lines += ["|" + "|".join(r[k].center(w[k]) for k in range(3)) + "|" for r in rows[1:]]
    return "\n".join(lines + [sep])


def write_mmseg1_workdir(root: Path, marker: Path) -> Path:
    """An mmseg 1.x work directory of a 400-iteration LoveDA run (validation every 200 iterations)."""
    work = root / "work_dirs" / CONFIG_NAME
    vis = work / STAMP / "vis_data"
    vis.mkdir(parents=True)
    cfg = CONFIG_PY.replace("{marker}", str(marker))
    (work / f"{CONFIG_NAME}.py").write_text(cfg)
    (vis / "config.py").write_text(cfg)
    lines, log = [], []
    vi = 0
    for rec in train_lines():
        lines.append(rec)
        log.append(f"2024/03/01 10:{15 + rec['iter'] // 50:02d}:00 - mmengine - INFO - Iter(train) "
                   f"[{rec['iter']:>3}/400]  lr: {rec['lr']:.4e}  eta: 0:01:00  time: {rec['time']:.4f}  "
                   f"data_time: {rec['data_time']:.4f}  memory: 3659  loss: {rec['loss']:.4f}  "
                   f"decode.loss_ce: {rec['decode.loss_ce']:.4f}  decode.acc_seg: {rec['decode.acc_seg']:.4f}")
        if rec["iter"] % 200 == 0:
            v = val_line(vi, rec["iter"])
            log.append("2024/03/01 10:40:00 - mmengine - INFO - per class results:")
            log.append("2024/03/01 10:40:00 - mmengine - INFO - \n" + _table(vi))
            log.append(f"2024/03/01 10:40:01 - mmengine - INFO - Iter(val) [4/4]    aAcc: {v['aAcc']:.4f}  "
                       f"mIoU: {v['mIoU']:.4f}  mAcc: {v['mAcc']:.4f}  data_time: 0.0021  time: 0.1180")
            lines.append(v)
            vi += 1
    text = "".join(json.dumps(r) + "\n" for r in lines)
    (vis / "scalars.json").write_text(text)
    (vis / f"{STAMP}.json").write_text(text)
    (work / STAMP / f"{STAMP}.log").write_text("\n".join(log) + "\n")
    (work / "last_checkpoint").write_text(str(work / "iter_400.pth"))
    return work


def write_mmseg0_logjson(root: Path) -> Path:
    """An mmseg 0.x ``*.log.json`` of a 2-epoch run: config as text on the first line, fractions in val lines."""
    folder = root / "work_dirs" / "segformer_mit-b0_512x512_loveda_0x"
    folder.mkdir(parents=True)
    cfg = "dataset_type = 'LoveDADataset'\ncrop_size = (512, 512)\nmodel = dict(type='EncoderDecoder', " \
          "backbone=dict(type='MixVisionTransformer'), decode_head=dict(type='SegformerHead', num_classes=7))\n"
    recs = [{"env_info": "sys.platform: linux", "config": cfg, "seed": 0,
             "exp_name": "segformer_mit-b0_512x512_loveda_0x.py", "mmseg_version": "0.30.0"}]
    for epoch in (1, 2):
        for it in (10, 20):
            recs.append({"mode": "train", "epoch": epoch, "iter": it, "lr": 6e-05, "memory": 3100,
                         "data_time": 0.01, "decode.loss_ce": 1.0 / epoch, "decode.acc_seg": 60.0 + epoch,
                         "loss": 1.0 / epoch, "time": 0.5})
        row = {"mode": "val", "epoch": epoch, "iter": 16, "lr": 6e-05, "aAcc": 0.7 + epoch / 100,
               "mIoU": 0.3 + epoch / 100, "mAcc": 0.4 + epoch / 100}
        for n in MMSEG_CLASSES:
            row[f"IoU.{n}"] = 0.3 + epoch / 100
            row[f"Acc.{n}"] = 0.4 + epoch / 100
        recs.append(row)
    path = folder / "20210310_120000.log.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def expected_miou(i: int) -> float:
    return _mean(v[0] for v in VAL_CLASSES[i].values()) / 100.0


assert math.isclose(expected_miou(0), 0.3202, abs_tol=1e-4)
