"""The frozen teacher of knowledge distillation (``distill.teacher``).

Two kinds:

* ``timm`` -- a timm backbone (a ViT such as ``vit_small_patch14_dinov2`` or the plan's DINOv3-SAT,
  ``vit_large_patch16_dinov3.sat493m``; ``model_kwargs`` gives custom sizes such as a tiny ViT for tests) built
  with ``pretrained=False`` and filled from the local file ``distill.teacher.weights`` (timm, safetensors or the
  original DINOv2/DINOv3 layout, converted by the model's own timm ``checkpoint_filter_fn``). Nothing is ever
  downloaded: a missing file is a :class:`~mapsage.errors.CheckpointError` naming the key, and a file that leaves
  any teacher weight unfilled is refused. Its target is the (normed) patch-token map of block ``teacher.layer``
  as ``[B, D, H/p, W/p]``. It has no segmentation head, so only feature distillation applies.
* ``workbench`` -- a segmentation checkpoint this workbench trained (a ``.pth`` file, a run id or
  ``latest:<template>``), loaded with :func:`mapsage.models.checkpoint.load_for_inference`. Its target is encoder
  stage ``teacher.layer`` and, for logit distillation, its segmentation logits.

The teacher is frozen (``requires_grad`` off for every weight), pinned in eval mode (``train()`` cannot switch it
back), runs under ``torch.no_grad`` and, optionally, at lower precision (``teacher.precision``: bf16 anywhere,
fp16 on GPU only -- on CPU fp16 falls back to bf16). Its input is re-normalised from the student's normalisation to
its own (``teacher.mean/std``, default the timm pretrained config or the checkpoint's config), so a DINOv3-SAT
teacher sees the satellite statistics it was trained with while the student keeps its own.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError, resolve_path
from ..data import get_normalization
from ..errors import CheckpointError
from ..infer.checkpoints import resolve_checkpoint
from ..models.checkpoint import load_for_inference
from ..safeload import load_file

KEY = "distill.teacher.weights"


class FrozenTeacher(nn.Module):
    """Holds the teacher network: no gradients, always in eval mode."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        for p in self.net.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True):  # noqa: ARG002 - a teacher never trains
        return super().train(False)


def _resolve_dtype(precision: str, device: torch.device) -> tuple[torch.dtype, Optional[str]]:
    if precision == "fp32":
        return torch.float32, None
    if precision == "bf16":
        return torch.bfloat16, None
    if device.type == "cuda":
        return torch.float16, None
    return torch.bfloat16, ("distill.teacher.precision fp16 is GPU-only; the teacher runs in bf16 on this CPU "
                            "instead")


