"""The distillation stage (plan stage 2): ``run(ctx)`` for ``stage.kind: distill`` and for training configs with
``distill.enabled``; :func:`mapsage.train.stage.run` hands such configs here.

1. **Teacher**: built and frozen first (a missing weights file fails before any training,
   :mod:`mapsage.distill.teacher`).
2. **Student with the teacher** (this run's own folder, events and checkpoints): the training engine
   (:class:`mapsage.train.Trainer`) with the distillation terms as extra losses (:mod:`mapsage.distill.losses`).
   Everything else -- loss schedule, freezing 50-70 % of the encoder and unfreezing a group every N epochs
   (``model.freeze``), EMA, validation, checkpoints, resume -- is the engine's. The teacher's features are cached
   per :func:`mapsage.distill.targets.cache_rule`; the stage wraps the training set so the tile cache applies.
3. **A/B** (``stage.kind: distill`` only, ``distill.baseline`` not ``none``): the same student *without* the
   teacher, on the same budget --

   * ``distill.baseline: train`` (default): trained here with the very same config minus distillation (same seed,
     initial weights, data order, crops, epochs, steps, LR schedule, freezing) as a sibling run
     ``<run_id>__no-teacher`` (its own row in the Runs table, ``parent_run`` = this run);
   * a checkpoint file, run id or ``latest:<template>``: that run is the baseline; its config must match this
     one's budget (model, data, augmentation, loss schedule, epochs, steps, batch, LR), else a UserError lists the
     differences.

   Both arms' best checkpoints (the higher stored validation score of ``best.pth`` / ``best_ema.pth``, the same
   rule for both) are evaluated on the validation split through :func:`mapsage.infer.evaluate_outcome`, and two
   ``ab`` events are written (``ab_kind: distill``): the baseline row (``no-teacher``, decision ``baseline``) and
   the distilled student's row (``kd=<teacher>``) with the gain in points of ``train.save_best_by``, the
   keep/drop decision against ``distill.threshold``, a paired bootstrap over tiles, and both arms' training cost
   (wall time, images/s) and the teacher's time in ``details``.

Resume: the distilled arm resumes from ``ctx.resume_from``; the baseline arm of the resumed run is reused when it
had finished, resumed from its ``last.pth`` when it had started, else trained.
"""
from __future__ import annotations

import copy
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import yaml

from ..config import ConfigError, config_hash, git_commit, run_name, save_resolved, to_dict
from ..data import build_dataset
from ..errors import CheckpointError, UserError
from ..event_records import fold_events
from ..events import EVENTS_FILE, FINAL_STATUSES, EventWriter, NullEvents
from ..infer.ab import ab_row
from ..infer.checkpoints import best_score, resolve_checkpoint, weights_for
from ..infer.evaluate import evaluate_outcome
from ..models.checkpoint import load_checkpoint, load_for_inference
from ..stage import StageContext
from ..train import Trainer
from ..train.distributed import cleanup, init_from_env
from .build import build_distill_losses, check_distill_config
from .data import TeacherViewDataset
from .targets import cache_rule
from .teacher import build_teacher, teacher_speed_note

CHILD_SUFFIX = "__no-teacher"
BASELINE_VARIANT = "no-teacher"
BUDGET_KEYS = ["model.arch", "model.encoder", "model.pretrained", "model.freeze", "model.decoder_channels",
               "dataset.name", "dataset.root", "dataset.classes", "dataset.split", "augment", "loss.schedule",
               "train.epochs", "train.steps_per_epoch", "train.batch_size", "train.accumulate", "train.lr",
               "train.scale_lr", "train.base_batch", "train.warmup_epochs", "runtime.gpus"]


# ------------------------------------------------------------------------------------------------------ helpers


def train_device(cfg) -> torch.device:
    """The device the training engine will use (as :func:`mapsage.train.engine.resolve_train_device`)."""
    want = cfg.runtime.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device is 'cuda' but no CUDA device is available; set runtime.device: auto or cpu")
    if want == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def baseline_config(cfg):
    """The A/B arm without the teacher: ``cfg`` with distillation off, as a plain training run."""
    b = copy.deepcopy(cfg)
    b.distill.enabled = False
    b.stage.kind = "train"
    b.stage.name = f"{run_name(b)}_no-teacher"
    b.stage.title = (f"{cfg.stage.title} - A/B arm without the teacher" if cfg.stage.title
                     else "A/B arm without the teacher")
    b.meta = {k: v for k, v in dict(cfg.meta).items() if k not in ("source", "config_hash", "code_commit",
                                                                    "resolved_at", "run_name")}
    return b


