"""Where a prediction's model comes from: one loader, :func:`load_predictor`, turns a reference (a workbench
checkpoint file, a run id, ``<run id>/<file>``, ``latest:<template>``) into a :class:`Predictor`: a callable module
``images [B,3,H,W] (normalised) -> logits [B,C,H,W]`` plus everything a prediction must carry (the config, the
normalisation, the inference settings to use, the checkpoint's content hash and the evaluation identity).

The inference settings are the ones the run **adopted**: its own ``eval`` (whole/slide, tile, stride, TTA), then
what the A/B stages run on its checkpoint decided to keep (the ``ab`` rows with decision ``keep`` in the event
files of runs whose parent is this run): the TTA variant of a ``tta_ab`` run, the post-processing of an
``evaluate`` run with ``post.enabled``. A reference to an ``ensemble`` run whose ensemble was kept loads the
ensemble of its members.

Another model format (an exported ONNX or TorchScript file) is one more branch in :func:`load_predictor` that
wraps its runtime in :class:`CallableModel`."""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..config import config_from_dict, load_config, to_dict
from ..config.schema import TTACfg
from ..data import get_normalization
from ..errors import CheckpointError
from ..events import read_events
from ..export import load_exported
from ..infer.checkpoints import load_checkpoint_model, resolve_checkpoint
from ..infer.ensemble import Ensemble, default_weights
from ..infer.post import PostProcessor
from ..infer.stage import renormalized
from ..lineage import child_runs, stored_temperature
from ..models.checkpoint import load_for_inference
from ..workspace import run_dir


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


class CallableModel(nn.Module):
    """Wraps any callable ``images [B,3,H,W] -> logits [B,C,H,W]`` (an exported model's runtime) as a module the
    inference path can run: it has a device (a dummy buffer) and an ``output_stride``."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], output_stride: int = 32,
                 device: str | torch.device = "cpu"):
        super().__init__()
        self.fn = fn
        self.output_stride = int(output_stride)
        self.register_buffer("_device_marker", torch.zeros(1, device=device), persistent=False)

    def forward(self, x):
        return self.fn(x)


@dataclass
class Predictor:
    """A model ready for prediction and the facts a prediction's manifest records."""
    model: nn.Module
    cfg: Any                                   # the checkpoint's config (classes, palette, normalisation)
    eval_cfg: Any                              # the inference settings adopted (mode, tile, stride, TTA)
    post: Any = None                           # a PostProcessor when post-processing was adopted
    checkpoint: dict = field(default_factory=dict)   # path, sha256, weights, run_id, epoch, reference
    adopted: list[dict] = field(default_factory=list)   # what was adopted from which run
    variant: str = "raw"                       # the evaluation identity's variant (``ema+tta=ms+post``)

    @property
    def num_classes(self) -> int:
        return int(self.cfg.dataset.num_classes)

    @property
    def classes(self) -> list[str]:
        return list(self.cfg.dataset.classes)

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        mean, std = get_normalization(self.cfg)
        return tuple(mean), tuple(std)

    def identity(self) -> dict:
        """The evaluation identity of the predictions this predictor makes."""
        ev = to_dict(self.eval_cfg)
        return {"run": self.checkpoint.get("run_id"), "checkpoint": self.checkpoint.get("path"),
                "checkpoint_sha256": self.checkpoint.get("sha256"), "epoch": self.checkpoint.get("epoch"),
                "weights": self.checkpoint.get("weights"), "variant": self.variant,
                "dataset": self.cfg.dataset.name, "eval": {k: ev.get(k) for k in ("mode", "tile", "stride",
                                                                                  "window_batch", "tta")},
                "post": self.post.describe(self.classes) if self.post is not None else None,
                "adopted": self.adopted}

    def short(self) -> str:
        ep = self.checkpoint.get("epoch")
        ep_txt = f" · ep {int(ep) + 1}" if isinstance(ep, int) else ""
        run = self.checkpoint.get("run_id")
        return f"{run + ' · ' if run else ''}{self.variant}{ep_txt}"


# ----------------------------------------------------------------------------------------------------------------
# adoption: what the run's A/B stages kept


