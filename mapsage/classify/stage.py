"""Stage kind ``classify``: train and validate an image classifier (``task: classification``).

One fold (``dataset.split.fold`` of ``dataset.split.folds``; ``mapsage run CONFIG --folds 5`` launches the group)
or one seeded group split. Per epoch: training with the sampler (``augment.sampler``), Mixup/CutMix
(``classify.mixup_alpha`` / ``cutmix_alpha``), the loss (``classify.loss``), warmup + schedule
(``train.lr_schedule``), progressive resolution (``classify.size_schedule``) and EMA (``train.ema``); then
validation of the raw and the EMA weights (``metrics`` events, variants ``raw`` / ``ema``). The selection score is
clean top-1, or with ``train.select_by: combo`` ``S = α·clean + (1-α)·corrupted`` top-1 (α =
``train.combo_alpha``, corruptions ``reliability.combo_corruptions`` at ``reliability.combo_severity``, the
reliability card's corruptions). The best of raw and EMA by S is kept as
``checkpoints/fold{K}_seed{S}_epoch{E}_score{S}.pth`` (and ``best.pth``); early stopping after
``train.early_stop.patience`` epochs without a gain of ``min_delta``.

After training: validation logits of the kept weights, a temperature fitted on them (``classify.calibrate``),
written into the checkpoint and ``calibration.json`` (ECE and reliability bins before/after); the final
``metrics`` event (epoch null) with ``ece_calibrated`` and ``temperature``; ``predictions/val_predictions.csv``;
the error gallery (``predictions/errors.json``, thumbnails, Grad-CAM overlays of the most confident mistakes).

``checkpoints/last.pth`` is written after every epoch (weights, EMA, optimiser, schedule, RNG, history); ``mapsage
runs resume`` continues at the next epoch. A sweep's trial reports ``sweep.metric`` (top1 or macro_f1) after each
epoch and obeys the sweep's pruner.
"""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..config import to_dict
from ..errors import TrainingError, UserError
from ..evalid import stamp, tile_facts
from ..schedules import build_schedule
from ..stage import StageContext
from ..sweep.trial import epoch_reporter
from .data import ClsDataset, category_ids, class_counts, load_rgb, normalization, split_samples
from .gradcam import grad_cam, overlay
from .health import gate
from .losses import build_loss
from .model import build_classifier, effective_lr, param_groups


def _size_at(cfg, epoch: int) -> int:
    size = int(cfg.classify.img_size)
    for ph in sorted(cfg.classify.size_schedule, key=lambda p: p.from_epoch):
        if epoch >= ph.from_epoch:
            size = int(ph.size)
    return size


def _device(cfg) -> torch.device:
    want = cfg.runtime.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