def _get(d: dict, dotted: str):
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def budget_differences(cfg, other: dict) -> dict[str, list]:
    """``{key: [this, other]}`` for the budget keys where ``other`` (a config mapping) differs from ``cfg``."""
    mine = to_dict(cfg)
    return {k: [_get(mine, k), _get(other, k)] for k in BUDGET_KEYS if _get(mine, k) != _get(other, k)}


def _last_status(folder: Path) -> Optional[str]:
    return fold_events(folder / EVENTS_FILE)[0].status


def _run_folder_of(checkpoint: Optional[Path]) -> Optional[Path]:
    if checkpoint is None:
        return None
    p = Path(checkpoint).resolve()
    return p.parent.parent if p.parent.name == "checkpoints" else None


def _resume_chain(ctx: StageContext) -> list[Path]:
    """This run's folder, then the folders of the runs it resumes (newest first, via meta.resumed_from_run)."""
    chain = [Path(ctx.run_dir)]
    folder = _run_folder_of(ctx.resume_from)
    seen = {chain[0].resolve()}
    while folder is not None and folder.is_dir() and folder.resolve() not in seen and len(chain) < 32:
        chain.append(folder)
        seen.add(folder.resolve())
        try:
            meta = (yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}).get("meta") or {}
        except (OSError, yaml.YAMLError):
            break
        prev = meta.get("resumed_from_run")
        folder = folder.parent / prev if prev else None
    return chain


def best_of(folders: list[Path], key: str, metric: str) -> Path:
    """The best checkpoint over ``folders`` (the highest stored score of their best*.pth)."""
    cands = [p for f in folders for p in sorted((f / "checkpoints").glob("best*.pth"))]
    if not cands:
        raise CheckpointError(f"{key}: no checkpoints/best*.pth in {', '.join(str(f) for f in folders)}; the arm "
                              f"has no validated epoch (train.val_every / train.epochs)")
    scored = [(best_score(p, metric), p.name != "best.pth", -i, p) for i, p in enumerate(cands)]
    scored.sort(key=lambda t: (-t[0], t[1], t[2]))
    return scored[0][3]


AB_SHARE = 0.05           # the share of the progress bar the A/B evaluation takes after the training arms


def _scaled_progress(ctx: StageContext, arm: int, n_arms: int, label: str,
                     also: Optional[Callable[..., None]] = None, share: float = 1.0) -> Callable[..., None]:
    def progress(**p):
        if p.get("frac") is not None:
            p["frac"] = share * (arm + float(p["frac"])) / n_arms
        if p.get("message"):
            p["message"] = f"[{label}] {p['message']}"
        ctx.progress(**p)
        if also is not None:
            also(**p)
    return progress


class _Beats:
    """Rate-limited heartbeats (with progress) into a sibling run's own event file."""

    def __init__(self, events: EventWriter, every_s: float):
        self.events, self.every_s, self.last = events, every_s, 0.0

    def __call__(self, **p):
        now = time.time()
        if now - self.last >= self.every_s:
            self.last = now
            self.events.heartbeat(**p)


def _teacher_checksum(teacher) -> tuple:
    with torch.no_grad():
        return tuple((float(p.double().sum()), float(p.double().abs().sum())) for p in teacher.module.parameters())


# ------------------------------------------------------------------------------------------------------ arms