def _kept(records: list[dict], ab_kind: str) -> Optional[dict]:
    """The kept non-baseline ``ab`` row of a kind with the highest gain, or None."""
    rows = [r for r in records if r.get("type") == "ab" and r.get("ab_kind") == ab_kind
            and r.get("decision") == "keep" and r.get("variant") != r.get("baseline")]
    return max(rows, key=lambda r: float(r.get("gain") or 0.0)) if rows else None


def adopted_settings(run_id: Optional[str], cfg, weights: str) -> tuple[Any, Any, list[dict], str]:
    """``(eval_cfg, post_processor | None, adopted facts, variant)`` for predictions with ``run_id``'s model."""
    eval_cfg = copy.deepcopy(cfg.eval)
    post = None
    adopted: list[dict] = []
    parts = [weights]
    if run_id:
        import yaml

        for rid, folder, info in child_runs(run_id):
            records = info["records"]
            kind = info.get("kind") or info.get("stage_kind")
            row = _kept(records, "tta") if kind == "tta_ab" else None
            if row is not None:
                tta = ((row.get("details") or {}).get("tta")) or {}
                eval_cfg.tta = TTACfg(scales=list(tta.get("scales") or [1.0]), hflip=bool(tta.get("hflip")),
                                      vflip=bool(tta.get("vflip")))
                adopted.append({"what": "tta", "run": rid, "variant": row.get("variant"),
                                "gain_points": row.get("gain")})
            if kind == "reliability" and cfg.predict.calibrate and (folder / "calibration.json").is_file():
                import json
                t = json.loads((folder / "calibration.json").read_text()).get("temperature")
                if t:
                    eval_cfg.temperature = float(t)          # the newest card wins (children oldest first)
                    adopted.append({"what": "temperature", "run": rid, "variant": f"T={float(t):.3f}",
                                    "gain_points": None})
            row = _kept(records, "post") if kind == "evaluate" else None
            if row is not None:
                try:
                    child_cfg = config_from_dict(yaml.safe_load((folder / "config.yaml").read_text()) or {})
                except Exception as exc:  # noqa: BLE001 - a broken sibling config is reported, not fatal
                    raise CheckpointError(f"{folder / 'config.yaml'}: cannot read the post-processing settings "
                                          f"the run adopted ({exc}); set predict.adopt: false to ignore them") from exc
                post = PostProcessor.from_config(child_cfg.post, cfg.dataset.classes)
                adopted.append({"what": "post", "run": rid, "variant": row.get("variant"),
                                "gain_points": row.get("gain")})
    views = len(eval_cfg.tta.scales or [1.0]) * (1 + int(eval_cfg.tta.hflip) + int(eval_cfg.tta.vflip))
    if views > 1:
        tta_name = next((a["variant"] for a in adopted if a["what"] == "tta"), None)
        parts.append(tta_name or "tta=on")
    if post is not None:
        parts.append("post")
    return eval_cfg, post, adopted, "+".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# the one loader


def _ensemble_predictor(run_id: str, folder: Path, key: str, device) -> Optional[Predictor]:
    """The ensemble of an ``ensemble`` run whose ensemble was kept, or None for another kind of run."""
    import yaml

    cfg_file = folder / "config.yaml"
    if not cfg_file.exists():
        return None
    cfg = config_from_dict(yaml.safe_load(cfg_file.read_text(encoding="utf-8")) or {})
    if cfg.stage.kind != "ensemble":
        return None
    records, _ = read_events(folder / "events.jsonl")
    if _kept(records, "ensemble") is None:
        raise CheckpointError(f"{key}: ensemble run '{run_id}' did not keep its ensemble (its ab row is not "
                              "'keep'); predict with its best member's run instead")
    models, hashes = [], []
    for i, m in enumerate(cfg.ensemble.members):
        model, mcfg, resolved = load_checkpoint_model(m.checkpoint, key=f"ensemble.members[{i}].checkpoint")
        models.append(renormalized(model, mcfg, cfg))
        hashes.append({"path": str(resolved.path), "sha256": sha256_file(resolved.path), "weights": resolved.weights,
                       "run_id": resolved.run_id})
    weights = default_weights([m.weight for m in cfg.ensemble.members])
    temps = None
    if cfg.ensemble.calibrate:
        temps = [stored_temperature(h["run_id"]) if h["run_id"] else None for h in hashes]
    ens = Ensemble(models, weights, average=cfg.ensemble.average, num_classes=cfg.dataset.num_classes,
                   temperatures=temps)
    ens.to(device).eval()
    joint = hashlib.sha256("".join(h["sha256"] for h in hashes).encode()).hexdigest()
    return Predictor(model=ens, cfg=cfg, eval_cfg=copy.deepcopy(cfg.eval),
                     checkpoint={"path": str(folder), "sha256": joint, "weights": "ensemble", "run_id": run_id,
                                 "epoch": None, "reference": run_id, "members": hashes},
                     adopted=[{"what": "ensemble", "run": run_id, "members": len(models)}], variant="ensemble")


