"""The ``predict`` stage (kind ``predict``): predictions of ``stage.checkpoint`` (a run id, ``<run>/<file>``, a
checkpoint file or ``latest:<template>``) for ``predict.source`` (a split, which may have no masks, an image
folder or a raster), with the inference settings the checkpoint's run adopted.

Writes under ``<run>/predictions/``: per image ``<id>.png`` / ``<id>_color.png`` / ``<id>_prob.npz`` (artifact
kinds ``pred``, ``pred_color``, ``prob``); per raster ``<stem>_classes.tif`` (COG), ``<stem>_confidence.tif``,
``<stem>_probs.tif`` and ``<stem>_polygons.gpkg`` (artifact kinds ``image`` (the input), ``cog``, ``confidence``,
``prob_raster``, ``polygons``); and ``manifest.json`` (artifact kind ``manifest``, its meta holding the source,
counts, the evaluation identity and the manifest's SHA-256) — so the store knows every prediction and what made
it. A ``run_info`` event carries the checkpoint, its hash and the evaluation identity."""
from __future__ import annotations

import time
import warnings

from ..config import config_hash
from ..errors import DataError
from .geo import predict_geotiff
from .sources import resolve_source


def run_predict(ctx) -> None:
    from ..infer.evaluate import device_name, resolve_device
    from .model_source import load_predictor
    from .predict import build_manifest, predict_images, write_manifest

    if not ctx.is_main:
        return
    cfg = ctx.cfg
    pc = cfg.predict
    if cfg.runtime.threads:
        import torch
        torch.set_num_threads(int(cfg.runtime.threads))
    device = resolve_device(cfg.runtime.device)
    source = resolve_source(cfg)
    if not source.inputs:
        raise DataError(f"predict.source {source.name}: no images to predict")
    predictor = load_predictor(cfg.stage.checkpoint, pc.weights, adopt=pc.adopt, device=device,
                               fallback_cfg=cfg)
    if source.kind == "split" and list(predictor.classes) != list(cfg.dataset.classes):
        raise DataError(f"stage.checkpoint was trained for classes {predictor.classes} but split "
                        f"'{source.split}' belongs to {cfg.dataset.name} with classes {list(cfg.dataset.classes)}; "
                        "predict with a checkpoint of that dataset")
    ctx.events.emit("run_info", stage_kind="predict", split=source.split or source.kind, device=str(device),
                    checkpoint=predictor.checkpoint.get("path"), checkpoint_sha256=predictor.checkpoint.get("sha256"),
                    weights=predictor.checkpoint.get("weights"), parent_run=predictor.checkpoint.get("run_id"),
                    variant=predictor.variant, adopted=predictor.adopted or None,
                    predict_source=source.describe())
    for a in predictor.adopted:
        ctx.events.log(f"adopted {a['what']} from run {a['run']}"
                       + (f" ({a.get('variant')}, {a.get('gain_points'):+.2f} points)"
                          if a.get("gain_points") is not None else ""))
    ctx.events.log(f"predicting {source.describe()} with {predictor.short()} on {device_name(device)}")
    out_dir = ctx.predictions_dir
    t0 = time.perf_counter()
    images = [i for i in source.inputs if i.kind == "image"]
    rasters = [i for i in source.inputs if i.kind == "raster"]
    outputs: list[dict] = []
    if images:
        outputs += predict_images(predictor, images, out_dir, device=device, probabilities=pc.probabilities,
                                  color=pc.color, events=ctx.events, split=source.split,
                                  progress=ctx.progress, should_stop=ctx.should_stop,
                                  window_batch=cfg.eval.window_batch)
    if rasters:
        for _k, item in enumerate(rasters):
            if ctx.should_stop():
                break
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                rec = predict_geotiff(predictor, item.path, out_dir, stem=item.id.replace("/", "_"),
                                      bands=pc.bands, value_scale=pc.value_scale, probabilities=pc.probabilities,
                                      polygons=pc.polygons, polygon_format=pc.polygon_format, simplify=pc.simplify,
                                      min_area_m2=pc.min_area_m2, block_rows=pc.block_rows, device=device,
                                      window_batch=cfg.eval.window_batch, progress=ctx.progress)
            for w in caught:
                ctx.events.log(str(w.message), level="warning")
            if rec.get("post"):
                ctx.events.log(f"{item.path.name}: adopted post-processing {rec['post']['settings']} changed "
                               f"{rec['post']['changed_pixels']} pixels")
            rec["id"] = item.id
            outputs.append(rec)
            tile = item.id
            ctx.events.artifact("image", item.path, tile=tile, variant="input", split=source.split)
            ctx.events.artifact("cog", rec["classes"], tile=tile, variant=predictor.variant,
                                crs=rec["crs"], width=rec["width"], height=rec["height"])
            ctx.events.artifact("pred", rec["classes"], tile=tile, variant=predictor.variant, split=source.split)
            ctx.events.artifact("confidence", rec["confidence"], tile=tile, variant=predictor.variant)
            if rec.get("probabilities"):
                ctx.events.artifact("prob_raster", rec["probabilities"], tile=tile, variant=predictor.variant)
            if rec.get("polygons"):
                p = rec["polygons"]
                ctx.events.artifact("polygons", p["path"], tile=tile, variant=predictor.variant,
                                    polygons=p["polygons"], merged_at_seams=p["merged_at_seams"])
            pinfo = rec["predict"]
            ctx.events.log(f"{item.path.name}: {rec['width']}x{rec['height']} px in {pinfo['wall_s']:.1f} s "
                           f"({pinfo['mpix_per_s']:.3f} Mpixel/s) -> {rec['classes']}"
                           + (f", {rec['polygons']['polygons']} polygons" if rec.get("polygons") else ""))
    wall = time.perf_counter() - t0
    complete = len(outputs) == len(source.inputs)
    manifest = build_manifest(predictor, source, outputs, config_hash=config_hash(cfg), run_id=ctx.run_id,
                              wall_s=wall, device=device_name(device), complete=complete)
    mpath = out_dir / "manifest.json"
    digest = write_manifest(manifest, mpath)
    ctx.events.artifact("manifest", mpath, tile=None, variant=predictor.variant, split=source.split,
                        source=source.describe(), source_kind=source.kind, inputs=len(source.inputs),
                        outputs=len(outputs), identity=predictor.short(), sha256=digest, complete=complete,
                        checkpoint_sha256=predictor.checkpoint.get("sha256"))
    ctx.events.scalars({"wall_s": wall, "inputs": float(len(outputs))}, split=f"predict:{source.split or source.kind}")
    ctx.events.log(f"{len(outputs)}/{len(source.inputs)} inputs predicted in {wall:.1f} s; manifest {mpath}")
    if not complete:
        ctx.events.log("stopped before every input was predicted; the manifest lists what was done",
                       level="warning")


run = run_predict
