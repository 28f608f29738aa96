"""``SegMetrics``: the one streaming accumulator behind every number the workbench shows.

Training-time validation, final evaluation, TTA / post-processing / refinement A/B, the ``mapsage score``
command and the reports all feed (prediction, label) id maps into this class and read a
:class:`~mapsage.metrics.result.MetricResult` back, so no two parts can disagree on a definition.

Inputs: numpy arrays or torch tensors, ``[H,W]`` or ``[B,H,W]``, any integer dtype.

* Host arrays and CPU tensors go through numpy/OpenCV: one joint 256×256 histogram per image
  (``cv2.calcHist`` on the uint8 maps, exact, no int64 temporaries). With Boundary IoU on (and C < 128) the
  histogram is taken over ids with a band bit set, so the confusion matrix and the band areas come from that one
  pass; anything unusual (out-of-range values, C >= 128) takes an exact two-histogram path that also names the
  offending values.
* Tensors on an accelerator stay there: the per-image joint histograms are one ``torch.bincount`` on the device,
  the boundary bands are max-pool dilations/erosions on the device, and the accumulators are device tensors. No
  full mask is copied to the host; only the final C×C-sized arrays are, when a result is asked for. Out-of-range
  values found on the device are counted there and reported (as ``DataError``) when the result is read.

Accumulated per group (the whole set, and every tag value such as ``domain=Urban``) as int64 areas: the C×C
confusion matrix (rows = label, columns = prediction, valid pixels only), the boundary-band areas (intersection,
label band, prediction band per class), image counts, ignored pixels, and the sum of per-image mIoU (float64).

Distributed evaluation: every rank accumulates its shard, then ``all_reduce()`` sums the int64 arrays across
ranks (``torch.distributed``; tag keys and kept tile rows are gathered as objects). ``state_tensors()`` /
``load_state()`` expose the raw arrays for other reduction schemes, ``merge()`` adds another accumulator.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import cv2
import numpy as np

from ..errors import DataError
from .boundary import (
    BAND_BIT,
    IGNORED,
    NOT_IN_BAND,
    BandWorkspace,
    band_bits_np,
    band_codes_np,
    boundary_width,
    edge_map_torch,
    strip_map_np,
)
from .result import MetricResult

GroupKey = Optional[tuple[str, str]]     # None: everything; ("domain", "Urban"): one tag value
MAX_CLASSES = NOT_IN_BAND                # 254: ids 254/255 are the engine's internal codes
_HIST_MAX_PIXELS = 1 << 24               # float32 histogram bins are exact below 2**24 counts
_WS_MAX_PIXELS = 1 << 24                 # reuse buffers for images up to this size (bounded memory)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "device")


def hist2d_u8(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray] = None,
              tmp: Optional[np.ndarray] = None) -> np.ndarray:
    """Exact joint histogram ``H[a, b]`` (int64 [256,256]) of two uint8 ``[H,W]`` maps.

    ``cv2.calcHist`` counts in float32, which is exact below 2**24 per bin; larger images are counted in row
    chunks below that size. ``out`` (int64) and ``tmp`` (float32) are optional [256,256] buffers."""
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    h, w = a.shape
    rows = max(1, _HIST_MAX_PIXELS // max(w, 1))
    if out is None:
        out = np.zeros((256, 256), np.int64)
    else:
        out[...] = 0
    for r0 in range(0, h, rows):
        ca, cb = a[r0:r0 + rows], b[r0:r0 + rows]
        hf = cv2.calcHist([ca, cb], [0, 1], None, [256, 256], [0, 256, 0, 256], hist=tmp, accumulate=False)
        np.add(out, hf, out=out, casting="unsafe")
    return out


class _Workspace:
    """Per-accumulator reusable buffers for one image shape (allocation costs more than the counting)."""

    def __init__(self, shape: tuple[int, int]):
        self.shape = tuple(shape)
        self.band = BandWorkspace(self.shape)
        self.l8 = np.empty(self.shape, np.uint8)
        self.p8 = np.empty(self.shape, np.uint8)
        self.histf = np.empty((256, 256), np.float32)
        self.h1 = np.empty((256, 256), np.int64)
        self.h2 = np.empty((256, 256), np.int64)


class SegMetrics:
    """Streaming segmentation metrics with mmsegmentation semantics and Boundary IoU.

    Args:
        num_classes: C, class ids ``0..C-1`` (at most 254).
        ignore_index: label value that is dropped (with the prediction at those pixels); must not be a class id.
        class_names: C names (default ``class_0`` ...).
        boundary_px: Boundary IoU band half-width ``d`` in pixels (default 3).
        boundary_ratio: ``d`` as a ratio of each image's diagonal instead (the reference's 0.02); wins over
            ``boundary_px`` when set.
        border_is_edge: count the image border as a class edge (the reference implementation does; off by
            default, stated in the result).
        compute_boundary: off to skip Boundary IoU (``biou``/``mbiou`` are then NaN).
        boundary_strip_px: labels that mark class borders with an ignore strip (ISPRS "eroded" labels): strips up
            to this width count as the border on both sides (see :mod:`mapsage.metrics.boundary`); 0 = off.
        background_classes: names of the classes left out of the foreground mean F-score (``mfscore_fg``, the
            face-parsing figure); default: classes named "background" (any case).
        keep_tiles: keep per-image areas for :meth:`tile_rows` (paired bootstrap, per-tile views).
        backend: ``"auto"`` (numpy/OpenCV for host data, torch on the tensor's device for accelerator tensors)
            or ``"torch"`` (torch everywhere, also for CPU tensors and numpy arrays).

    Ignored label pixels are dropped from the confusion matrix and from the boundary-band comparison: they are in
    no band, and they create no edge in the label or the prediction (see :mod:`mapsage.metrics.boundary`).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: Optional[Sequence[str]] = None,
                 boundary_px: int = 3, boundary_ratio: Optional[float] = None, border_is_edge: bool = False,
                 compute_boundary: bool = True, keep_tiles: bool = False, backend: str = "auto",
                 boundary_strip_px: int = 0, background_classes: Optional[Sequence[str]] = None):
        num_classes = int(num_classes)
        if not 1 <= num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be 1..{MAX_CLASSES}, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is also a class id (0..{num_classes - 1}); "
                             "use a value outside the class range, such as 255")
        if class_names is None:
            class_names = [f"class_{k}" for k in range(num_classes)]
        class_names = [str(n) for n in class_names]
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for num_classes={num_classes}")
        if boundary_ratio is not None and not 0 < boundary_ratio < 1:
            raise ValueError(f"boundary_ratio must be in (0, 1), got {boundary_ratio}")
        if boundary_ratio is None and int(boundary_px) < 1:
            raise ValueError(f"boundary_px must be >= 1, got {boundary_px}")
        if int(boundary_strip_px) < 0:
            raise ValueError(f"boundary_strip_px must be >= 0 (0: off), got {boundary_strip_px}")
        if background_classes is None:
            background_classes = [n for n in class_names if n.strip().lower() == "background"]
        unknown_bg = [n for n in background_classes if n not in class_names]
        if unknown_bg:
            raise ValueError(f"background_classes {unknown_bg} are not class names ({class_names})")
        if backend not in ("auto", "torch"):
            raise ValueError(f"backend must be 'auto' or 'torch', got {backend!r}")
        self.num_classes = num_classes
        self.ignore_index = int(ignore_index)
        self.class_names = class_names
        self.boundary_px = None if boundary_ratio is not None else int(boundary_px)
        self.boundary_ratio = None if boundary_ratio is None else float(boundary_ratio)
        self.border_is_edge = bool(border_is_edge)
        self.compute_boundary = bool(compute_boundary)
        self.keep_tiles = bool(keep_tiles)
        self.boundary_strip_px = int(boundary_strip_px)
        self.background_classes = [str(n) for n in background_classes]
        self.backend = backend
        C = num_classes
        # layout of one stats row (int64)
        self._o_conf = 0
        self._o_bi = C * C
        self._o_bl = self._o_bi + C
        self._o_bp = self._o_bl + C
        self._o_img = self._o_bp + C      # images seen
        self._o_vimg = self._o_img + 1    # images with at least one valid pixel
        self._o_ign = self._o_img + 2     # ignored label pixels
        self._o_badl = self._o_img + 3    # label pixels with values that are neither a class nor ignore
        self._o_badp = self._o_img + 4    # prediction pixels outside 0..C-1 where the label is valid
        self._len = self._o_img + 5
        self._lut = self._label_lut()
        self.reset()

    # -------------------------------------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget everything accumulated."""
        self._counts: dict[GroupKey, Any] = {}
        self._iou_sum: dict[GroupKey, Any] = {}
        self._device = None                 # None: numpy accumulators; else the torch device
        self._tiles: list[tuple[list[str], list[Optional[str]], Any]] = []
        self._n_seen = 0
        self._workspace: Optional[_Workspace] = None

    @property
    def n_images(self) -> int:
        return self._n_seen

    def _zeros(self):
        if self._device is None:
            return np.zeros(self._len, np.int64), np.zeros((), np.float64)
        import torch
        return (torch.zeros(self._len, dtype=torch.int64, device=self._device),
                torch.zeros((), dtype=torch.float64, device=self._device))

    def _move_to(self, device) -> None:
        """Move the accumulators to a torch device (numpy -> torch) once the first accelerator batch arrives."""
        import torch
        self._device = torch.device(device)
        for key in list(self._counts):
            self._counts[key] = torch.as_tensor(np.asarray(self._counts[key]), device=self._device)
            self._iou_sum[key] = torch.as_tensor(np.asarray(self._iou_sum[key]), device=self._device)

    def _add(self, key: GroupKey, counts, iou_sum) -> None:
        if key not in self._counts:
            self._counts[key], self._iou_sum[key] = self._zeros()
        self._counts[key] += counts
        self._iou_sum[key] += iou_sum

    # ------------------------------------------------------------------------------------------- update
    def update(self, pred, label, tags: Union[None, str, Mapping, Sequence] = None,
               tile: Union[None, str, Sequence] = None) -> None:
        """Add one image ``[H,W]`` or a batch ``[B,H,W]`` of predicted and label class ids.

        ``tags``: a domain name (``"Urban"``, stored as ``domain=Urban``), a mapping such as
        ``{"domain": "Urban", "city": "Nanjing"}``, or a list with one of those per batch item.
        ``tile``: an id (or one per batch item) for :meth:`tile_rows`; default: a running number.
        Raises ``DataError`` for values that are neither a class id nor the ignore index (label) or not a class
        id where the label is valid (prediction); on accelerator tensors this is raised by :meth:`result`."""
        pred_t, label_t = _is_torch(pred), _is_torch(label)
        accel = next((x.device for x in (pred, label) if _is_torch(x) and x.device.type != "cpu"), None)
        use_torch = self.backend == "torch" or accel is not None
        if use_torch:
            import torch
            dev = accel or self._device or torch.device("cpu")
            pred = torch.as_tensor(pred).to(dev)
            label = torch.as_tensor(label).to(dev)
            if pred.is_floating_point() or pred.is_complex():
                raise TypeError(f"pred must hold class ids (an integer tensor), got {pred.dtype}; "
                                "pass logits.argmax(1)")
            if label.is_floating_point() or label.is_complex():
                raise TypeError(f"label must hold class ids (an integer tensor), got {label.dtype}")
        else:
            pred = pred.detach().cpu().numpy() if pred_t else np.asarray(pred)
            label = label.detach().cpu().numpy() if label_t else np.asarray(label)
            for name, x in (("pred", pred), ("label", label)):
                if x.dtype.kind not in "uib":
                    raise TypeError(f"{name} must hold integer class ids, got dtype {x.dtype}"
                                    + ("; pass logits.argmax(1)" if name == "pred" else ""))
        if tuple(pred.shape) != tuple(label.shape):
            raise ValueError(f"pred shape {tuple(pred.shape)} != label shape {tuple(label.shape)}"
                             + (f" (tile {tile})" if tile is not None else ""))
        if pred.ndim == 2:
            pred, label = pred[None], label[None]
        elif pred.ndim != 3:
            raise ValueError(f"expected [H,W] or [B,H,W] id maps, got shape {tuple(pred.shape)}")
        B = int(pred.shape[0])
        if B == 0:
            return
        tiles = self._tile_ids(tile, B)
        tag_list = _normalise_tags(tags, B)
        if use_torch:
            stats, iou = self._stats_torch(pred, label)
            if self._device is None or self._device != stats.device:
                if self._device is not None and self._counts:
                    stats, iou = stats.to(self._device), iou.to(self._device)
                else:
                    self._move_to(stats.device)
        else:
            stats, iou = self._stats_np(pred, label, tiles)
            if self._device is not None:
                import torch
                stats = torch.as_tensor(stats, device=self._device)
                iou = torch.as_tensor(iou, device=self._device)
        self._accumulate(stats, iou, tag_list, tiles)
        self._n_seen += B

    def _tile_ids(self, tile, B: int) -> list[str]:
        if tile is None:
            return [str(self._n_seen + i) for i in range(B)]
        if isinstance(tile, (str, int, np.integer)):
            if B != 1:
                raise ValueError(f"one tile id {tile!r} given for a batch of {B}; pass a list")
            return [str(tile)]
        tiles = [str(t) for t in tile]
        if len(tiles) != B:
            raise ValueError(f"{len(tiles)} tile ids for a batch of {B}")
        return tiles

    def _accumulate(self, stats, iou, tag_list: list[dict[str, str]], tiles: list[str]) -> None:
        is_np = isinstance(stats, np.ndarray)
        valid = ~np.isnan(iou) if is_np else ~iou.isnan()
        iou0 = np.where(valid, iou, 0.0) if is_np else iou.nan_to_num(0.0)
        self._add(None, stats.sum(0), iou0.sum())
        groups: dict[tuple[str, str], list[int]] = {}
        for i, tags in enumerate(tag_list):
            for k, v in tags.items():
                groups.setdefault((k, v), []).append(i)
        for key, idx in groups.items():
            if len(idx) == len(tag_list):
                self._add(key, stats.sum(0), iou0.sum())
            elif is_np:
                self._add(key, stats[idx].sum(0), iou0[idx].sum())
            else:
                import torch
                ii = torch.as_tensor(idx, device=stats.device)
                self._add(key, stats.index_select(0, ii).sum(0), iou0.index_select(0, ii).sum())
        if self.keep_tiles:
            domains = [t.get("domain") for t in tag_list]
            self._tiles.append((tiles, domains, stats if not is_np else stats.copy()))

    # ------------------------------------------------------------------------------------- numpy path
    def _label_lut(self) -> np.ndarray:
        """uint8 -> canonical uint8 (ignore -> 255; a literal 255 that is not the ignore index -> an invalid id)."""
        lut = np.arange(256, dtype=np.uint8)
        ign = self.ignore_index
        if ign != IGNORED:
            if 0 <= ign <= 255:
                lut[ign], lut[IGNORED] = IGNORED, ign      # ign >= C, so the swapped 255 lands on an invalid row
            else:
                lut[IGNORED] = NOT_IN_BAND                 # 254 >= C: an invalid row
        return lut

    def _ws(self, shape) -> _Workspace:
        shape = tuple(shape)
        if self._workspace is not None and self._workspace.shape == shape:
            return self._workspace
        ws = _Workspace(shape)
        if shape[0] * shape[1] <= _WS_MAX_PIXELS:
            self._workspace = ws
        return ws

    def _canon_label(self, lab: np.ndarray, out: np.ndarray) -> Optional[np.ndarray]:
        """One ``[H,W]`` label map -> canonical uint8 (ids, 255 = ignored, other values: invalid ids >= C).
        None when it holds values that cannot be represented (reported by the caller)."""
        if lab.dtype == np.bool_:
            lab = lab.view(np.uint8)
        if lab.dtype != np.uint8:
            if _in_u8_range(lab):
                np.copyto(out, lab, casting="unsafe")
                lab = out
            else:
                ign = lab == self.ignore_index
                bad = ~ign & ((lab < 0) | (lab >= self.num_classes))
                if bad.any():
                    return None
                np.copyto(out, np.where(ign, IGNORED, lab), casting="unsafe")
                return out
        if self.ignore_index != IGNORED:
            lab = cv2.LUT(np.ascontiguousarray(lab), self._lut, dst=out)
        return np.ascontiguousarray(lab)

    @staticmethod
    def _canon_pred(pred: np.ndarray, out: np.ndarray) -> np.ndarray:
        if pred.dtype == np.bool_:
            pred = pred.view(np.uint8)
        if pred.dtype == np.uint8:
            return np.ascontiguousarray(pred)
        if _in_u8_range(pred):
            np.copyto(out, pred, casting="unsafe")
        else:
            # out-of-range values are allowed only where the label is ignored: 255 is never a class id
            np.copyto(out, np.where((pred < 0) | (pred > 255), 255, pred), casting="unsafe")
        return out

    def _width(self, h: int, w: int) -> int:
        return boundary_width(h, w, self.boundary_px, self.boundary_ratio)

    def _stats_np(self, pred: np.ndarray, label: np.ndarray, tiles: list[str]) -> tuple[np.ndarray, np.ndarray]:
        C = self.num_classes
        B, h, w = label.shape
        ws = self._ws((h, w))
        d = self._width(h, w)
        stats = np.zeros((B, self._len), np.int64)
        iou = np.full(B, np.nan)
        for i in range(B):
            l8 = self._canon_label(label[i], ws.l8)
            if l8 is None:
                self._raise_bad_values(pred[i:i + 1], label[i:i + 1], tiles[i:i + 1])
            p8 = self._canon_pred(pred[i], ws.p8)
            if self.compute_boundary and C < BAND_BIT:
                # one joint histogram of band-flagged ids gives the confusion matrix and the band areas
                ok, has_ign = _valid_u8(l8, p8, C)
                if ok:
                    strip = strip_map_np(l8, self.boundary_strip_px) if has_ign else None
                    code_l, code_p = band_bits_np(l8, p8, d, self.border_is_edge, has_ign, ws.band, strip)
                    H = hist2d_u8(code_l, code_p, out=ws.h1, tmp=ws.histf).reshape(2, BAND_BIT, 2, BAND_BIT)
                    conf = H[:, :C, :, :C].sum((0, 2))
                    self._fill_row(stats[i], conf, int(H[1, IGNORED - BAND_BIT].sum()), iou, i)
                    band = H[1, :C, 1, :C]
                    stats[i, self._o_bi:self._o_bl] = np.diag(band)
                    stats[i, self._o_bl:self._o_bp] = H[1, :C].sum((1, 2))
                    stats[i, self._o_bp:self._o_img] = H[:, :C, 1, :C].sum((0, 1))
                    continue
            H = hist2d_u8(l8, p8, out=ws.h1, tmp=ws.histf)
            bad_l = int(H[C:IGNORED].sum())
            bad_p = int(H[:C, C:].sum())
            if bad_l or bad_p:
                self._raise_bad_values(pred[i:i + 1], label[i:i + 1], tiles[i:i + 1])
            conf = H[:C, :C]
            row = stats[i]
            n_ign = int(H[IGNORED].sum())
            if self._fill_row(row, conf, n_ign, iou, i):
                if self.compute_boundary:
                    strip = strip_map_np(l8, self.boundary_strip_px) if n_ign > 0 else None
                    code_l, code_p = band_codes_np(l8, p8, d, self.border_is_edge, n_ign > 0, ws.band, strip)
                    H2 = hist2d_u8(code_l, code_p, out=ws.h2, tmp=ws.histf)
                    row[self._o_bi:self._o_bl] = np.diag(H2)[:C]
                    row[self._o_bl:self._o_bp] = H2[:C].sum(1)
                    row[self._o_bp:self._o_img] = H2[:IGNORED, :C].sum(0)
        return stats, iou

    def _fill_row(self, row: np.ndarray, conf: np.ndarray, n_ign: int, iou: np.ndarray, i: int) -> bool:
        """Confusion, counts and the image's own mIoU into one stats row; True when it has valid pixels."""
        row[self._o_conf:self._o_bi] = conf.ravel()
        row[self._o_img] = 1
        row[self._o_ign] = n_ign
        inter = np.diag(conf)
        union = conf.sum(0) + conf.sum(1) - inter
        if not union.any():
            return False
        row[self._o_vimg] = 1
        present = union > 0
        iou[i] = float(np.mean(inter[present] / union[present]))
        return True

    def _raise_bad_values(self, pred, label, tiles) -> None:
        """Name the tile and the offending values (slow path, only on error)."""
        C, ign = self.num_classes, self.ignore_index
        label = np.asarray(label)
        pred = np.asarray(pred)
        bad_l = (label != ign) & ((label < 0) | (label >= C))
        where = f"tile {tiles[0]}" if len(tiles) == 1 else f"tiles {', '.join(tiles[:5])}"
        if bad_l.any():
            vals = np.unique(label[bad_l])
            raise DataError(
                f"{where}: label values {_fmt_values(vals)} are neither class ids 0..{C - 1} nor the ignore index "
                f"{ign} ({int(bad_l.sum())} pixels). Map raw mask values to class ids (palette colours or raw "
                f"dataset ids are not class ids), or set the ignore index (dataset.ignore_index / --ignore-index).")
        valid = label != ign
        bad_p = valid & ((pred < 0) | (pred >= C))
        vals = np.unique(pred[bad_p])
        raise DataError(
            f"{where}: prediction values {_fmt_values(vals)} are not class ids 0..{C - 1} "
            f"({int(bad_p.sum())} pixels where the label is valid). Predictions must hold class ids, not colours; "
            f"check num_classes (--num-classes / dataset.classes).")

    # ------------------------------------------------------------------------------------- torch path
    def _stats_torch(self, pred, label):
        """Per-image stats on the tensors' device; no host synchronisation.

        Values are clamped to ``-1..C`` (one pass per map), so a joint histogram with rows/columns
        ``0`` (negative), ``1..C`` (the classes) and ``C+1`` (``>= C``) is collision-free: invalid values land in
        the outer rows/columns and are counted there (the ignore index lands in row 0 or ``C+1`` and is counted
        apart with one comparison)."""
        import torch

        C = self.num_classes
        B, h, w = label.shape
        dev = label.device
        K = C + 2
        lab = label if label.dtype == torch.int64 else label.long()
        prd = pred if pred.dtype == torch.int64 else pred.long()
        lc = lab.clamp(-1, C)
        pc = prd.clamp(-1, C)
        offset = (torch.arange(B, device=dev, dtype=torch.int64) * (K * K) + (K + 1)).view(B, 1, 1)
        idx = torch.add(pc, lc, alpha=K)
        idx += offset
        H = torch.bincount(idx.reshape(-1), minlength=B * K * K).view(B, K, K)
        del idx
        n_ign = (lab == self.ignore_index).sum((1, 2))
        conf = H[:, 1:C + 1, 1:C + 1]
        bad_l = H[:, 0].sum(1) + H[:, C + 1].sum(1) - n_ign
        bad_p = H[:, 1:C + 1, 0].sum(1) + H[:, 1:C + 1, C + 1].sum(1)
        inter = conf.diagonal(dim1=1, dim2=2)
        lab_area, pred_area = conf.sum(2), conf.sum(1)
        union = lab_area + pred_area - inter
        zeros = torch.zeros((B, C), dtype=torch.int64, device=dev)
        bi = bl = bp = zeros
        if self.compute_boundary:
            d = self._width(h, w)
            ft = torch.float16 if dev.type == "cuda" else torch.float32
            valid = (lc >= 0) & (lc < C)
            inv = ~valid
            lf, pf = lc.to(ft), pc.to(ft)
            # invalid/ignored pixels: -1 cannot raise a window max, C cannot lower a window min
            lo_l, lo_p = lf.masked_fill(inv, -1), pf.masked_fill(inv, -1)
            if self.boundary_strip_px > 0:
                # strip pixels (ignored, with two valid classes within s px) raise the max above every class
                s_px = self.boundary_strip_px
                mx = torch.nn.functional.max_pool2d(lo_l.unsqueeze(1), 2 * s_px + 1, stride=1, padding=s_px)
                mn = -torch.nn.functional.max_pool2d(-lf.masked_fill(inv, C).unsqueeze(1), 2 * s_px + 1, stride=1,
                                                     padding=s_px)
                strip = (lab == self.ignore_index) & (mx > mn).squeeze(1)
                lo_l = lo_l.masked_fill(strip, C + 1)
                # the prediction's strip edges: where it changes class within d px (its values everywhere)
                pcf = pc.to(ft).unsqueeze(1)
                k_d = 2 * d + 1
                pmx = torch.nn.functional.max_pool2d(pcf, k_d, stride=1, padding=d)
                pmn = -torch.nn.functional.max_pool2d(-pcf, k_d, stride=1, padding=d)
                lo_p = lo_p.masked_fill(strip & (pmx != pmn).squeeze(1), C + 1)
                del mx, mn, strip, pcf, pmx, pmn
            el = edge_map_torch(lo_l, lf.masked_fill(inv, C), d, self.border_is_edge)
            ep = edge_map_torch(lo_p, pf.masked_fill(inv, C), d, self.border_is_edge)
            del lo_l, lo_p
            del lf, pf
            K2 = C + 1
            bl_code = lc.masked_fill(~(el & valid), C)                      # C: in no band (or not valid)
            bp_code = pc.clamp(min=0).masked_fill(~(ep & valid), C)
            off2 = (torch.arange(B, device=dev, dtype=torch.int64) * (K2 * K2)).view(B, 1, 1)
            bl_code *= K2
            bl_code += bp_code
            bl_code += off2
            H2 = torch.bincount(bl_code.reshape(-1), minlength=B * K2 * K2).view(B, K2, K2)
            bi = H2[:, :C, :C].diagonal(dim1=1, dim2=2)
            bl = H2[:, :C].sum(2)
            bp = H2[:, :, :C].sum(1)
        ones = torch.ones((B, 1), dtype=torch.int64, device=dev)
        vimg = (union.sum(1, keepdim=True) > 0).long()
        stats = torch.cat([conf.reshape(B, C * C), bi, bl, bp, ones, vimg, n_ign.view(B, 1), bad_l.view(B, 1),
                           bad_p.view(B, 1)], dim=1)
        present = union > 0
        ratio = inter.double() / union.clamp(min=1).double()
        n_present = present.sum(1)
        iou = torch.where(n_present > 0, (ratio * present).sum(1) / n_present.clamp(min=1).double(),
                          torch.full((B,), float("nan"), dtype=torch.float64, device=dev))
        return stats, iou

    # ------------------------------------------------------------------------------------------- results
    def _host_counts(self, key: GroupKey) -> tuple[np.ndarray, float]:
        if key not in self._counts:
            return np.zeros(self._len, np.int64), 0.0
        c, s = self._counts[key], self._iou_sum[key]
        if self._device is not None:
            c, s = c.cpu().numpy(), s.cpu().item()
        return np.asarray(c, np.int64), float(s)

    def _check(self, counts: np.ndarray) -> None:
        bad_l, bad_p = int(counts[self._o_badl]), int(counts[self._o_badp])
        if bad_l:
            raise DataError(f"{bad_l} label pixels held values that are neither class ids 0..{self.num_classes - 1}"
                            f" nor the ignore index {self.ignore_index}; map raw mask values to class ids "
                            "(dataset.value_map / color_map) or fix dataset.ignore_index")
        if bad_p:
            raise DataError(f"{bad_p} prediction pixels (where the label is valid) held values outside class ids "
                            f"0..{self.num_classes - 1}; predictions must be class ids (argmax), check num_classes")

    def _make_result(self, counts: np.ndarray, iou_sum: float) -> MetricResult:
        C = self.num_classes
        self._check(counts)
        n_valid_img = int(counts[self._o_vimg])
        return MetricResult(
            num_classes=C, class_names=list(self.class_names), ignore_index=self.ignore_index,
            confusion=counts[:C * C].reshape(C, C),
            b_intersect=counts[self._o_bi:self._o_bl],
            b_union=counts[self._o_bl:self._o_bp] + counts[self._o_bp:self._o_img] - counts[self._o_bi:self._o_bl],
            b_label=counts[self._o_bl:self._o_bp], boundary_strip_px=self.boundary_strip_px,
            background_classes=list(self.background_classes),
            per_image_miou=iou_sum / n_valid_img if n_valid_img else float("nan"),
            n_images=int(counts[self._o_img]), n_ignored=int(counts[self._o_ign]),
            boundary_px=self.boundary_px if self.compute_boundary else None,
            boundary_ratio=self.boundary_ratio if self.compute_boundary else None,
            border_is_edge=self.border_is_edge, compute_boundary=self.compute_boundary)

    def result(self) -> MetricResult:
        """The metrics over everything accumulated so far."""
        return self._make_result(*self._host_counts(None))

    def tag_keys(self) -> list[str]:
        return sorted({k[0] for k in self._counts if k is not None})

    def by_tag(self, tag: str = "domain") -> dict[str, MetricResult]:
        """``{value: MetricResult}`` for every value of one tag key (e.g. ``{"Rural": ..., "Urban": ...}``),
        from the same accumulation as :meth:`result`."""
        return {key[1]: self._make_result(*self._host_counts(key))
                for key in sorted((k for k in self._counts if k is not None and k[0] == tag), key=lambda k: k[1])}

    def to_event(self, split: str, domain: str = "all", variant: str = "raw",
                 epoch: Optional[int] = None) -> dict[str, Any]:
        """``metrics`` event payload: for everything (``domain="all"``) or for one ``domain`` tag value."""
        if domain == "all":
            res = self.result()
        else:
            per_domain = self.by_tag("domain")
            if domain not in per_domain:
                raise KeyError(f"no images were tagged domain={domain!r} (domains seen: {sorted(per_domain)})")
            res = per_domain[domain]
        return res.to_event(split=split, domain=domain, variant=variant, epoch=epoch)

    def to_json(self, indent: int | None = 2) -> str:
        return self.result().to_json(indent=indent)

    def write_events(self, events, split: str, variant: str = "raw", epoch: Optional[int] = None) -> None:
        """Emit one ``metrics`` record for all images and one per domain, and a ``tiles`` record when tiles are
        kept (``events`` is a :class:`mapsage.events.EventWriter`)."""
        events.emit("metrics", **self.to_event(split, "all", variant, epoch))
        for dom in self.by_tag("domain"):
            events.emit("metrics", **self.to_event(split, dom, variant, epoch))
        if self.keep_tiles:
            events.emit("tiles", **self.tiles_event(split, variant))

    # --------------------------------------------------------------------------------------------- tiles
    def tile_rows(self) -> list[dict[str, Any]]:
        """Per-image areas (the ``tiles`` event rows): ``{tile, domain, intersect, union, label_area, pred_area,
        b_intersect, b_union}`` with one int per class, and ``confusion``: the tile's off-diagonal confusion cells
        ``[[label id, predicted id, pixels], ...]`` (:func:`confusion_cells`). Needs ``keep_tiles=True``."""
        if not self.keep_tiles:
            raise RuntimeError("SegMetrics(keep_tiles=True) is needed for tile_rows()")
        self._check(self._host_counts(None)[0])
        C = self.num_classes
        rows = []
        for tiles, domains, stats in self._tiles:
            s = stats if isinstance(stats, np.ndarray) else stats.cpu().numpy()
            conf = s[:, :C * C].reshape(-1, C, C)
            inter = conf.diagonal(axis1=1, axis2=2)
            la, pa = conf.sum(2), conf.sum(1)
            bi, bl, bp = s[:, self._o_bi:self._o_bl], s[:, self._o_bl:self._o_bp], s[:, self._o_bp:self._o_img]
            for j, t in enumerate(tiles):
                rows.append({"tile": t, "domain": domains[j], "intersect": inter[j].tolist(),
                             "union": (la[j] + pa[j] - inter[j]).tolist(), "label_area": la[j].tolist(),
                             "pred_area": pa[j].tolist(), "b_intersect": bi[j].tolist(),
                             "b_union": (bl[j] + bp[j] - bi[j]).tolist(), "b_label": bl[j].tolist(),
                             "confusion": confusion_cells(conf[j])})
        return rows

    def tiles_event(self, split: str, variant: str = "raw") -> dict[str, Any]:
        """``tiles`` event payload."""
        return {"split": split, "variant": variant, "rows": self.tile_rows()}

    # --------------------------------------------------------------------------------- merge / reduce
    def _settings(self) -> tuple:
        return (self.num_classes, self.ignore_index, self.boundary_px, self.boundary_ratio, self.border_is_edge,
                self.compute_boundary, self.boundary_strip_px)

    def merge(self, other: "SegMetrics") -> "SegMetrics":
        """Add another accumulator's areas (same settings) into this one; returns self."""
        if other._settings() != self._settings():
            raise ValueError(f"cannot merge metrics with different settings: {other._settings()} vs "
                             f"{self._settings()} (num_classes, ignore_index, boundary_px, boundary_ratio, "
                             "border_is_edge, compute_boundary, boundary_strip_px)")
        for key in other._counts:
            c, s = other._host_counts(key)
            if self._device is not None:
                import torch
                self._add(key, torch.as_tensor(c, device=self._device), torch.as_tensor(s, device=self._device))
            else:
                self._add(key, c, np.float64(s))
        if self.keep_tiles:
            for tiles, domains, stats in other._tiles:
                s = stats if isinstance(stats, np.ndarray) else stats.cpu().numpy()
                self._tiles.append((list(tiles), list(domains), s))
        self._n_seen += other._n_seen
        return self

    def state_tensors(self) -> dict[str, Any]:
        """The raw accumulators: ``keys`` (group keys: None, then ``(tag, value)`` pairs, sorted), ``counts``
        (int64 tensor ``[G, L]``) and ``iou_sum`` (float64 tensor ``[G]``), on the accumulation device. Sum them
        element-wise across ranks (after aligning ``keys``) and :meth:`load_state` the result."""
        import torch

        keys = [None] + sorted(k for k in self._counts if k is not None)
        dev = self._device or torch.device("cpu")
        counts = torch.zeros((len(keys), self._len), dtype=torch.int64, device=dev)
        sums = torch.zeros(len(keys), dtype=torch.float64, device=dev)
        for i, key in enumerate(keys):
            if key in self._counts:
                counts[i] = torch.as_tensor(self._counts[key], device=dev)
                sums[i] = torch.as_tensor(self._iou_sum[key], device=dev)
        return {"keys": keys, "counts": counts, "iou_sum": sums}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Replace the accumulators with ``state`` (as returned by :meth:`state_tensors`, possibly reduced)."""
        keys, counts, sums = state["keys"], state["counts"], state["iou_sum"]
        if tuple(counts.shape) != (len(keys), self._len):
            raise ValueError(f"state counts shape {tuple(counts.shape)} does not fit {len(keys)} keys × "
                             f"{self._len} (num_classes={self.num_classes})")
        self._counts, self._iou_sum = {}, {}
        for i, key in enumerate(keys):
            key = None if key is None else tuple(key)
            if self._device is not None:
                self._counts[key] = counts[i].to(self._device).clone()
                self._iou_sum[key] = sums[i].to(self._device).clone()
            else:
                self._counts[key] = np.asarray(_to_numpy(counts[i]), np.int64).copy()
                self._iou_sum[key] = np.asarray(_to_numpy(sums[i]), np.float64).copy()
        self._n_seen = int(_to_numpy(counts[0])[self._o_img]) if len(keys) else 0

    def all_reduce(self, group=None) -> None:
        """Sum the accumulators across the ranks of ``torch.distributed`` (no-op when it is not initialised).
        Every rank ends with the totals; kept tile rows are gathered on every rank too."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
            return
        world = dist.get_world_size(group)
        local_keys = sorted(k for k in self._counts if k is not None)
        gathered: list = [None] * world
        dist.all_gather_object(gathered, local_keys, group=group)
        all_keys = [None] + sorted({tuple(k) for ks in gathered for k in ks})
        for key in all_keys:
            if key not in self._counts:
                self._counts[key], self._iou_sum[key] = self._zeros()
        state = self.state_tensors()
        assert state["keys"] == all_keys
        comm_dev = (torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl"
                    else torch.device("cpu"))
        counts = state["counts"].to(comm_dev)
        sums = state["iou_sum"].to(comm_dev)
        dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
        if self.keep_tiles:
            mine = [(t, d, s if isinstance(s, np.ndarray) else s.cpu().numpy()) for t, d, s in self._tiles]
            all_tiles: list = [None] * world
            dist.all_gather_object(all_tiles, mine, group=group)
            self._tiles = [entry for rank_tiles in all_tiles for entry in rank_tiles]
        self.load_state({"keys": all_keys, "counts": counts, "iou_sum": sums})


