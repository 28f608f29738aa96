"""Run folders the way the runner leaves them, for the store and app benchmarks (``bench/store.py``,
``bench/app.py``): a resolved ``config.yaml`` (the LoveDA SegFormer-B2 template with encoder, crop size, loss mix
and LR varied per run) and an ``events.jsonl`` with, per epoch, the engine's per-epoch scalars, a heartbeat with
progress, validation ``metrics`` records (domain ``all`` and one per domain: 7 classes with IoU/Acc/precision/F1/
Boundary IoU per class and a 7x7 confusion matrix) and its ``tiles`` record.

The metrics records are real: the metrics engine on the three real LoveDA masks against copies of them shifted by
1..n px; each run walks its own path through those shifts over its epochs. The per-epoch scalars are derived from
those figures and the config only to give the curves realistic volume; no figure here is a training result."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOVEDA = ROOT / "tests" / "data" / "loveda"
TEMPLATE = ROOT / "configs" / "stage1_baselines" / "segformer_mit-b2_loveda.yaml"
SAMPLES_TEMPLATE = ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_loveda-samples.yaml"


def real_metric_records(n_shifts: int) -> list[tuple[list[dict], dict]]:
    """For shift k = 1..n: ([metrics event payloads: domain all + per domain], tiles event payload)."""
    import numpy as np

    from mapsage.config import load_config
    from mapsage.data import build_dataset, load_mask
    from mapsage.metrics import SegMetrics

    cfg = load_config(SAMPLES_TEMPLATE)
    samples = []
    for split in ("train", "val"):
        samples += build_dataset(cfg, split).samples
    masks = [(s.id, s.domain or "Rural", load_mask(s.mask_path, cfg.dataset)) for s in samples]
    out = []
    for k in range(1, n_shifts + 1):
        m = SegMetrics(cfg.dataset.num_classes, class_names=cfg.dataset.classes, keep_tiles=True)
        for tile, domain, label in masks:
            pred = np.roll(np.roll(label, k, axis=0), k // 2, axis=1).copy()
            pred[pred == 255] = (k % cfg.dataset.num_classes)
            m.update(pred, label, tags={"domain": domain}, tile=tile)
        evs = [m.result().to_event("val", "all", "raw", None)]
        for domain, res in m.by_tag("domain").items():
            evs.append(res.to_event("val", domain, "raw", None))
        out.append((evs, m.tiles_event("val", "raw")))
    return out


def configs(n: int) -> list[dict]:
    from mapsage.config import config_hash, load_config, run_name, to_dict

    encoders = ["mit_b0", "mit_b2", "mit_b5"]
    crops = ["[512, 512]", "[640, 640]", "[768, 768]"]
    mixes = ["[{from_epoch: 0, terms: {ce: 0.7, dice: 0.3}}]",
             "[{from_epoch: 0, terms: {ce: 0.7, dice: 0.3}}, {from_epoch: 20, terms: {ce: 0.6, dice: 0.3, "
             "lovasz: 0.1}}]",
             "[{from_epoch: 0, terms: {ohem: 0.7, dice: 0.3}}]"]
    lrs = [6e-5, 1e-4, 3e-4, 6e-4]
    out, cache = [], {}
    for i in range(n):
        key = (i % 3, (i // 3) % 3, (i // 9) % 3, (i // 27) % 4)
        if key not in cache:
            cfg = load_config(TEMPLATE, [f"model.encoder={encoders[key[0]]}", f"augment.crop_size={crops[key[1]]}",
                                         f"loss.schedule={mixes[key[2]]}", f"train.lr={lrs[key[3]]}"])
            d = to_dict(cfg)
            d["meta"] = {**d.get("meta", {}), "config_hash": config_hash(cfg), "run_name": run_name(cfg),
                         "code_commit": "bench"}
            cache[key] = d
        out.append(cache[key])
    return out


def write_runs(runs_root: Path, n_runs: int, epochs: int, records) -> int:
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    total = 0
    t0 = time.time() - n_runs * 3600
    for i, cfg in enumerate(configs(n_runs)):
        name = cfg["meta"]["run_name"]
        rid = f"{name}_bench-{i:04d}"
        d = runs_root / rid
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(yaml.dump(cfg, Dumper=dumper, sort_keys=False))
        lines, seq, ts = [], 0, t0 + i * 3600

        def emit(typ, **payload):
            nonlocal seq, ts
            ts += 0.5
            lines.append(json.dumps({"seq": seq, "ts": ts, "type": typ, **payload}, separators=(",", ":")))
            seq += 1

        emit("status", status="queued", message="queued")
        emit("run_info", name=name, kind="train", plan_stage=1, title="bench", dataset="loveda", gpus=[str(i % 8)])
        emit("status", status="running", message="bench")
        best = 1 + (i * 7) % (len(records) // 2)
        lr = float(cfg["train"]["lr"])
        for e in range(epochs):
            k = max(best, len(records) - 1 - (e * (len(records) - best)) // max(1, epochs - 1))
            evs, tiles = records[k - 1]
            s = evs[0]["summary"]
            cos = 0.5 * (1 + math.cos(math.pi * e / max(1, epochs)))
            emit("scalars", epoch=e, step=(e + 1) * 100, split="train_epoch",
                 values={"loss": 1 - s["aacc"], "ce": 1.2 * (1 - s["aacc"]), "dice": 1 - s["mf1"], "lr": lr * cos,
                         "grad_norm": 1 + s["mbiou"], "epoch_time": 60.0, "data_time": 5.0, "peak_mem_mb": 9000.0})
            for ev in evs:
                emit("metrics", **{**ev, "epoch": e})
            emit("tiles", **{**tiles, "epoch": e})
            emit("heartbeat", pid=1000 + i, host="bench", progress={"epoch": e, "epochs": epochs,
                                                                    "frac": (e + 1) / epochs})
        emit("status", status="succeeded", message="")
        (d / "events.jsonl").write_text("\n".join(lines) + "\n")
        (d / "stdout.log").write_text(f"[bench] run {rid}\n" * 50)
        total += seq
    return total


def load_text() -> str:
    try:
        return "load average %.1f on %d CPUs" % (os.getloadavg()[0], os.cpu_count() or 1)
    except OSError:
        return "load average unknown"