def _train_distilled(ctx: StageContext, teacher, device, n_arms: int, share: float = 1.0) -> dict:
    cfg = ctx.cfg
    events = ctx.events if ctx.is_main else NullEvents()
    base = build_dataset(cfg, cfg.dataset.train_split, train=True)
    mode, reason = cache_rule(cfg, tile_views=True, dataset=base, window=teacher.window or teacher.stride)
    train_set = TeacherViewDataset(base) if mode == "tile" else base
    losses, targets = build_distill_losses(cfg, teacher, device=device, dataset=train_set,
                                           tile_views=mode == "tile", events=events, cache=(mode, reason))
    desc = teacher.describe()
    events.log(f"teacher {desc['model']} ({desc['kind']}, {desc['params'] / 1e6:.2f} M parameters, frozen, eval "
               f"mode, {desc['dtype']}) from {desc['weights']}; target: {'block' if teacher.kind == 'timm' else 'stage'}"
               f" {teacher.layer}, {teacher.dim} channels every {teacher.stride} px; input normalisation mean "
               f"{desc['mean']} std {desc['std']}" + ("; " + "; ".join(teacher.notes) if teacher.notes else ""))
    events.log(f"distillation terms: {', '.join(losses)} (feature loss {cfg.distill.feature_loss} on student stages "
               f"{list(cfg.distill.student_stages)}, T={cfg.distill.temperature:g}); teacher feature cache: "
               f"{targets.mode} - {targets.reason}")
    before = _teacher_checksum(teacher)
    trainer = Trainer(cfg, run_dir=ctx.run_dir, events=events if ctx.is_main else None,
                      progress=_scaled_progress(ctx, 0, n_arms, "student+teacher", share=share) if ctx.is_main else None,
                      should_stop=ctx.should_stop, extra_losses=losses, device=device, train_set=train_set)
    try:
        summary = trainer.fit(resume_from=ctx.resume_from)
    finally:
        targets.flush_stats()
        trainer.close()
    teacher.check_frozen()
    if _teacher_checksum(teacher) != before:
        raise RuntimeError("the distillation teacher's weights changed during training")
    events.log(f"teacher unchanged after training (weights checksum identical, frozen, eval mode); "
               f"{teacher_speed_note(teacher)}; cache {targets.cache.bytes / 2 ** 20:.1f} MB, "
               f"{len(targets.cache.data)} entries, {targets.cache.evicted} evicted")
    summary["cache"] = targets.describe()
    return summary


def _reuse_or_resume_child(ctx: StageContext) -> tuple[Optional[Path], Optional[Path]]:
    """For a resumed distill run: (a finished baseline run to reuse, or None; a baseline last.pth to resume)."""
    parent = _run_folder_of(ctx.resume_from)
    if parent is None:
        return None, None
    old = parent.parent / f"{parent.name}{CHILD_SUFFIX}"
    if not old.is_dir():
        return None, None
    status = _last_status(old)
    if status == "succeeded":
        return old, None
    if status not in FINAL_STATUSES and ctx.is_main:
        EventWriter(old).status("died", message=f"the distill run {parent.name} that trained this arm ended; "
                                                f"{Path(ctx.run_dir).name} resumes it")
    last = old / "checkpoints" / "last.pth"
    return None, (last if last.is_file() else None)


def _train_baseline(ctx: StageContext, device, n_arms: int, share: float = 1.0) -> tuple[Path, dict]:
    """The no-teacher arm as the sibling run ``<run_id>__no-teacher``. Returns (its folder, its summary)."""
    cfg = ctx.cfg
    reuse, resume = _reuse_or_resume_child(ctx)
    events = ctx.events if ctx.is_main else NullEvents()
    if reuse is not None:
        events.log(f"A/B baseline: reusing the finished no-teacher arm {reuse.name} of the resumed run")
        return reuse, {"reused": True}
    bcfg = baseline_config(cfg)
    folder = Path(ctx.run_dir).parent / f"{Path(ctx.run_dir).name}{CHILD_SUFFIX}"
    child = NullEvents()
    if ctx.is_main:
        save_resolved(bcfg, folder)
        child = EventWriter(folder)
        child.status("running", message=f"A/B arm without the teacher of {ctx.run_id} (pid {os.getpid()})")
        child.emit("run_info", name=run_name(bcfg), kind="train", plan_stage=cfg.stage.plan_stage,
                   title=bcfg.stage.title, config_hash=config_hash(bcfg), code_commit=git_commit(),
                   dataset=cfg.dataset.name, parent_run=ctx.run_id, parent_relation="distill-baseline",
                   created_at=time.time(), pid=os.getpid(), host=socket.gethostname(),
                   resume_from=str(resume) if resume else None)
        events.log(f"A/B baseline: training the same student without the teacher, same budget, as run "
                   f"{folder.name}" + (f" (resuming {resume})" if resume else ""))
    beats = _Beats(child, ctx.heartbeat_every_s) if ctx.is_main else None
    try:
        trainer = Trainer(bcfg, run_dir=folder, events=child if ctx.is_main else None,
                          progress=_scaled_progress(ctx, n_arms - 1, n_arms, "no teacher", beats, share=share)
                          if ctx.is_main else None, should_stop=ctx.should_stop, device=device)
        try:
            summary = trainer.fit(resume_from=resume)
        finally:
            trainer.close()
    except BaseException as exc:
        child.status("cancelled" if ctx.should_stop() else "failed", message=f"{type(exc).__name__}: {exc}",
                     traceback=traceback.format_exc())
        raise
    if ctx.should_stop() or summary.get("stopped") == "cancelled":
        child.status("cancelled", message="stop requested; last.pth saved")
    else:
        child.status("succeeded", message=f"best {cfg.train.save_best_by}: raw {summary['best'].get('raw')}, ema "
                                          f"{summary['best'].get('ema')}")
    return folder, summary


