"""Check 1 — class and ignore ids.

Three things must hold before a number means anything:

1. **Settings agree.** The dataset's classes and ignore index, the loss's ignore index (``loss.ignore_index``, null
   meaning the dataset's), the loss's class weights, the metrics engine as validation builds it and the model's
   output channels all describe the same C classes and the same ignore value. The built loss and metric are
   *probed*, not only their settings read: the loss's gradient must be exactly zero on ignore pixels and non-zero
   on every class; the metric must drop ignore pixels and score C classes.
2. **Masks decode to classes or ignore only.** Every mask is read twice — by the library's ``load_mask`` and by an
   independent reference decoder written from the config's meaning (PIL, the colour/value tables) — and the two
   must agree pixel for pixel; values outside the classes and the ignore index are reported with their counts;
   explicitly ignored colours/values are counted so the report says how many pixels each rule removed.
3. **Colours are never read as ids.** The raw files are inspected: a three-channel colour mask, or palette-mode
   PNGs whose palette indices differ from file to file, or grey values that equal the grey level of palette
   colours, configured as an index dataset is a failure (the class ids would be colour codes or arbitrary
   palette slots)."""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError
from .context import HealthRun
from .result import CheckResult

_MAX_LISTED = 8


def _hex(rgb) -> str:
    r, g, b = (int(c) for c in rgb)
    return f"#{r:02X}{g:02X}{b:02X}"


def _parse_hex(text: str) -> tuple[int, int, int]:
    t = str(text).strip().lstrip("#")
    v = int(t, 16)
    return (v >> 16) & 255, (v >> 8) & 255, v & 255


def _luma(rgb) -> int:
    r, g, b = (int(c) for c in rgb)
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16   # PIL's "L" conversion (ITU-R 601-2, rounded)


