"""An imported run becomes a normal run folder: ``config.yaml`` plus ``events.jsonl`` in the workbench's own event
format (:mod:`mapsage.events`), so the store ingests it like any run and ranks it beside native runs.

The folder (``runs/<name>_<timestamp>_imported-<hash>``, the hash of the source path, so importing the same source
twice is noticed) holds:

* ``config.yaml``: a workbench-shaped description (``stage.kind: imported``, ``dataset.name/classes/palette``,
  ``eval.split``, ``model.arch/encoder``, ``augment.crop_size`` and what the source pipeline did, ``loss.schedule``
  from the decode head's losses) plus the source config as data under ``source_config``. It describes the run for
  the experiment table; it cannot be launched or resumed;
* ``source/``: copies of the source config and text log;
* ``events.jsonl``: ``run_info`` (``origin: imported``, ``import_source``, ``import_path``, dataset, split, the
  source schedule), ``status`` running / succeeded (at the source's own start and end times when both are
  known; else only succeeded, at import time), training ``scalars`` (split ``train`` at their global steps,
  per-epoch means as split ``train_epoch``), one ``metrics`` record per validation (variant ``raw`` unless the
  source says otherwise, domain ``all``, ``epoch`` = the
  validation period, ``iter`` = its global step) and ``log`` lines. There are no ``tiles`` records: the sources keep
  no per-tile areas, so paired bootstrap comparisons are not possible for an imported run.

Class names follow the workbench's dataset of the same name when the class count agrees (mmseg's LoveDA
``agricultural`` is the workbench's ``agriculture``), so per-class columns line up in rankings.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import yaml

from ..config import CONFIGS_DIR
from ..events import EventWriter
from .mmseg import ForeignRun, _get

LOSS_TYPES = {"CrossEntropyLoss": "ce", "DiceLoss": "dice", "LovaszLoss": "lovasz", "FocalLoss": "focal",
              "OhemCrossEntropy": "ohem", "BoundaryLoss": "boundary"}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")[:80] or "run"


def import_run_id(run: ForeignRun) -> str:
    h = hashlib.sha1(str(Path(run.path).resolve()).encode()).hexdigest()[:8]
    stamp = run.timestamp or time.strftime("%Y%m%d_%H%M%S", time.gmtime(run.started_at or time.time()))
    return f"{slug(run.name)}_{stamp.replace('_', '-')}_imported-{h}"


def dataset_guess(run: ForeignRun) -> Optional[str]:
    t = _get(run.config, "dataset_type") or _get(run.config, "train_dataloader", "dataset", "type")
    if isinstance(t, str) and t:
        return re.sub(r"dataset$", "", t, flags=re.I).lower() or None
    return None


def workbench_dataset(name: Optional[str]) -> Optional[dict]:
    """The ``dataset`` section of the workbench's base config of that name (configs/_base_/datasets), if any."""
    if not name:
        return None

    def section(f: Path, depth: int = 0) -> dict:
        try:
            doc = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            return {}
        d = dict(doc.get("dataset") or {})
        bases = doc.get("_base_") or []
        for b in ([bases] if isinstance(bases, str) else bases) if depth < 4 else []:
            base = section(f.parent / str(b), depth + 1)
            d = {**base, **d}
        return d

    for f in sorted((CONFIGS_DIR / "_base_" / "datasets").glob("*.yaml")):
        d = section(f)
        if str(d.get("name", "")).lower() == name.lower() or f.stem.lower() == name.lower():
            return d
    return None