@torch.no_grad()
def predict_logits(model, loader, device, tta_hflip: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    model.eval()
    outs, labels, ids = [], [], []
    for batch in loader:
        x = batch["image"].to(device)
        z = model(x).float()
        if tta_hflip:
            z = 0.5 * (z + model(torch.flip(x, dims=[3])).float())
        outs.append(z.cpu().numpy())
        labels.append(np.asarray(batch["label"]))
        ids += list(batch["id"])
    return np.concatenate(outs), np.concatenate(labels), ids


def run(ctx: StageContext) -> dict:
    from torch.utils.data import DataLoader, WeightedRandomSampler

    from ..metrics.classification import classification_metrics, softmax, temperature_scaled
    from ..train.ema import ModelEma
    from ..train.samplers import sampler_weights

    cfg, ev = ctx.cfg, ctx.events
    t_start = time.time()
    if cfg.runtime.threads:
        torch.set_num_threads(int(cfg.runtime.threads))
    torch.manual_seed(int(cfg.train.seed))
    np.random.seed(int(cfg.train.seed) % (2 ** 32))
    device = _device(cfg)
    names = list(cfg.dataset.classes)
    c = len(names)
    ids_map = category_ids(cfg)
    train_s, val_s = split_samples(cfg)
    counts = class_counts(train_s, c)

    gate(cfg, train_s, val_s, ev)            # classify.health_checks: ids, normalisation, splits, metric, sanity
    mean, std = normalization(cfg)
    size0 = _size_at(cfg, 0)
    train_ds = ClsDataset(train_s, cfg, True, size0, mean, std)
    val_ds = ClsDataset(val_s, cfg, False, size0, mean, std)
    sp = cfg.dataset.split
    fold_note = f"fold {sp.fold} of {sp.folds}" if sp.folds else "group split"
    ev.log(f"classification: {len(train_s)} training / {len(val_s)} validation images ({fold_note}; "
           f"{len({s.group for s in train_s})} / {len({s.group for s in val_s})} groups); training class counts "
           + ", ".join(f"{n} {k}" for n, k in zip(names, counts.tolist())))
    (ctx.run_dir / "split.json").write_text(json.dumps(
        {"fold": sp.fold if sp.folds else None, "folds": sp.folds or None,
         "train": sorted(s.id for s in train_s), "val": sorted(s.id for s in val_s),
         "val_groups": sorted({s.group for s in val_s}), "train_groups": sorted({s.group for s in train_s})}),
        encoding="utf-8")

    sampler, shuffle = None, True
    if cfg.augment.sampler.kind != "uniform":
        onehot = np.eye(c)[[s.label for s in train_s]]
        w, note = sampler_weights(onehot, cfg.augment.sampler)
        ev.log(note)
        sampler = WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double), num_samples=len(train_s),
                                        replacement=True, generator=torch.Generator().manual_seed(cfg.train.seed))
        shuffle = False
    bs = int(cfg.train.batch_size)
    nw = int(cfg.train.num_workers)
    g = torch.Generator().manual_seed(int(cfg.train.seed))
    train_dl = DataLoader(train_ds, batch_size=bs, shuffle=shuffle, sampler=sampler, num_workers=nw,
                          drop_last=len(train_ds) > bs, generator=g, persistent_workers=False)
    val_dl = DataLoader(val_ds, batch_size=bs * 2, shuffle=False, num_workers=nw)

    model = build_classifier(cfg, c).to(device)
    n_params = int(sum(p.numel() for p in model.parameters()))
    ev.emit("run_info", model_params=n_params, task="classification", backbone=cfg.classify.model,
            pretrain=Path(str(cfg.classify.pretrained)).name if cfg.classify.pretrained not in ("", "none") else "none",
            loss=cfg.classify.loss, size=f"{size0}px")
    stamp(ev, dataset=cfg.dataset.name, device=str(device), params=n_params, split_size=len(val_s))
    ema = ModelEma(model, cfg.train.ema.decay, cfg.train.ema.warmup) if cfg.train.ema.enabled else None
    lr, lr_note = effective_lr(cfg)
    ev.log(f"optimiser AdamW, {lr_note}; {cfg.train.lr_schedule} after {cfg.train.warmup_epochs:g} warmup epoch(s)"
           + (f"; layer-wise LR decay {cfg.train.layer_decay:g}" if cfg.train.layer_decay else ""))
    opt = torch.optim.AdamW(param_groups(model, cfg, lr), lr=lr, betas=tuple(cfg.train.betas))
    steps = max(1, len(train_dl))
    sched = build_schedule(opt, cfg, lr, steps)
    loss_fn = build_loss(cfg, counts).to(device)
    mixer = None
    cc = cfg.classify
    if (cc.mixup_alpha > 0 or cc.cutmix_alpha > 0) and cc.mix_prob > 0:
        from timm.data import Mixup

        mixer = Mixup(mixup_alpha=cc.mixup_alpha, cutmix_alpha=cc.cutmix_alpha, prob=cc.mix_prob,
                      switch_prob=cc.mix_switch_prob, mode="batch",
                      label_smoothing=cc.label_smoothing if cc.loss == "lsce" else 0.0, num_classes=c)
    combo = cfg.train.select_by == "combo"
    corr_dls = []
    if combo:
        for name in cfg.reliability.combo_corruptions:
            cds = ClsDataset(val_s, cfg, False, size0, mean, std, corruption=(name, cfg.reliability.combo_severity))
            corr_dls.append((name, DataLoader(cds, batch_size=bs * 2, shuffle=False, num_workers=nw)))

    ckdir = ctx.checkpoints_dir
    ckdir.mkdir(parents=True, exist_ok=True)
    best = {"score": -1.0, "epoch": None, "weights": None, "path": None}
    history = []
    bad_epochs = 0
    epochs = int(cfg.train.epochs)
    global_step = 0
    start_epoch = 0
    if ctx.resume_from:
        start_epoch, global_step, best, history, bad_epochs = _restore(ctx, model, ema, opt, sched)
    reporter = None
    if cfg.sweep.id and cfg.sweep.trial_id is not None:     # a sweep's trial: report epochs, obey the pruner
        reporter = epoch_reporter(cfg, ev)
    stopped = None
    for epoch in range(start_epoch, epochs):
        size = _size_at(cfg, epoch)
        if size != train_ds.size:
            train_ds.set_size(size)
            val_ds.set_size(size)
            for _, dl in corr_dls:
                dl.dataset.set_size(size)
            ev.log(f"epoch {epoch + 1}: resolution {size} px")
        model.train()
        t0 = time.time()
        tot, n_seen = 0.0, 0
        for i, batch in enumerate(train_dl):
            if ctx.should_stop():
                stopped = "cancel"
                break
            x = batch["image"].to(device)
            y = torch.as_tensor(batch["label"]).to(device)
            if mixer is not None and len(x) % 2 == 0:
                x, y = mixer(x, y)
            logits = model(x, y if y.dim() == 1 else None)
            loss = loss_fn(logits, y)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss is {loss.item()} at epoch {epoch + 1} step {i + 1}; lower train.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg.train.grad_clip))
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
            global_step += 1
            tot += float(loss.detach()) * len(x)
            n_seen += len(x)
            if global_step % max(1, cfg.train.log_every) == 0:
                ev.scalars({"loss": float(loss.detach()), "lr": opt.param_groups[-1]["lr"]}, epoch=epoch, step=global_step)
            ctx.progress(epoch=epoch, epochs=epochs, step=i + 1, steps=steps,   # progress epochs are 0-based
                         frac=(epoch + (i + 1) / steps) / epochs, phase="train")
        if stopped:
            break
        train_loss = tot / max(1, n_seen)
        ctx.progress(epoch=epoch, epochs=epochs, frac=(epoch + 1) / epochs, phase="val", force=True)
        row = {"epoch": epoch, "train_loss": train_loss, "epoch_time": time.time() - t0}
        cands = [("raw", model)] + ([("ema", ema.module)] if ema is not None else [])
        scores = {}
        for variant, m in cands:
            z, lab, vid = predict_logits(m, val_dl, device)
            res = classification_metrics(softmax(z), lab, names, cc.calibration_bins, logits=z)
            ev.emit("metrics", **res.to_event("val", variant, epoch, **tile_facts(vid)))
            clean = res.top1
            s = clean
            corrupt_top1 = None
            if combo:
                accs = []
                for _, dl in corr_dls:
                    zc, lc, _ = predict_logits(m, dl, device)
                    accs.append(float((zc.argmax(1) == lc).mean()))
                corrupt_top1 = float(np.mean(accs))
                s = float(cfg.train.combo_alpha) * clean + (1 - float(cfg.train.combo_alpha)) * corrupt_top1
            scores[variant] = (s, res, corrupt_top1)
            row[f"val_top1_{variant}"] = clean
            row[f"val_macro_f1_{variant}"] = res.macro_f1
            row[f"val_loss_{variant}"] = res.nll
        ev.scalars({"train_loss": train_loss, "epoch_time": row["epoch_time"], "lr": opt.param_groups[-1]["lr"]},
                   epoch=epoch, split="train")
        vals = {}
        for variant, (s, res, ct) in scores.items():
            suffix = "" if variant == "raw" else "_ema"
            vals.update({f"top1{suffix}": res.top1, f"macro_f1{suffix}": res.macro_f1,
                         f"val_loss{suffix}": res.nll, f"ece{suffix}": res.ece, f"select{suffix}": s})
            if ct is not None:
                vals[f"top1_corrupted{suffix}"] = ct
        ev.scalars(vals, epoch=epoch, split="val")
        variant, (s, res, _) = max(scores.items(), key=lambda kv: (kv[1][0], kv[0] == "ema"))
        history.append(row)
        if s > best["score"] + float(cfg.train.early_stop.min_delta):
            bad_epochs = 0
            state = (ema.module if variant == "ema" else model).state_dict()
            name = f"fold{sp.fold if sp.folds else 0}_seed{cfg.train.seed}_epoch{epoch + 1}_score{s:.4f}.pth"
            if best["path"] and Path(best["path"]).exists():
                Path(best["path"]).unlink()
            path = ckdir / name
            torch.save(_ckpt(cfg, state, epoch, s, variant, names, ids_map, mean, std, size), path)
            best = {"score": s, "epoch": epoch, "weights": variant, "path": str(path)}
            ev.log(f"epoch {epoch + 1}: best so far, {variant} weights, S {s:.4f} (top-1 {res.top1:.4f}, "
                   f"macro F1 {res.macro_f1:.4f})")
        else:
            bad_epochs += 1
        _save_last(ckdir, model, ema, opt, sched, epoch, global_step, best, history, bad_epochs)
        if reporter is not None:
            reporter(epoch, {v: r for v, (_, r, _) in scores.items()})
        if bad_epochs >= int(cfg.train.early_stop.patience):
            stopped = "early_stop"
            ev.log(f"early stop after epoch {epoch + 1}: no gain of {cfg.train.early_stop.min_delta:g} in "
                   f"{bad_epochs} epoch(s) (best epoch {best['epoch'] + 1})")
            break
    if best["path"] is None or stopped == "cancel":
        if stopped == "cancel":
            ev.log("stop requested: training ended early; the best checkpoint so far is kept, not calibrated",
                   level="warning")
        return {"best": best if best["path"] else None, "history": history, "stopped": stopped}
    # the kept weights: calibration, final evaluation, predictions, error gallery
    data = torch.load(best["path"], map_location="cpu", weights_only=True)
    model.load_state_dict(data["model"])
    z, lab, vid = predict_logits(model, val_dl, device)
    if cc.calibrate:
        temp, before, after = temperature_scaled(z, lab, names, cc.calibration_bins)
    else:
        temp = 1.0
        before = after = classification_metrics(softmax(z), lab, names, cc.calibration_bins, logits=z)
    data["temperature"] = float(temp)
    torch.save(data, best["path"])
    final = Path(best["path"])
    best_link = ckdir / "best.pth"
    if best_link.exists():
        best_link.unlink()
    try:
        os.link(final, best_link)
    except OSError:
        import shutil
        shutil.copy2(final, best_link)
    ev.artifact("checkpoint", final, variant=best["weights"], epoch=best["epoch"], score=best["score"],
                fold=sp.fold if sp.folds else None, seed=cfg.train.seed, temperature=temp)
    calib = {"temperature": temp, "ece_before": before.ece, "ece_after": after.ece, "nll_before": before.nll,
             "nll_after": after.nll, "bins_before": before.bins, "bins_after": after.bins,
             "n_images": before.n_images, "split": "val"}
    (ctx.run_dir / "calibration.json").write_text(json.dumps(calib, indent=1), encoding="utf-8")
    ev.artifact("calibration", ctx.run_dir / "calibration.json", variant=best["weights"])
    ev.emit("metrics", **before.to_event("val", best["weights"], None, **tile_facts(vid),
                                         ece_calibrated=after.ece, nll_calibrated=after.nll, temperature=temp,
                                         checkpoint_name=final.name),
            identity={"checkpoint": str(final), "ckpt_epoch": best["epoch"], "weights": best["weights"]})
    ev.log(f"temperature scaling on validation: T = {temp:.3f}, ECE {before.ece:.4f} -> {after.ece:.4f}, "
           f"NLL {before.nll:.4f} -> {after.nll:.4f}")
    if cc.calibrate and after.ece > before.ece:
        ev.log(f"temperature scaling lowered the validation NLL but raised ECE ({100 * before.ece:.2f} -> "
               f"{100 * after.ece:.2f} %, T = {temp:.3f}): the model is not yet calibratable by one temperature "
               f"(train longer, or set classify.calibrate: false to keep T = 1)", level="warning")
    probs = softmax(z / temp)
    _write_predictions(ctx, vid, lab, probs, names, ids_map)
    _error_gallery(ctx, model, val_ds, vid, lab, probs, names, device)
    ev.log(f"classification done in {time.time() - t_start:.0f} s: best epoch {best['epoch'] + 1} "
           f"({best['weights']}), top-1 {before.top1:.4f}, macro F1 {before.macro_f1:.4f}")
    return {"best": best, "history": history, "stopped": stopped, "temperature": temp,
            "top1": before.top1, "macro_f1": before.macro_f1, "ece_before": before.ece, "ece_after": after.ece}