# ------------------------------------------------------------------------------------------ raw inspection
class _RawInspector:
    """Reads each mask file with PIL, notes its storage, and decodes it independently of the library."""

    def __init__(self, h: HealthRun):
        d = h.cfg.dataset
        self.ds = d
        self.C = d.num_classes
        self.ign = int(d.ignore_index)
        self.colour = d.type == "color_mask"
        self.modes: Counter = Counter()
        self.palette_index_colours: dict[int, Counter] = defaultdict(Counter)   # palette index -> colours seen
        self.palette_files = 0
        self.colour_files_as_ids: list[str] = []       # index dataset, 3-channel colour file
        self.single_channel_as_colour: list[str] = []  # colour dataset, single-channel (non-palette) file
        self.raw_unknown: Counter = Counter()          # raw value / colour not named by the config -> pixels
        self.raw_unknown_files: dict[str, list[str]] = defaultdict(list)
        self.raw_ignored: Counter = Counter()           # explicit ignore rule -> pixels
        self.luma_like: Counter = Counter()             # raw grey values equal to a palette colour's grey level
        if self.colour:
            self.code = {}
            for text, name in d.color_map.items():
                rgb = _parse_hex(text)
                self.code[(rgb[0] << 16) | (rgb[1] << 8) | rgb[2]] = d.classes.index(name) if name in d.classes else -1
            for text in d.ignore_colors:
                rgb = _parse_hex(text)
                self.code[(rgb[0] << 16) | (rgb[1] << 8) | rgb[2]] = -2
        else:
            vm = {int(k): int(v) for k, v in d.value_map.items()} or {i: i for i in range(self.C)}
            if d.reduce_zero_label:          # mmseg-converted masks: stored v is class v - 1, 0 and 255 ignored
                vm = {i + 1: i for i in range(self.C)}
            self.code = dict(vm)
            ignore_values = [int(v) for v in d.ignore_values]
            if d.reduce_zero_label:
                ignore_values += [v for v in (0, 255) if v not in ignore_values and v not in vm]
            elif not d.value_map and self.ign not in ignore_values:
                ignore_values.append(self.ign)
            for v in ignore_values:
                self.code[v] = -2
        self.palette_lumas = {}
        for i, text in enumerate(d.palette):
            try:
                self.palette_lumas[_luma(_parse_hex(text))] = i
            except ValueError:
                pass
        for text in d.color_map:
            try:
                self.palette_lumas.setdefault(_luma(_parse_hex(text)), -1)
            except ValueError:
                pass

    def _decode_values(self, raw: np.ndarray, path: Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """raw values (packed colours or stored values) -> (class ids with ignore, pixels the config names).

        Sorted-table lookup (``np.searchsorted``): O(N log K) for K named values, no per-pixel Python."""
        keys = np.array(sorted(self.code), dtype=np.int64)
        vals = np.array([self.code[k] for k in keys.tolist()], dtype=np.int64)
        flat = raw.ravel().astype(np.int64)
        pos = np.clip(np.searchsorted(keys, flat), 0, len(keys) - 1)
        named = keys[pos] == flat
        cls = vals[pos]
        ids = np.where(named & (cls >= 0), cls, self.ign)
        for k, v in zip(keys.tolist(), vals.tolist()):
            if v == -2:
                n = int(np.count_nonzero(named & (flat == k)))
                if n:
                    self.raw_ignored[self._name(k, kind)] += n
        if not named.all():
            uv, uc = np.unique(flat[~named], return_counts=True)
            for v, n in zip(uv.tolist(), uc.tolist()):
                name = self._name(v, kind)
                self.raw_unknown[name] += n
                if len(self.raw_unknown_files[name]) < 3:
                    self.raw_unknown_files[name].append(str(path))
        return ids.reshape(raw.shape), named.reshape(raw.shape)

    @staticmethod
    def _name(v: int, kind: str) -> str:
        return _hex(((v >> 16) & 255, (v >> 8) & 255, v & 255)) if kind == "colour" else f"value {v}"

    def reference(self, path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(reference class-id mask, mask of pixels whose raw value the config names) or (None, None) when the
        file cannot be decoded under the config's meaning (a colour file read as ids)."""
        if self.ds.type == "part_mask":
            return self._reference_parts(path)
        img = Image.open(path)
        img.load()
        mode = img.mode
        self.modes[mode] += 1
        if mode == "P":
            self.palette_files += 1
            pal = np.asarray(img.getpalette() or [], dtype=np.int64).reshape(-1, 3)
            idx = np.asarray(img)
            used = np.nonzero(np.bincount(idx.ravel(), minlength=256))[0]
            for i in used.tolist():
                if i < len(pal):
                    self.palette_index_colours[i][_hex(pal[i])] += 1
        if self.colour:
            rgb = np.asarray(img.convert("RGB"))
            if mode in ("L", "I", "I;16", "1"):
                self.single_channel_as_colour.append(str(path))
            packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
            return self._decode_values(packed, path, "colour")
        # index masks: the stored values are the ids (a palette PNG's indices included)
        if mode in ("RGB", "RGBA"):
            arr = np.asarray(img)[..., :3]
            if not ((arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all()):
                self.colour_files_as_ids.append(str(path))
                return None, None
            raw = arr[..., 0]
        elif mode in ("LA",):
            raw = np.asarray(img.getchannel("L"))
        else:
            raw = np.asarray(img)
        raw = raw.astype(np.int64)
        if mode in ("L", "I", "I;16"):
            values, counts = np.unique(raw, return_counts=True) if raw.max() > 255 else \
                (np.arange(256), np.bincount(raw.ravel(), minlength=256))
            for v, n in zip(values.tolist(), counts.tolist()):
                if n and v not in self.code and v in self.palette_lumas:
                    self.luma_like[v] += n
        return self._decode_values(raw, path, "value")

    def _reference_parts(self, stem: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Part masks painted in config order, one PIL read per part file (``stem`` is ``<folder>/<key>``)."""
        pm = self.ds.part_masks
        bg = self.ds.classes.index(pm.background) if pm.background else 0
        out = None
        for part, name in pm.parts.items():
            f = stem.parent / f"{stem.name}_{part}.png"
            if not f.is_file():
                continue
            img = Image.open(f)
            self.modes[img.mode] += 1
            on = np.asarray(img.convert("L")) > 0
            if out is None:
                out = np.full(on.shape, bg, np.int64)
            out[on] = self.ds.classes.index(name)
        if out is None:
            return None, None
        return out, np.ones(out.shape, bool)

    def palette_inconsistency(self) -> dict[int, dict[str, int]]:
        """Palette indices that stand for different colours in different files."""
        return {i: dict(c) for i, c in self.palette_index_colours.items() if len(c) > 1}


# ----------------------------------------------------------------------------------------------- probes
def _probe_loss(h: HealthRun) -> tuple[list[str], dict]:
    """Gradient of the built training loss: zero on ignore pixels, non-zero on every class's pixels."""
    import torch

    cfg = h.cfg
    C = cfg.dataset.num_classes
    ign = cfg.ignore_index
    problems: list[str] = []
    info: dict[str, Any] = {}
    try:
        loss_fn = h.loss_factory(cfg)
    except Exception as exc:
        return [f"building the loss failed ({type(exc).__name__}: {exc})"], info
    info["loss"] = getattr(loss_fn, "__name__", type(loss_fn).__name__)
    gen = torch.Generator().manual_seed(0)
    H = W = 16
    target = torch.arange(H * W).reshape(1, H, W).remainder(C).repeat(2, 1, 1)   # every class present
    target[:, :4, :] = ign                                                       # a band of ignore pixels
    logits = torch.randn(2, C, H, W, generator=gen, requires_grad=True)
    try:
        out = loss_fn(logits, target)
        loss = out["loss"] if isinstance(out, dict) else (out[0] if isinstance(out, (tuple, list)) else out)
        loss.backward()
    except Exception as exc:
        problems.append(f"the loss fails on a target holding the dataset's ignore index {ign} "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
        return problems, info
    grad = logits.grad.abs().sum(1)            # [B,H,W]
    ign_grad = float(grad[target == ign].max())
    info["max_grad_on_ignore_pixels"] = ign_grad
    if ign_grad > 1e-9:
        problems.append(f"the loss back-propagates through pixels labelled {ign} (max |grad| {ign_grad:.2e}); it "
                        f"does not ignore the dataset's ignore index")
    dead = [cfg.dataset.classes[k] for k in range(C) if float(grad[target == k].max()) <= 1e-12]
    info["classes_without_gradient"] = dead
    if dead:
        problems.append(f"the loss gives no gradient on pixels of class(es) {dead}: it ignores a real class")
    return problems, info


def _probe_metric(h: HealthRun) -> tuple[list[str], dict]:
    """The metrics object validation builds: C classes, ignore pixels dropped whatever is predicted there."""
    cfg = h.cfg
    C = cfg.dataset.num_classes
    ign = cfg.ignore_index
    try:
        m = h.metric_factory(cfg)
    except Exception as exc:
        return [f"building the metrics engine failed ({type(exc).__name__}: {exc})"], {}
    label = (np.arange(64).reshape(8, 8) % C).astype(np.int64)
    label[:2] = ign
    pred = label.copy()
    pred[:2] = np.arange(16).reshape(2, 8) % C          # arbitrary predictions under ignore pixels
    problems = []
    try:
        m.update(pred, label)
        res = m.result()
    except Exception as exc:
        return [f"the metrics engine fails on a label holding ignore index {ign} ({type(exc).__name__}: {exc})"], {}
    conf = np.asarray(res.confusion)
    info = {"confusion_shape": list(conf.shape), "pixels_scored": int(conf.sum()), "valid_pixels": int((label != ign).sum()),
            "ignore_index": getattr(m, "ignore_index", None), "num_classes": getattr(m, "num_classes", None)}
    if conf.shape != (C, C):
        problems.append(f"the metrics engine scores {conf.shape[0]} classes, the dataset has {C}")
    elif int(conf.sum()) != int((label != ign).sum()) or abs(float(res.miou) - 1.0) > 1e-12:
        problems.append(f"the metrics engine does not drop label {ign}: it scored {int(conf.sum())} pixels of "
                        f"{int((label != ign).sum())} valid ones (mIoU {float(res.miou):.3f} on a perfect prediction)")
    return problems, info


def _probe_model(h: HealthRun) -> tuple[list[str], dict]:
    import torch

    cfg = h.cfg
    C = cfg.dataset.num_classes
    torch.manual_seed(int(cfg.train.seed))     # the same initial weights as the sanity fit builds (it reuses them)
    try:
        model = h.model_factory(cfg)
    except Exception as exc:
        return [f"building the model failed ({type(exc).__name__}: {exc})"], {}
    h.cache["fresh_model_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    h.cache["fresh_model"] = model
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 64))
    logits = out["seg"] if isinstance(out, dict) else out
    channels = int(logits.shape[1])
    if channels != C:
        return [f"the model outputs {channels} channels for {C} classes"], {"model_channels": channels}
    return [], {"model_channels": channels}


# ----------------------------------------------------------------------------------------------- check
def mask_samples(h: HealthRun) -> list:
    out = []
    for split in h.splits():
        try:
            ds = h.dataset(split, train=False)
        except DataError:
            if split == h.cfg.dataset.test_split:
                continue
            raise
        out.extend(s for s in ds.samples if s.mask_path is not None)
    seen = set()
    uniq = []
    for s in out:
        if str(s.mask_path) not in seen:
            seen.add(str(s.mask_path))
            uniq.append(s)
    cap = h.cfg.health.scan_max_masks
    if cap is not None and cap < len(uniq):
        idx = np.linspace(0, len(uniq) - 1, cap).round().astype(int)
        uniq = [uniq[i] for i in sorted(set(idx.tolist()))]
    return uniq


def check_ids(h: HealthRun) -> CheckResult:
    from ..data import load_mask

    cfg = h.cfg
    d = cfg.dataset
    C, ign = d.num_classes, int(d.ignore_index)
    problems: list[str] = []
    warnings: list[str] = []
    evidence: dict[str, Any] = {"num_classes": C, "classes": list(d.classes), "dataset_ignore_index": ign,
                                "loss_ignore_index": cfg.loss_ignore_index, "dataset_type": d.type}

    # 1. settings
    if cfg.loss_ignore_index != ign:
        clash = (f" - which is class {cfg.loss_ignore_index} ({d.classes[cfg.loss_ignore_index]})"
                 if 0 <= cfg.loss_ignore_index < C else "")
        problems.append(f"loss.ignore_index {cfg.loss_ignore_index}{clash} differs from dataset.ignore_index {ign}; "
                        f"set loss.ignore_index: null (the dataset's) or {ign}")
    if isinstance(cfg.loss.class_weights, list) and len(cfg.loss.class_weights) != C:
        problems.append(f"loss.class_weights has {len(cfg.loss.class_weights)} values for {C} classes")
    if 0 <= ign < C:
        problems.append(f"dataset.ignore_index {ign} is class {ign} ({d.classes[ign]})")
    for name, probe in (("loss", _probe_loss), ("metric", _probe_metric), ("model", _probe_model)):
        h.progress(f"ids: probing the {name}")
        p, info = probe(h)
        evidence[f"{name}_probe"] = info
        problems.extend(p)

    # 2 + 3. masks: raw storage, independent decode vs load_mask, value scan
    samples = mask_samples(h)
    insp = _RawInspector(h)
    decoded_counts = np.zeros(256, np.int64)
    disagreements: list[dict] = []
    load_errors: list[str] = []
    for i, s in enumerate(samples):
        if h.should_stop():
            break
        if i % 12 == 0:
            h.progress(f"ids: scanning mask {i + 1}/{len(samples)}")
        ref, named = insp.reference(Path(s.mask_path))
        try:
            lib = np.asarray(load_mask(s.mask_path, d))
        except DataError as exc:
            load_errors.append(str(exc))
            continue
        # load_mask returns uint8 by contract; anything wider is clipped into the last bin and reported
        decoded_counts += np.bincount(np.clip(lib.ravel(), 0, 255).astype(np.int64), minlength=256)[:256]
        if ref is not None:
            if ref.shape != lib.shape:
                disagreements.append({"mask": s.id, "pixels": int(lib.size), "why": f"shape {lib.shape} vs {ref.shape}"})
            else:
                bad = int(((ref != lib) & named).sum())
                if bad:
                    disagreements.append({"mask": s.id, "pixels": bad})
    evidence["masks_scanned"] = len(samples)
    evidence["mask_modes"] = dict(insp.modes)
    total = int(decoded_counts.sum())
    evidence["class_pixels"] = {d.classes[k]: int(decoded_counts[k]) for k in range(C)}
    evidence["ignored_pixels"] = int(decoded_counts[ign]) if ign < 256 else 0
    evidence["ignored_by_rule"] = dict(insp.raw_ignored)
    outside = {int(v): int(decoded_counts[v]) for v in np.nonzero(decoded_counts)[0] if v >= C and v != ign}
    evidence["decoded_values_outside_classes"] = outside
    evidence["raw_values_not_in_config"] = dict(insp.raw_unknown.most_common(20))
    if insp.raw_unknown:
        evidence["raw_values_not_in_config_files"] = {k: insp.raw_unknown_files[k] for k, _ in
                                                      insp.raw_unknown.most_common(_MAX_LISTED)}

    if insp.colour_files_as_ids:
        problems.append(f"{len(insp.colour_files_as_ids)} mask(s) are colour-coded (3 channels, e.g. "
                        f"{Path(insp.colour_files_as_ids[0]).name}) but dataset.type is {d.type}, which reads stored "
                        f"values as class ids; set dataset.type: color_mask with dataset.color_map")
    inconsistent = insp.palette_inconsistency()
    if inconsistent and not insp.colour:
        i0, cols = next(iter(inconsistent.items()))
        problems.append(f"{insp.palette_files} palette-mode mask(s) whose palette index {i0} means different colours "
                        f"in different files ({', '.join(cols)}): the indices are not class ids; set dataset.type: "
                        f"color_mask so masks are decoded through their palette")
        evidence["palette_index_conflicts"] = {str(k): v for k, v in list(inconsistent.items())[:_MAX_LISTED]}
    elif insp.palette_files:
        evidence["palette_files"] = insp.palette_files
    if insp.luma_like and not insp.colour:
        vals = ", ".join(f"{v} ({n} px)" for v, n in insp.luma_like.most_common(4))
        problems.append(f"grey mask values {vals} equal the grey level of palette colours: these masks look like "
                        f"colour masks converted to grey, not class ids")
    if insp.single_channel_as_colour:
        problems.append(f"{len(insp.single_channel_as_colour)} single-channel mask(s) (e.g. "
                        f"{Path(insp.single_channel_as_colour[0]).name}) in a color_mask dataset: they hold values, "
                        f"not colours; set dataset.type: index_mask with dataset.value_map")
    if insp.raw_unknown:
        listed = ", ".join(f"{k}: {v} px" for k, v in insp.raw_unknown.most_common(5))
        key = "dataset.color_map / dataset.ignore_colors" if insp.colour else "dataset.value_map / dataset.ignore_values"
        problems.append(f"{len(insp.raw_unknown)} raw mask value(s) not named by the config ({listed}); map them in "
                        f"{key}")
    if load_errors:
        evidence["load_errors"] = load_errors[:_MAX_LISTED]
        if not (insp.colour_files_as_ids or insp.raw_unknown):
            problems.append(f"load_mask failed on {len(load_errors)} mask(s): {load_errors[0]}")
    if outside:
        listed = ", ".join(f"{v}: {n} px" for v, n in list(outside.items())[:5])
        problems.append(f"decoded masks hold values outside classes 0..{C - 1} and ignore {ign} ({listed})")
    if disagreements:
        n = sum(x["pixels"] for x in disagreements)
        evidence["loader_disagreements"] = disagreements[:_MAX_LISTED]
        problems.append(f"load_mask disagrees with the reference decoding on {n} pixels of {len(disagreements)} "
                        f"mask(s) (e.g. {disagreements[0]['mask']})")
    absent = [d.classes[k] for k in range(C) if decoded_counts[k] == 0]
    if total and absent and not problems:
        warnings.append(f"class(es) {absent} never occur in the scanned masks")

    ignored_txt = ""
    if insp.raw_ignored:
        ignored_txt = "; ignored by rule: " + ", ".join(f"{k} {v} px" for k, v in insp.raw_ignored.most_common(4))
    if problems:
        return CheckResult("ids", "fail", "; ".join(problems), evidence)
    modes = ", ".join(f"{n} {m}" for m, n in insp.modes.most_common())
    verdict = (f"{C} classes + ignore {ign} agree in dataset, loss (zero gradient on ignore) and metric; "
               f"{len(samples)} masks ({modes}) decode to classes/ignore only, matching an independent "
               f"decoding{ignored_txt}")
    if warnings:
        return CheckResult("ids", "warn", verdict + "; " + "; ".join(warnings), evidence)
    return CheckResult("ids", "pass", verdict, evidence)