def _referenced_baseline(cfg):
    """Resolve ``distill.baseline`` naming an existing run/checkpoint and check it had the same budget."""
    resolved = resolve_checkpoint(cfg.distill.baseline, key="distill.baseline", metric=cfg.train.save_best_by)
    saved = load_checkpoint(resolved.path).get("config") or {}
    diffs = budget_differences(cfg, saved)
    if diffs:
        listing = "; ".join(f"{k}: this {v[0]!r} vs baseline {v[1]!r}" for k, v in diffs.items())
        raise UserError(f"distill.baseline: {resolved.path} was not trained on the same budget ({listing}); an A/B "
                        f"needs the same model, data, augmentation, loss and schedule - set distill.baseline: "
                        f"train to train the no-teacher arm here")
    return resolved


# ------------------------------------------------------------------------------------------------------ A/B


def _evaluate_arms(ctx: StageContext, teacher, kd_ckpt: Path, base_ckpt: Path, device, facts: dict) -> dict:
    cfg = ctx.cfg
    split = cfg.dataset.val_split
    dataset = build_dataset(cfg, split, train=False)
    outcomes = {}
    for k, (name, path) in enumerate(((BASELINE_VARIANT, base_ckpt), ("kd", kd_ckpt))):
        def progress(k=k, name=name, **p):
            f = float(p.get("frac") or 0.0)
            ctx.progress(**{**p, "phase": "ab", "frac": 1.0 - AB_SHARE + AB_SHARE * (k + f) / 2,
                            "message": f"[A/B] {name}: {p.get('message') or ''}"})
        model, mcfg = load_for_inference(path, weights=weights_for(path), device=device)
        if list(mcfg.dataset.classes) != list(cfg.dataset.classes):
            raise CheckpointError(f"{path}: trained for classes {list(mcfg.dataset.classes)}, not "
                                  f"{list(cfg.dataset.classes)}")
        outcomes[name] = evaluate_outcome(model, dataset, cfg, split=split, variant=name, device=device,
                                          events=None, max_tiles=cfg.eval.max_tiles, should_stop=ctx.should_stop,
                                          progress=progress)
        del model
    base, kd = outcomes[BASELINE_VARIANT], outcomes["kd"]
    if kd.n_images != base.n_images:
        ctx.events.log("A/B evaluation stopped early; no decision written", level="warning")
        return {}
    crit = cfg.train.save_best_by
    variant = f"kd={teacher.name}"
    arms = {"student+teacher": {"checkpoint": str(kd_ckpt), "weights": weights_for(kd_ckpt), **facts["kd"]},
            BASELINE_VARIANT: {"checkpoint": str(base_ckpt), "weights": weights_for(base_ckpt), **facts["base"]}}
    ctx.events.emit("ab", **ab_row(ab_kind="distill", variant=BASELINE_VARIANT, baseline=BASELINE_VARIANT,
                                   outcome=base, baseline_outcome=base, threshold=cfg.distill.threshold,
                                   criterion=crit, is_baseline=True, details={"arm": arms[BASELINE_VARIANT]}))
    row = ab_row(ab_kind="distill", variant=variant, baseline=BASELINE_VARIANT, outcome=kd, baseline_outcome=base,
                 threshold=cfg.distill.threshold, criterion=crit, guard=cfg.eval.ab_guard,
                 details={"teacher": teacher.describe(), "arms": arms, "same_budget": facts.get("same_budget"),
                          "distill": to_dict(cfg.distill), "teacher_forward_s": teacher.forward_s,
                          "note": facts.get("note")})
    ctx.events.emit("ab", **row)
    ctx.events.log(f"A/B distill: {variant} {crit} {getattr(kd.result, crit) * 100:.2f} vs no-teacher "
                   f"{getattr(base.result, crit) * 100:.2f} on {kd.n_images} {split} tiles: gain {row['gain']:+.2f} "
                   f"points (threshold {cfg.distill.threshold:+.2f}) -> {row['decision']}")
    return row


