"""Real demo runs for the report tests, made once per session (``report_runs``).

Each run takes the real path of a job: the run folder, resolved config and ``queued`` / ``run_info`` records as
``runners.jobs.submit`` writes them, then ``runners.worker.main`` -- the job process's own entry point (statuses,
heartbeats, the stage function of ``stage.kind``, the final status, the ingest into the store) -- called in this
process rather than a detached one, so torch is imported once. The templates are the bundled Dubai demo templates
with ``--set`` overrides: 2 epochs of 2 steps on 64 px crops, 3 train / 3 validation tiles evaluated whole.

* ``baseline``: the demo SegFormer-B0 recipe (CE 0.7 + Dice 0.3), EMA off;
* ``challenger``: CE only, another seed, titled ``<script>alert(1)</script>`` (user text that must stay text);
* ``tta``: TTA A/B (off against horizontal flip) on the baseline's checkpoint, predictions saved;
* ``refine``: refinement A/B (raw against DenseCRF) on the baseline's checkpoint (image, label, masks saved).
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml"
TTA = ROOT / "configs" / "stage3_inference" / "tta_ab_demo_segformer_mit-b0_dubai.yaml"
XSS = "<script>alert(1)</script>"

TINY = ["train.epochs=2", "train.steps_per_epoch=2", "train.batch_size=2", "train.num_workers=0",
        "train.warmup_epochs=0.5", "train.early_stop.patience=0", "train.ema.enabled=false",
        "augment.crop_size=[64,64]", "augment.scale_range=[0.5,1.0]", "dataset.max_samples=3", "eval.mode=whole",
        "runtime.device=cpu", "runtime.threads=1", "runtime.gpus=0"]


def run_job_in_process(template: Path, overrides: list[str]) -> str:
    """A run folder as ``runners.jobs.submit`` makes it, run by ``runners.worker.main`` in this process (the app
    tests' runner, ``tests.support.app.run_in_process``). Returns the run id; raises with the events tail when the
    job does not succeed."""
    from tests.support.app import run_in_process

    return run_in_process(template, overrides)


def make_report_runs() -> dict[str, str]:
    """The four runs in the current workspace (``MAPSAGE_WORKSPACE``), ingested; returns role -> run id."""
    import torch

    import store

    threads = torch.get_num_threads()
    try:
        ids = {"baseline": run_job_in_process(DEMO, [*TINY, "stage.name=baseline"])}
        ids["challenger"] = run_job_in_process(DEMO, [
            *TINY, "stage.name=challenger", f"stage.title={XSS}", "train.seed=7",
            "loss.schedule=[{from_epoch: 0, terms: {ce: 1.0}}]"])
        ab = [*TINY, f"stage.checkpoint={ids['baseline']}", "eval.save_predictions=true"]
        ids["tta"] = run_job_in_process(TTA, [*ab, "stage.name=tta-flip",
                                              "tta_ab.variants=[{name: flip, scales: [1.0], hflip: true}]"])
        ids["refine"] = run_job_in_process(DEMO, [*ab, "stage.kind=refine", "stage.plan_stage=4",
                                                  "stage.name=refine-crf", "refine.chains=[raw, crf]",
                                                  "refine.max_tiles=3"])
    finally:
        torch.set_num_threads(threads)
    store.ingest_all(wait=True)
    return ids


# ---------------------------------------------------------------------------------------------------------------
# Fast runs without training: the metrics engine on the three real LoveDA masks (cut into 12 quadrant tiles of
# 256 px) against predictions made from them by the errors a real model makes -- a misregistration and thinned
# roads -- written as the event records the stages write, then ingested.

LOVEDA_DEMO = ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_loveda-samples.yaml"
LOVEDA_ROOT = ROOT / "tests" / "data" / "loveda"
LOVEDA_CLASSES = ["background", "building", "road", "water", "barren", "forest", "agriculture"]


def loveda_quadrants():
    """(tile id, image path, image uint8 [256,256,3], label uint8 [256,256] with ids 0..6 / 255) x 12."""
    import numpy as np
    from PIL import Image

    out = []
    for mask_path in sorted(LOVEDA_ROOT.glob("*/*/masks_png/*.png")):
        raw = np.asarray(Image.open(mask_path)).astype(np.int16)[::2, ::2]
        ids = np.where(raw == 0, 255, raw - 1).astype(np.uint8)
        image_path = mask_path.parent.parent / "images_png" / mask_path.name
        image = np.asarray(Image.open(image_path).convert("RGB"))[::2, ::2]
        base = f"{mask_path.parent.parent.parent.name}/{mask_path.parent.parent.name}/{mask_path.stem}"
        for q, (r, c) in enumerate(((0, 0), (0, 256), (256, 0), (256, 256))):
            out.append((f"{base}#q{q}", image_path, image[r:r + 256, c:c + 256].copy(),
                        ids[r:r + 256, c:c + 256].copy()))
    return out


def model_like_error(label, shift: int, thin_roads: int = 1):
    """The label shifted ``shift`` px with roads thinned (their edges taken for background) and no-data predicted
    as background: boundary errors of a real model."""
    import numpy as np
    from scipy import ndimage

    pred = np.roll(np.roll(label, shift, axis=1), shift // 2, axis=0).copy()
    road = pred == 2
    if thin_roads:
        pred[road & ~ndimage.binary_erosion(road, iterations=thin_roads)] = 0
    pred[pred == 255] = 0
    return pred


def write_lab_run(name: str, evaluations: list[dict], overrides: list[str] | None = None,
                  run_info: dict | None = None, ab: list[dict] | None = None,
                  artifacts: bool = False, tiles_subset: slice | None = None) -> str:
    """A finished run folder written like the stages write it. ``evaluations``: dicts with ``variant``, ``shift``,
    ``epoch`` (None: final), ``split`` (default val), ``thin`` (default 1). ``ab``: A/B rows (ab_kind, variant,
    baseline, threshold, criterion; gain and decision follow the stages' rule from the evaluations).
    ``artifacts``: image / label / prediction PNGs of every tile and variant, registered as the refinement stage
    registers them."""
    import numpy as np
    from PIL import Image

    from mapsage.config import config_hash, git_commit, load_config, save_resolved
    from mapsage.events import EventWriter
    from mapsage.metrics import SegMetrics
    from mapsage.workspace import run_dir

    cfg = load_config(LOVEDA_DEMO, [f"stage.name={name}", *(overrides or [])])
    rid = f"{name}_lab"
    rdir = run_dir(rid)
    save_resolved(cfg, rdir)
    ev = EventWriter(rdir)
    ev.status("queued")
    ev.emit("run_info", **{"name": name, "kind": cfg.stage.kind, "plan_stage": cfg.stage.plan_stage,
                           "title": cfg.stage.title, "config_hash": config_hash(cfg), "code_commit": git_commit(),
                           "dataset": cfg.dataset.name, **(run_info or {})})
    ev.status("running")
    tiles = loveda_quadrants()[tiles_subset or slice(None)]
    names = list(cfg.dataset.classes)
    results = {}
    for e in evaluations:
        m = SegMetrics(len(names), ignore_index=255, class_names=names, boundary_px=3, keep_tiles=True)
        for tile, _image_path, _image, label in tiles:
            pred = model_like_error(label, e["shift"], e.get("thin", 1))
            m.update(pred, label, tags={"domain": "Rural"}, tile=tile)
            if artifacts:
                stem = rdir / "predictions" / "lab" / e["variant"].replace("=", "_") / tile.replace("/", "_")
                stem.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pred).save(stem.with_suffix(".png"))
                kind = "pred" if e["variant"] == "refine=raw" else "refined"
                ev.artifact(kind, stem.with_suffix(".png"), tile=tile, variant=e["variant"], split="val")
        if e.get("epoch") is not None:
            ev.scalars({"loss": 1.0 / (e["epoch"] + 1), "lr": 1e-4 / (e["epoch"] + 1)}, epoch=e["epoch"],
                       step=10 * (e["epoch"] + 1), split="train_epoch")
        m.write_events(ev, split=e.get("split", "val"), variant=e["variant"], epoch=e.get("epoch"))
        results[e["variant"]] = m.result()
    if artifacts:
        for tile, _image_path, image, label in tiles:
            d = rdir / "predictions" / "lab" / "label"
            d.mkdir(parents=True, exist_ok=True)
            img_path = d / (tile.replace("/", "_") + "_image.png")
            Image.fromarray(image).save(img_path)
            ev.artifact("image", img_path, tile=tile, variant=None, split="val")
            lab_path = d / (tile.replace("/", "_") + ".png")
            Image.fromarray(np.asarray(label)).save(lab_path)
            ev.artifact("label", lab_path, tile=tile, variant="label", split="val")
    for row in ab or []:  # the decision rule of the A/B stages: keep where the gain reaches the threshold
        v, b = results[row["variant"]], results[row["baseline"]]
        crit = row.get("criterion", "miou")
        gain = 0.0 if row["variant"] == row["baseline"] else round(
            (getattr(v, crit) - getattr(b, crit)) * 100, 6)
        decision = "baseline" if row["variant"] == row["baseline"] else (
            "keep" if gain >= row["threshold"] else "drop")
        ev.emit("ab", ab_kind=row["ab_kind"], variant=row["variant"], baseline=row["baseline"], split="val",
                summary=v.summary, baseline_summary=b.summary, gain=gain, criterion=crit,
                threshold=row["threshold"], decision=decision, images_per_s=row.get("images_per_s"), wall_s=None,
                details={"n_tiles": len(tiles)})
    ev.status("succeeded")
    return rid