def _save_last(ckdir: Path, model, ema, opt, sched, epoch, global_step, best, history, bad_epochs) -> None:
    """``checkpoints/last.pth`` after every epoch: what a resume continues from (``mapsage runs resume``)."""
    from ..train.checkpoint import rng_state, save_checkpoint

    save_checkpoint(ckdir / "last.pth", {
        "kind": "last", "task": "classification", "model": model.state_dict(),
        "ema": ema.module.state_dict() if ema is not None else None, "ema_updates": getattr(ema, "updates", None),
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": int(epoch),
        "epochs_done": int(epoch) + 1, "global_step": int(global_step), "bad_epochs": int(bad_epochs),
        "best": {k: best[k] for k in ("score", "epoch", "weights", "path")}, "history": history,
        "rng": rng_state()})


def _restore(ctx: StageContext, model, ema, opt, sched) -> tuple[int, int, dict, list, int]:
    """Continue a classification run from ``ctx.resume_from`` (a ``last.pth``): weights, EMA, optimiser,
    schedule, RNG, history, early-stop count; the best checkpoint so far is copied into this run's folder.
    Returns ``(first epoch to run, global step, best, history, epochs without gain)``."""
    import shutil

    from ..train.checkpoint import set_rng_state

    path = Path(ctx.resume_from)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise UserError(f"{path}: not a readable checkpoint ({type(exc).__name__}); resume from the run's "
                        f"checkpoints/last.pth") from exc
    if not isinstance(data, dict) or data.get("task") != "classification" or "optimizer" not in data:
        raise UserError(f"{path}: not a classification run's last.pth (no optimiser state); a classify run "
                        f"resumes from its own checkpoints/last.pth")
    model.load_state_dict(data["model"])
    if ema is not None and data.get("ema") is not None:
        ema.module.load_state_dict(data["ema"])
        if data.get("ema_updates") is not None and hasattr(ema, "updates"):
            ema.updates = data["ema_updates"]
    opt.load_state_dict(data["optimizer"])
    sched.load_state_dict(data["scheduler"])
    set_rng_state(data.get("rng"))
    best = dict(data["best"])
    old = Path(best["path"]) if best.get("path") else None
    if old is not None and old.exists():
        mine = ctx.checkpoints_dir / old.name
        if old.resolve() != mine.resolve():
            shutil.copy2(old, mine)
        best["path"] = str(mine)
    elif best.get("path"):
        ctx.events.log(f"resume: the best checkpoint so far ({old}) is gone; the best is chosen again from here",
                       level="warning")
        best = {"score": -1.0, "epoch": None, "weights": None, "path": None}
    start = int(data["epoch"]) + 1
    ctx.events.log(f"resumed from {path} after epoch {start} (step {int(data['global_step'])}; best so far "
                   + (f"epoch {best['epoch'] + 1}, S {best['score']:.4f})" if best["path"] else "none)"))
    return start, int(data["global_step"]), best, list(data.get("history") or []), int(data.get("bad_epochs", 0))