def _arm_facts(summary: dict) -> dict[str, Any]:
    hist = summary.get("history") or []
    ips = [h.get("images_per_s") for h in hist if isinstance(h.get("images_per_s"), (int, float))]
    return {"train_wall_s": summary.get("wall_s"), "epochs_done": summary.get("epochs_done"),
            "train_images_per_s": (sum(ips) / len(ips)) if ips else None, "best": summary.get("best"),
            "stopped": summary.get("stopped"), "reused": bool(summary.get("reused"))}


# ------------------------------------------------------------------------------------------------------ entry


def run(ctx: StageContext) -> dict:
    """The distillation stage (see the module doc). Returns the distilled arm's training summary (plus ``ab``)."""
    cfg = ctx.cfg
    if cfg.runtime.threads:
        torch.set_num_threads(int(cfg.runtime.threads))
    for w in check_distill_config(cfg):
        ctx.events.log(w, level="warning")
    device = train_device(cfg)
    info = init_from_env(device.type)         # one process group for both arms (each Trainer joins it)
    ctx.rank, ctx.world_size = info.rank, info.world_size
    try:
        return _run(ctx, device)
    finally:
        cleanup(info)


def _run(ctx: StageContext, device: torch.device) -> dict:
    cfg = ctx.cfg
    baseline = str(cfg.distill.baseline).strip()
    ab = cfg.stage.kind == "distill" and baseline.lower() != "none"
    teacher = build_teacher(cfg, device)
    ref = _referenced_baseline(cfg) if ab and baseline.lower() != "train" else None
    n_arms = 2 if ab and ref is None else 1
    if ctx.is_main:
        ctx.events.emit("run_info", distill_teacher=teacher.describe(), distill_ab=(
            "none" if not ab else (BASELINE_VARIANT + " arm trained here" if ref is None else f"reference {ref.path}")))
        if cfg.stage.kind != "distill" and baseline.lower() not in ("none", "train"):
            ctx.events.log("distill.baseline is only used by stage.kind: distill; this training run has no A/B")
    share = 1.0 - AB_SHARE if ab else 1.0
    kd_summary = _train_distilled(ctx, teacher, device, n_arms, share)
    if not ab:
        return kd_summary
    if ctx.should_stop() or kd_summary.get("stopped") == "cancelled":
        ctx.events.log("stopped before the A/B baseline arm", level="warning")
        return kd_summary
    if ref is None:
        base_folder, base_summary = _train_baseline(ctx, device, n_arms, share)
        if ctx.should_stop() or base_summary.get("stopped") == "cancelled":
            ctx.events.log("stopped during the A/B baseline arm; no decision written", level="warning")
            return kd_summary
        base_folders = [base_folder]
        same_budget = "trained here: the same config without distillation"
    else:
        base_folders = None
        base_summary = {}
        same_budget = "checked against the referenced run's config: " + ", ".join(BUDGET_KEYS)
    if not ctx.is_main:
        return kd_summary
    metric = cfg.train.save_best_by
    kd_ckpt = best_of(_resume_chain(ctx), "distill (student+teacher arm)", metric)
    base_ckpt = best_of(base_folders, "distill.baseline", metric) if base_folders else ref.path
    note = ("the teacher is a randomly initialised demo network: it teaches nothing about the imagery; point "
            "distill.teacher.weights at DINOv3(-SAT) weights for real use") if "random" in teacher.source.lower() \
        else None
    facts = {"kd": _arm_facts(kd_summary), "base": _arm_facts(base_summary) if base_summary else
             {"run_id": ref.run_id}, "same_budget": same_budget, "note": note}
    if base_folders:
        facts["base"]["run_id"] = base_folders[0].name
    facts["kd"]["run_id"] = ctx.run_id
    kd_summary["ab"] = _evaluate_arms(ctx, teacher, kd_ckpt, base_ckpt, device, facts)
    return kd_summary


__all__ = ["run", "baseline_config", "budget_differences", "train_device", "best_of", "CHILD_SUFFIX",
           "BASELINE_VARIANT", "BUDGET_KEYS"]