def _exported_predictor(path: Path, fallback_cfg, device) -> Predictor:
    """An exported ONNX / TorchScript file (``mapsage export``) run through the same inference code. Its config
    is the export run's (the ``config.yaml`` of the run folder the file sits in), else ``fallback_cfg`` (the
    predict job's own); the sidecar's class table must match it."""
    model = load_exported(path, device=device)
    cfg = None
    for folder in (path.parent, path.parent.parent):
        if (folder / "config.yaml").is_file():
            cfg = load_config(folder / "config.yaml")
            break
    cfg = cfg or fallback_cfg
    if cfg is None:
        raise CheckpointError(f"stage.checkpoint: {path}: no run config beside the exported model; predict with a "
                              "run's config (mapsage predict RUN --model FILE)")
    if list(model.classes) and list(model.classes) != list(cfg.dataset.classes):
        raise CheckpointError(f"stage.checkpoint: {path} was exported for classes {model.classes}, but the config "
                              f"has {list(cfg.dataset.classes)}; predict with the run it was exported from")
    side = model.sidecar
    return Predictor(model=model, cfg=cfg, eval_cfg=cfg.eval, post=None,
                     checkpoint={"path": str(path), "sha256": sha256_file(path), "weights": "export",
                                 "run_id": (side.get("source") or {}).get("run"),
                                 "epoch": (side.get("source") or {}).get("epoch"), "reference": str(path)},
                     adopted=[], variant=f"export={model.fmt}:{model.precision}")


def load_predictor(reference: str, weights: str = "auto", *, adopt: bool = True, key: str = "stage.checkpoint",
                   device: str | torch.device = "cpu", fallback_cfg=None) -> Predictor:
    """A :class:`Predictor` for a checkpoint reference (see the module doc). ``weights``: ``auto`` (what the
    reference names: a run's best checkpoint, ``*ema*`` files as EMA), ``raw`` or ``ema``. An exported ``.onnx``
    (or ``.pt`` with its sidecar) runs through onnxruntime / TorchScript; ``fallback_cfg`` is the config used
    when no run config sits beside it."""
    if weights not in ("auto", "raw", "ema"):
        raise CheckpointError(f"predict.weights must be auto, raw or ema, got {weights!r}")
    ref = str(reference or "").strip()
    if ref.endswith(".onnx") or (ref.endswith(".pt") and Path(ref + ".json").is_file()):
        return _exported_predictor(Path(ref), fallback_cfg, device)
    if ref and "/" not in ref and not ref.endswith((".pth", ".pt")) and run_dir(ref).is_dir():
        ens = _ensemble_predictor(ref, run_dir(ref), key, device)
        if ens is not None:
            return ens
    resolved = resolve_checkpoint(ref, key=key)
    path = resolved.path
    use = resolved.weights if weights == "auto" else weights
    if weights != "auto" and resolved.run_id and path.name.startswith("best"):
        # the run's best file of the asked-for weights, when both exist
        alt = path.with_name("best_ema.pth" if use == "ema" else "best.pth")
        if alt.exists():
            path = alt
    model, cfg = load_for_inference(path, weights=use)
    model.to(device).eval()
    eval_cfg, post, adopted, variant = adopted_settings(resolved.run_id if adopt else None, cfg,
                                                        getattr(model, "weights_variant", use))
    return Predictor(model=model, cfg=cfg, eval_cfg=eval_cfg, post=post,
                     checkpoint={"path": str(path), "sha256": sha256_file(path),
                                 "weights": getattr(model, "weights_variant", use), "run_id": resolved.run_id,
                                 "epoch": getattr(model, "checkpoint_epoch", None), "reference": ref},
                     adopted=adopted, variant=variant)