def confusion_cells(conf: np.ndarray) -> list[list[int]]:
    """The off-diagonal, non-zero cells of one tile's confusion matrix as ``[label id, predicted id, pixels]``
    (the diagonal is the tile's ``intersect``): what the error drill-down ranks tiles by."""
    conf = np.asarray(conf)
    t, p = np.nonzero(conf)
    return [[int(a), int(b), int(conf[a, b])] for a, b in zip(t, p) if a != b]


def _valid_u8(l8: np.ndarray, p8: np.ndarray, C: int) -> tuple[bool, bool]:
    """Cheap check for the single-histogram path: labels are ids < C or 255, predictions ids < C everywhere.
    Returns ``(ok, has_ignore)``; when not ok the exact path sorts out (and reports) what is wrong."""
    if l8.size == 0:
        return True, False
    if int(p8.max()) >= C:
        return False, False
    top = int(l8.max())
    if top < C:
        return True, False
    if top != IGNORED:
        return False, False
    # ids + 1 wrap 255 to 0: the max is below C + 1 iff every label is an id or 255
    return int(np.add(l8, 1, dtype=np.uint8).max()) <= C, True


def _in_u8_range(x: np.ndarray) -> bool:
    """All values in 0..255, in one pass: seen as unsigned, negative values are huge."""
    if x.size == 0:
        return True
    if x.dtype.kind == "i":
        x = x.view(np.dtype(f"u{x.dtype.itemsize}"))
    return int(x.max()) <= 255