def _ckpt(cfg, state, epoch, score, weights, names, ids_map, mean, std, size) -> dict:
    return {"model": state, "epoch": int(epoch), "score": float(score), "weights": weights, "task": "classification",
            "config": to_dict(cfg), "classes": list(names), "category_ids": [int(i) for i in ids_map],
            "mean": [float(m) for m in mean], "std": [float(s) for s in std], "img_size": int(size),
            "temperature": 1.0, "fold": int(cfg.dataset.split.fold) if cfg.dataset.split.folds else None,
            "seed": int(cfg.train.seed)}


def _write_predictions(ctx, ids, labels, probs, names, ids_map) -> None:
    out = ctx.predictions_dir
    out.mkdir(parents=True, exist_ok=True)
    path = out / "val_predictions.csv"
    with open(path, "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["filename", "label", "label_id", "pred", "pred_id", "confidence", *[f"p_{n}" for n in names]])
        for i, fid in enumerate(ids):
            p = int(probs[i].argmax())
            wr.writerow([fid, names[labels[i]], ids_map[labels[i]], names[p], ids_map[p], f"{probs[i, p]:.5f}",
                         *[f"{v:.5f}" for v in probs[i]]])
    ctx.events.artifact("cls_predictions", path, variant="val")


def _error_gallery(ctx, model, val_ds, ids, labels, probs, names, device) -> None:
    """The ``classify.errors_top_k`` most confident mistakes: thumbnails and Grad-CAM overlays (for the first
    ``classify.gradcam_images``) under ``predictions/errors/``; ``predictions/errors.json`` lists them."""
    import cv2


    cc = ctx.cfg.classify
    pred = probs.argmax(1)
    wrong = np.where(pred != labels)[0]
    order = wrong[np.argsort(-probs[wrong, pred[wrong]])][: int(cc.errors_top_k)]
    edir = ctx.predictions_dir / "errors"
    edir.mkdir(parents=True, exist_ok=True)
    index = {s.id: k for k, s in enumerate(val_ds.samples)}
    rows = []
    model = model.to(device)
    for rank, i in enumerate(order):
        fid = ids[i]
        s = val_ds.samples[index[fid]]
        rgb = load_rgb(s.image_path)
        thumb = cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_AREA)
        safe = f"{rank:03d}_" + "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in fid)
        tp = edir / f"{safe}_thumb.png"
        cv2.imwrite(str(tp), thumb[:, :, ::-1])
        row = {"rank": rank, "filename": fid, "label": names[labels[i]], "pred": names[pred[i]],
               "confidence": float(probs[i, pred[i]]), "p_label": float(probs[i, labels[i]]),
               "top3": [[names[k], float(probs[i, k])] for k in np.argsort(-probs[i])[:3]],
               "thumb": str(tp.relative_to(ctx.run_dir)), "group": s.group}
        if rank < int(cc.gradcam_images):
            x = val_ds[index[fid]]["image"].to(device)
            cam, _, _ = grad_cam(model, x, int(pred[i]))
            cam_l, _, _ = grad_cam(model, x, int(labels[i]))
            big = cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_AREA)
            gp = edir / f"{safe}_gradcam_pred.png"
            gl = edir / f"{safe}_gradcam_label.png"
            cv2.imwrite(str(gp), overlay(big, cam)[:, :, ::-1])
            cv2.imwrite(str(gl), overlay(big, cam_l)[:, :, ::-1])
            row["gradcam_pred"] = str(gp.relative_to(ctx.run_dir))
            row["gradcam_label"] = str(gl.relative_to(ctx.run_dir))
        rows.append(row)
    path = ctx.predictions_dir / "errors.json"
    path.write_text(json.dumps({"n_errors": int(len(wrong)), "n_images": int(len(ids)), "rows": rows}, indent=1),
                    encoding="utf-8")
    ctx.events.artifact("cls_errors", path, variant="val", n_errors=int(len(wrong)))