def _pipeline_aug(cfg: dict) -> dict:
    """The workbench ``augment`` keys that describe an mmseg training pipeline."""
    pipe = _get(cfg, "train_pipeline") or _get(cfg, "train_dataloader", "dataset", "pipeline") or []
    aug: dict[str, Any] = {"enabled": True}
    crop = _get(cfg, "crop_size")
    for step in pipe if isinstance(pipe, list) else []:
        if not isinstance(step, dict):
            continue
        t = step.get("type")
        if t in ("RandomResize", "Resize") and isinstance(step.get("ratio_range"), list):
            aug["scale_range"] = [float(x) for x in step["ratio_range"][:2]]
        elif t == "RandomCrop" and isinstance(step.get("crop_size"), list):
            crop = step["crop_size"]
        elif t == "RandomFlip":
            p = step.get("prob", step.get("flip_ratio", 0.5))
            if (step.get("direction") or "horizontal") == "vertical":
                aug["vflip"] = p
            else:
                aug["hflip"] = p
        elif t == "PhotoMetricDistortion":
            aug["color_jitter"] = True
            aug["color_jitter_p"] = 1.0
        elif t == "RandomRotate":
            aug["rotate_deg"] = step.get("degree")
            aug["rotate_p"] = step.get("prob", 0.5)
    if isinstance(crop, list) and len(crop) == 2:
        aug["crop_size"] = [int(c) for c in crop]
    aug["cutmix_p"], aug["mixup_p"] = 0.0, 0.0
    return aug


def _losses(cfg: dict) -> Optional[dict]:
    ld = _get(cfg, "model", "decode_head", "loss_decode")
    items = ld if isinstance(ld, list) else [ld] if isinstance(ld, dict) else []
    terms = {}
    for item in items:
        if isinstance(item, dict) and item.get("type"):
            name = LOSS_TYPES.get(str(item["type"]), str(item["type"]))
            terms[name] = float(item.get("loss_weight", 1.0))
    return {"schedule": [{"from_epoch": 0, "terms": terms}]} if terms else None


def schedule_facts(cfg: dict) -> dict:
    opt = _get(cfg, "optim_wrapper", "optimizer") or _get(cfg, "optimizer") or {}
    sched = _get(cfg, "param_scheduler")
    kinds = [s.get("type") for s in (sched if isinstance(sched, list) else [sched]) if isinstance(s, dict)]
    if not kinds and isinstance(_get(cfg, "lr_config"), dict):
        kinds = [_get(cfg, "lr_config", "policy")]
    tc = _get(cfg, "train_cfg") or _get(cfg, "runner") or {}
    bs = _get(cfg, "train_dataloader", "batch_size") or _get(cfg, "data", "samples_per_gpu")
    return {k: v for k, v in {
        "optimizer": opt.get("type") if isinstance(opt, dict) else None,
        "lr": opt.get("lr") if isinstance(opt, dict) else None,
        "weight_decay": opt.get("weight_decay") if isinstance(opt, dict) else None,
        "lr_schedule": "+".join(str(k) for k in kinds if k) or None,
        "max_iters": tc.get("max_iters") if isinstance(tc, dict) else None,
        "max_epochs": tc.get("max_epochs") if isinstance(tc, dict) else None,
        "val_interval": tc.get("val_interval") if isinstance(tc, dict) else None,
        "batch_size_per_gpu": bs,
    }.items() if v is not None and not (isinstance(v, str) and v.startswith("<"))}


def describe(run: ForeignRun, dataset: Optional[str], split: str) -> tuple[dict, list[str] | None, dict]:
    """(workbench-shaped config mapping, class names, extra run facts) of an imported run."""
    cfg = run.config or {}
    wb = workbench_dataset(dataset)
    names = run.class_names
    renamed = None
    if wb and names and len(wb.get("classes") or []) == len(names) and list(wb["classes"]) != list(names):
        renamed = dict(zip(names, wb["classes"]))
        names = list(wb["classes"])
    elif wb and not names:
        n = _get(cfg, "model", "decode_head", "num_classes")
        if isinstance(n, int) and n == len(wb.get("classes") or []):
            names = list(wb["classes"])
    model = _get(cfg, "model") or {}
    backbone = _get(model, "backbone", "type")
    head = _get(model, "decode_head", "type")
    pretrained = _get(model, "backbone", "init_cfg", "checkpoint") or _get(model, "pretrained")
    title = f"imported from {run.source}: {run.path}"
    facts = schedule_facts(cfg)
    ds: dict[str, Any] = {"name": dataset or "unknown", "classes": names or [], "val_split": split,
                          "ignore_index": 255}
    if wb and wb.get("palette") and names and len(wb["palette"]) == len(names):
        ds["palette"] = wb["palette"]
    mapping: dict[str, Any] = {
        "meta": {"run_name": run.name, "imported_from": run.source, "source_path": str(run.path)},
        "stage": {"kind": "imported", "title": title},
        "dataset": ds,
        "model": {"arch": head or model.get("type") if isinstance(model, dict) else None,
                  "encoder": backbone, "pretrained": pretrained if isinstance(pretrained, str) else "none"},
        "augment": _pipeline_aug(cfg),
        "eval": {"split": split},
        "source_config": cfg,
    }
    losses = _losses(cfg)
    if losses:
        mapping["loss"] = losses
    facts.update({"class_renames": renamed} if renamed else {})
    return mapping, names, facts