def _to_numpy(x):
    return x.detach().cpu().numpy() if _is_torch(x) else np.asarray(x)


def _fmt_values(vals: np.ndarray, limit: int = 10) -> str:
    vals = [int(v) for v in np.asarray(vals).ravel()]
    shown = ", ".join(str(v) for v in vals[:limit])
    return f"[{shown}{', ...' if len(vals) > limit else ''}]"


def _normalise_tags(tags, B: int) -> list[dict[str, str]]:
    def one(t) -> dict[str, str]:
        if t is None:
            return {}
        if isinstance(t, str):
            return {"domain": t}
        if isinstance(t, Mapping):
            return {str(k): str(v) for k, v in t.items() if v is not None}
        raise TypeError(f"a tag must be a string (the domain) or a mapping, got {type(t).__name__}")

    if tags is None or isinstance(tags, (str, Mapping)):
        return [one(tags)] * B
    tags = list(tags)
    if len(tags) != B:
        raise ValueError(f"{len(tags)} tags for a batch of {B}")
    return [one(t) for t in tags]


def boundary_iou_per_image(pred, label, num_classes: int, ignore_index: int = 255, boundary_px: int = 3,
                           border_is_edge: bool = False, boundary_strip_px: int = 0) -> float:
    """Convenience: mean Boundary IoU of one image pair (same definition as :class:`SegMetrics`)."""
    m = SegMetrics(num_classes, ignore_index=ignore_index, boundary_px=boundary_px, border_is_edge=border_is_edge,
                   boundary_strip_px=boundary_strip_px)
    m.update(pred, label)
    return m.result().mbiou


__all__ = ["SegMetrics", "hist2d_u8", "boundary_iou_per_image", "confusion_cells", "MAX_CLASSES"]