class Teacher:
    """A frozen teacher with the calls distillation needs (see the module doc).

    ``stride``: input pixels per target cell; ``dim``: target channels; ``has_logits``; ``dtype``; ``describe()``.
    """

    def __init__(self, kind: str, net: nn.Module, *, name: str, source: str, dim: int, stride: int, layer: int,
                 mean, std, student_mean, student_std, device: torch.device, dtype: torch.dtype,
                 window: Optional[int] = None, num_classes: Optional[int] = None,
                 class_names: Optional[list[str]] = None, notes: Optional[list[str]] = None):
        self.kind = kind
        self.name = name
        self.source = source
        self.module = FrozenTeacher(net).to(device=device, dtype=dtype)
        self.dim = int(dim)
        self.stride = int(stride)
        self.layer = int(layer)
        self.device = device
        self.dtype = dtype
        self.window = window
        self.num_classes = num_classes
        self.class_names = class_names
        self.notes = list(notes or [])
        self.has_logits = kind == "workbench"
        t = lambda v: torch.tensor([float(x) for x in v], dtype=torch.float32, device=device).view(1, 3, 1, 1)  # noqa: E731
        self.mean, self.std = t(mean), t(std)
        self.s_mean, self.s_std = t(student_mean), t(student_std)
        self.forward_s = 0.0             # seconds spent in teacher forward passes
        self.forward_images = 0
        self.params = sum(p.numel() for p in self.module.parameters())

    # -------------------------------------------------------------------------------------------- helpers
    @property
    def net(self) -> nn.Module:
        return self.module.net

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.name, "weights": self.source, "dim": self.dim,
                "stride": self.stride, "layer": self.layer, "dtype": str(self.dtype).replace("torch.", ""),
                "params": self.params, "has_logits": self.has_logits, "window": self.window,
                "mean": [round(float(v), 4) for v in self.mean.flatten()],
                "std": [round(float(v), 4) for v in self.std.flatten()]}

    def grid_for(self, h: int, w: int) -> tuple[int, int]:
        """The target grid of an ``h x w`` student input (cells of ``stride`` pixels)."""
        return max(1, int(round(h / self.stride))), max(1, int(round(w / self.stride)))

    def renormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Student-normalised images -> teacher-normalised, on the teacher's device and dtype."""
        x = images.to(self.device, torch.float32)
        x = (x * self.s_std + self.s_mean - self.mean) / self.std
        return x.to(self.dtype)

    def normalize_uint8(self, image: np.ndarray) -> torch.Tensor:
        """A uint8 ``[H, W, 3]`` tile -> teacher-normalised ``[1, 3, H, W]`` (teacher device and dtype)."""
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        return ((x - self.mean) / self.std).to(self.dtype)

    @contextlib.contextmanager
    def _timed(self, n: int):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.forward_s += time.perf_counter() - t0
        self.forward_images += n

    def _raw(self, x: torch.Tensor, want_logits: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Features ``[B, D, h, w]`` (and logits) of teacher-normalised input ``x``."""
        if self.kind == "timm":
            feats = self.net.forward_intermediates(x, indices=[self.layer], norm=True, stop_early=True,
                                                   output_fmt="NCHW", intermediates_only=True)
            return feats[-1], None
        out = self.net(x, return_features=True)
        feats = out["features"]
        return feats[self.layer], (out["seg"] if want_logits else None)

    # -------------------------------------------------------------------------------------------- calls
    @torch.no_grad()
    def targets(self, images: torch.Tensor, want_logits: bool = False
                ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """On-the-fly targets of a batch of student-normalised images ``[B, 3, H, W]``: features resized to
        :meth:`grid_for` ``(H, W)`` (float32) and, when asked and available, logits at ``H x W`` (float32)."""
        h, w = images.shape[-2:]
        gh, gw = self.grid_for(h, w)
        x = self.renormalize(images)
        if self.kind == "timm":       # the ViT sees the image resized to a whole number of patches
            size = (gh * self.stride, gw * self.stride)
            if (h, w) != size:
                x = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False).to(self.dtype)
        with self._timed(images.shape[0]):
            feat, logits = self._raw(x, want_logits and self.has_logits)
        feat = feat.float()
        if feat.shape[-2:] != (gh, gw):
            feat = F.interpolate(feat, size=(gh, gw), mode="bilinear", align_corners=False)
        if logits is not None:
            logits = logits.float()
            if logits.shape[-2:] != (h, w):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return feat, logits

    @torch.no_grad()
    def tile_features(self, image: np.ndarray, batch: int = 16) -> tuple[torch.Tensor, tuple[float, float]]:
        """Features of a whole, un-augmented tile (uint8 ``[H, W, 3]``) -> (``[D, Gh, Gw]`` float16 on the CPU,
        (stride_y, stride_x) in tile pixels per cell). A timm ViT runs over non-overlapping windows of
        ``teacher.img_size`` pixels (the tile zero-padded to whole windows) so its cost stays linear in the tile
        area; a workbench teacher runs on the whole tile."""
        x = self.normalize_uint8(image)
        if self.kind == "timm":
            h, w = x.shape[-2:]
            win = int(self.window)
            ph, pw = (-h) % win, (-w) % win
            xp = F.pad(x, (0, pw, 0, ph))
            ny, nx = xp.shape[-2] // win, xp.shape[-1] // win
            wins = xp.unfold(2, win, win).unfold(3, win, win)            # [1, 3, ny, nx, win, win]
            wins = wins.permute(0, 2, 3, 1, 4, 5).reshape(ny * nx, 3, win, win)
            outs = []
            with self._timed(1):
                for i in range(0, wins.shape[0], batch):
                    outs.append(self._raw(wins[i:i + batch], False)[0].float())
            f = torch.cat(outs)                                          # [ny*nx, D, g, g]
            g = f.shape[-1]
            f = f.view(ny, nx, self.dim, g, g).permute(2, 0, 3, 1, 4).reshape(self.dim, ny * g, nx * g)
            return f.to("cpu", torch.float16).contiguous(), (float(self.stride), float(self.stride))
        with self._timed(1):
            feat, _ = self._raw(x, False)
        # SegModel pads the tile to its output stride: cell (i, j) covers pixels from (i, j) * stride
        return feat[0].float().to("cpu", torch.float16).contiguous(), (float(self.stride), float(self.stride))

    def check_frozen(self) -> None:
        """Raise if anything made the teacher trainable or put it in training mode (a guard for the engine)."""
        if self.module.training or any(m.training for m in self.module.modules()):
            raise RuntimeError("the distillation teacher is in training mode")
        if any(p.requires_grad for p in self.module.parameters()):
            raise RuntimeError("a distillation teacher weight has requires_grad=True")


# ------------------------------------------------------------------------------------------------ building


def _timm_name(model: str) -> tuple[str, Optional[str]]:
    base, _, tag = model.partition(".")
    return base, (tag or None)


def _load_weights_file(path: Path) -> dict:
    """A timm / safetensors / original DINO weights file -> its state dict, loaded without unpickling code
    (:func:`mapsage.safeload.load_file`); unwraps ``state_dict`` / ``model`` and strips ``module.`` as timm's
    ``load_state_dict`` does."""
    obj = load_file(path, what="teacher weights", key=KEY)
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{KEY}: {path} holds a {type(obj).__name__}, not a state dict; give a "
                              f"timm/safetensors state dict or an original DINOv2/DINOv3 checkpoint file")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def build_timm_teacher(tcfg, device: torch.device, student_mean, student_std) -> Teacher:
    import timm

    if not tcfg.weights:
        raise CheckpointError(f"{KEY} is not set: a timm teacher needs a local weights file (e.g. the DINOv3-SAT "
                              f"ViT-L/16 weights for vit_large_patch16_dinov3.sat493m); set {KEY}=/path/to/file. "
                              f"Nothing is downloaded. For a quick test create a random-init tiny teacher with "
                              f"`python -m mapsage.distill make-teacher OUT.pth`")
    path = resolve_path(tcfg.weights)
    if not path.is_file():
        raise CheckpointError(f"{KEY}: teacher weights file {path} not found; set {KEY} to an existing local file "
                              f"(nothing is downloaded). A random-init demo teacher is made with `python -m "
                              f"mapsage.distill make-teacher {tcfg.weights}`")
    base, tag = _timm_name(tcfg.model)
    if not timm.list_models(base):
        near = timm.list_models(f"*{base.split('_')[0]}*")[:8]
        raise ConfigError(f"distill.teacher.model: timm has no model '{base}'"
                          + (f"; similar: {', '.join(near)}" if near else ""))
    kwargs = dict(tcfg.model_kwargs or {})
    kwargs.setdefault("dynamic_img_size", True)
    if tcfg.img_size:
        kwargs["img_size"] = int(tcfg.img_size)
    name = f"{base}.{tag}" if tag else base
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        net = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
        if "dynamic_img_size" in str(exc):
            net = None
        else:
            raise ConfigError(f"distill.teacher: cannot build timm model '{name}' with model_kwargs "
                              f"{tcfg.model_kwargs}: {exc}") from exc
    if net is None or not hasattr(net, "forward_intermediates") or not hasattr(net, "patch_embed"):
        raise ConfigError(f"distill.teacher.model: '{name}' is not a ViT-style timm model with patch tokens "
                          f"(forward_intermediates); use a ViT such as vit_small_patch14_dinov2 or "
                          f"vit_large_patch16_dinov3, or distill.teacher.kind: workbench")
    state = _load_weights_file(path)
    filt = getattr(sys.modules.get(type(net).__module__), "checkpoint_filter_fn", None)
    if filt is not None:
        try:
            state = filt(state, net)
        except Exception as exc:  # noqa: BLE001 - a foreign layout the filter cannot convert
            raise CheckpointError(f"{KEY}: {path} does not look like weights of {name} ({type(exc).__name__}: "
                                  f"{exc}); check distill.teacher.model / model_kwargs") from exc
    own = net.state_dict()
    mismatched = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if mismatched:
        raise CheckpointError(f"{KEY}: {path} has weights of other shapes than {name} with model_kwargs "
                              f"{tcfg.model_kwargs} (first: {mismatched[:5]}); the file belongs to another "
                              f"model size: fix distill.teacher.model / model_kwargs / img_size")
    result = net.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("head")]
    if missing:
        raise CheckpointError(f"{KEY}: {path} leaves {len(missing)} of the teacher's weights unfilled (first: "
                              f"{missing[:6]}); it is not a checkpoint of {name}: fix distill.teacher.model or "
                              f"the file")
    notes = []
    if result.unexpected_keys:
        notes.append(f"ignored {len(result.unexpected_keys)} unexpected key(s) in the weights file "
                     f"(first: {list(result.unexpected_keys)[:4]})")
    pcfg = getattr(net, "pretrained_cfg", {}) or {}
    mean = tcfg.mean or pcfg.get("mean") or (0.485, 0.456, 0.406)
    std = tcfg.std or pcfg.get("std") or (0.229, 0.224, 0.225)
    ps = net.patch_embed.patch_size
    patch = int(ps[0] if isinstance(ps, (tuple, list)) else ps)
    if isinstance(ps, (tuple, list)) and len(set(ps)) != 1:
        raise ConfigError(f"distill.teacher.model: non-square patches {ps} are not supported")
    window = int(tcfg.img_size or (pcfg.get("input_size") or (3, 224, 224))[-1])
    img = getattr(net.patch_embed, "img_size", None)
    if not tcfg.img_size and img:
        window = int(img[-1] if isinstance(img, (tuple, list)) else img)
    if window % patch:
        raise ConfigError(f"distill.teacher.img_size {window} is not a multiple of the patch size {patch}")
    depth = len(getattr(net, "blocks", []) or [])
    if depth and not -depth <= int(tcfg.layer) < depth:
        raise ConfigError(f"distill.teacher.layer {tcfg.layer} is outside the {depth} blocks of {name}")
    dtype, note = _resolve_dtype(tcfg.precision, device)
    if note:
        notes.append(note)
    dim = int(getattr(net, "embed_dim", None) or net.num_features)
    return Teacher("timm", net, name=name, source=str(path), dim=dim, stride=patch, layer=int(tcfg.layer),
                   mean=mean, std=std, student_mean=student_mean, student_std=student_std, device=device,
                   dtype=dtype, window=window, notes=notes)


def build_workbench_teacher(tcfg, device: torch.device, student_mean, student_std, classes: list[str]) -> Teacher:
    if not tcfg.weights:
        raise CheckpointError(f"{KEY} is not set: a workbench teacher is a checkpoint this workbench trained; give "
                              f"a .pth file, a run id or latest:<template> (e.g. latest:demo_segformer_mit-b0_dubai)")
    resolved = resolve_checkpoint(tcfg.weights, key=KEY)
    model, tcfg_model = load_for_inference(resolved.path, weights=resolved.weights)
    with torch.no_grad():
        feats_probe = model(torch.zeros(1, 3, 256, 256), return_features=True)["features"]
    n = len(feats_probe)
    if not -n <= int(tcfg.layer) < n:
        raise ConfigError(f"distill.teacher.layer {tcfg.layer} is outside the teacher's {n} encoder stages "
                          f"({model.arch}/{model.encoder_name})")
    fmap = feats_probe[int(tcfg.layer)]
    stride = int(round(256 / fmap.shape[-1]))
    mean, std = get_normalization(tcfg_model)
    if tcfg.mean:
        mean = tcfg.mean
    if tcfg.std:
        std = tcfg.std
    notes = [f"checkpoint {resolved.path} ({resolved.weights} weights"
             + (f", run {resolved.run_id}" if resolved.run_id else "") + ")"]
    teacher_classes = list(tcfg_model.dataset.classes)
    if teacher_classes != list(classes):
        notes.append(f"teacher classes {teacher_classes} differ from the student's {list(classes)}: logit "
                     f"distillation is unavailable")
    dtype, note = _resolve_dtype(tcfg.precision, device)
    if note:
        notes.append(note)
    t = Teacher("workbench", model, name=f"{model.arch}/{model.encoder_name}", source=str(resolved.path),
                dim=int(fmap.shape[1]), stride=stride, layer=int(tcfg.layer), mean=mean, std=std,
                student_mean=student_mean, student_std=student_std, device=device, dtype=dtype,
                num_classes=int(model.num_classes), class_names=teacher_classes, notes=notes)
    t.has_logits = teacher_classes == list(classes)
    t.run_id = resolved.run_id
    return t


def build_teacher(cfg, device: torch.device | str = "cpu") -> Teacher:
    """The frozen teacher of ``cfg.distill.teacher`` on ``device`` (see the module doc)."""
    device = torch.device(device)
    tcfg = cfg.distill.teacher
    s_mean, s_std = get_normalization(cfg)
    for key, v in (("mean", tcfg.mean), ("std", tcfg.std)):
        if v is not None and len(v) != 3:
            raise ConfigError(f"distill.teacher.{key} must list 3 values (0..1 scale), got {v}")
    if tcfg.kind == "timm":
        return build_timm_teacher(tcfg, device, s_mean, s_std)
    return build_workbench_teacher(tcfg, device, s_mean, s_std, list(cfg.dataset.classes))


def make_random_teacher(path: str | Path, model: str = "vit_small_patch14_dinov2",
                        model_kwargs: Optional[dict] = None, img_size: int = 224, seed: int = 0,
                        dtype: torch.dtype = torch.float16) -> dict[str, Any]:
    """Write the weights of a randomly initialised timm ViT to ``path`` (a plain state dict): a stand-in teacher for
    demos and tests. Random features teach nothing about the imagery; real use points ``distill.teacher.weights``
    at DINOv3(-SAT) / DINOv2 weights. Returns facts about the file."""
    import timm

    kwargs = dict(model_kwargs or {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = timm.create_model(_timm_name(model)[0], pretrained=False, num_classes=0, img_size=int(img_size),
                                **kwargs)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    n = sum(v.numel() for v in state.values())
    return {"path": str(path), "model": model, "model_kwargs": kwargs, "img_size": int(img_size), "seed": int(seed),
            "params": n, "bytes": path.stat().st_size, "dtype": str(dtype).replace("torch.", "")}


def teacher_speed_note(teacher: Teacher) -> str:
    if not teacher.forward_images:
        return "no teacher forward passes"
    return (f"{teacher.forward_images} teacher inputs in {teacher.forward_s:.1f} s "
            f"({teacher.forward_s / teacher.forward_images * 1000:.1f} ms each)")


__all__ = ["Teacher", "FrozenTeacher", "build_teacher", "build_timm_teacher", "build_workbench_teacher",
           "make_random_teacher", "teacher_speed_note", "KEY"]