def write_run_folder(run: ForeignRun, runs_root: Path, *, dataset: Optional[str] = None, split: str = "val",
                     overwrite: bool = False) -> tuple[str, bool]:
    """Write ``run`` as a run folder under ``runs_root``. Returns (run_id, written); ``written`` is False when the
    source was imported before (its folder exists) and ``overwrite`` is off."""
    rid = import_run_id(run)
    rdir = Path(runs_root) / rid
    if rdir.exists():
        if not overwrite:
            return rid, False
        shutil.rmtree(rdir)
    dataset = dataset or dataset_guess(run)
    mapping, names, facts = describe(run, dataset, split)
    rdir.mkdir(parents=True)
    (rdir / "config.yaml").write_text(yaml.safe_dump(mapping, sort_keys=False, allow_unicode=True),
                                      encoding="utf-8")
    src = rdir / "source"
    copied = []
    for f in run.extra_files:
        if f is not None and Path(f).is_file():
            src.mkdir(exist_ok=True)
            shutil.copy2(f, src / Path(f).name)
            copied.append(Path(f).name)
    renames = facts.get("class_renames") or {}
    ev = EventWriter(rdir)
    now = time.time()
    started = run.started_at
    last_step = max([s for s, _, _ in run.train] + [e["step"] for e in run.evals] + [0])
    ev.emit("run_info", name=run.name, kind="imported", origin="imported", import_source=run.source,
            import_path=str(run.path), imported_at=now, dataset=mapping["dataset"]["name"], split=split,
            created_at=started or now, epochs=run.periods or None, title=mapping["stage"]["title"],
            steps=last_step, by_epoch=run.by_epoch,
            period=("epoch" if run.by_epoch else "validation interval"), **facts)
    ended = run.ended_at
    known = bool(started and ended and ended >= started)
    if known:       # the source's own times; otherwise no start is claimed (the duration stays unknown)
        ev.emit("status", status="running", message=f"{run.source} run (source times)", traceback=None, ts=started)
    for step, period, values in run.train:
        plain = {k: v for k, v in values.items() if not k.startswith("epoch/")}
        epoch_vals = {k[len("epoch/"):]: v for k, v in values.items() if k.startswith("epoch/")}
        if plain:
            ev.scalars(plain, epoch=period, step=step, split="train")
        if epoch_vals:
            ev.scalars(epoch_vals, epoch=period, step=step, split="train_epoch")
    for e in run.evals:
        classes = []
        excluded = []
        for c in e.get("classes") or []:
            cname = renames.get(c["name"], c["name"])
            if c.get("iou") is None:
                excluded.append(cname)
            classes.append({"id": (names.index(cname) if names and cname in names else c.get("id")),
                            "name": cname, "iou": c.get("iou"), "acc": c.get("acc"), "biou": c.get("biou"),
                            "f1": c.get("f1"), "precision": c.get("precision")})
        ev.emit("metrics", split=split, domain=e.get("domain") or "all", variant=e.get("variant") or "raw",
                epoch=e.get("period"),
                summary=e.get("summary") or {}, classes=classes, excluded_classes=excluded, confusion=None,
                n_images=None, boundary_px=None, iter=e.get("step"), source=run.source)
    for note in run.notes:
        ev.log(note, level="warning")
    ev.log(f"imported {len(run.train)} training records and {len(run.evals)} validations from {run.source} "
           f"{run.path}" + (f"; source files kept in source/: {', '.join(copied)}" if copied else "")
           + "; no per-tile areas in the source, so no paired bootstrap for this run")
    ev.emit("status", status="succeeded", message=f"imported ({last_step} steps, {len(run.evals)} validations)",
            traceback=None, **({"ts": ended} if known else {}))
    return rid, True
