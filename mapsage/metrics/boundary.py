"""Boundary bands for Boundary IoU (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation
Evaluation", CVPR 2021), in the semantic-segmentation form used by this workbench.

Definition. For a class map ``M`` and a class ``k``, the boundary band ``B_k(M)`` is the set of pixels of class
``k`` that lie within ``d`` pixels (Chebyshev distance, i.e. a ``(2d+1)×(2d+1)`` square) of a pixel of another
class. This is exactly ``(M == k) - erode(M == k)`` with a ``(2d+1)`` square (equivalently a 3×3 square applied
``d`` times), the reference ``mask_to_boundary`` of the Boundary IoU API. Boundary IoU of class ``k`` is
``|B_k(P) ∩ B_k(L)| / |B_k(P) ∪ B_k(L)|`` with the areas summed over the whole dataset before the ratio.

* ``d`` is given in pixels, or as a ratio of the image diagonal: ``d = max(1, round(ratio * sqrt(H² + W²)))``
  (the reference uses 0.02).
* Image border: the reference pads the mask with one row/column of background, so a region cut by the image
  border gets a band along the border. Here that is ``border_is_edge=True``; the default is ``False``: the image
  border is not an edge (a tile cut from a larger scene has no class boundary there).
* Ignored label pixels are dropped from the band comparison: they belong to no band, in the prediction or in the
  label, and they do not create edges either (they are treated as unknown, not as another class). So the no-data
  rim of a LoveDA tile, or an "Unlabeled" patch, never counts as a class boundary of the label or of the
  prediction, and a prediction is never charged for what it draws inside ignored areas.

Labels with ignore strips (``boundary_strip_px > 0``). Some datasets mark every class border with a strip of
ignored pixels (ISPRS Potsdam/Vaihingen "eroded" labels: 3-7 px). Under the rule above such a label has no
boundary at all: its classes never touch, so a perfect prediction scores NaN and anything else 0. The strip rule
treats a strip as the border it stands for:

* A *strip pixel* is an ignored label pixel whose ``(2s+1)`` window (``s = boundary_strip_px``) holds valid label
  pixels of at least two different classes. Ignored areas that touch one class only (the no-data rim of a tile,
  an unlabelled patch inside a field) hold no strip pixel and stay neutral, as in the rule above.
* In the label, a strip pixel counts as "another class" for every valid pixel whose window reaches it: a border
  of two classes that runs through a strip is boundary on both sides.
* In the prediction, a strip pixel counts the same way where the prediction itself changes class within ``d`` px
  of it (its values everywhere, inside the strip too): a prediction whose border lies in the strip has the
  label's band there; one that moved its border away from the strip does not, and is charged for it. The
  prediction's own class changes on valid pixels count as before.
* Strip pixels themselves stay ignored: they are in no band and never scored.

So a prediction that equals the true (uneroded) label scores 1.0 when the strips are at most about ``2d`` px wide,
and a shifted one is charged for the band pixels it gets wrong next to the strips. With ``s = 0`` (the default) nothing changes: the rule is Cheng et al.'s
with ignored pixels as unknown. ``s`` must be at least the widest strip (a strip pixel next to class A has to see
class B on the far side).

The fast path does not erode one binary mask per class. One pass builds the class-change map of the whole label
map: a pixel is a band pixel of its own class iff the max and the min of the class ids over its ``(2d+1)`` window
differ (a dilation and an erosion of the id map, with ignored pixels replaced by values that cannot change the max
resp. the min). Band of class ``k`` = that map ∩ ``(M == k)``. The engine then sets bit 7 of each band pixel's id
(:func:`band_bits_np`), so one joint histogram of the flagged label and prediction ids yields the confusion matrix
and every class's band intersection and band areas at once. Tests check exact equality with the per-class
definition (scipy dilation per class, pixel loops) and with the Boundary IoU API's ``mask_to_boundary``.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

try:  # OpenCV is a hard dependency of mapsage; kept import-local for a clear message
    import cv2
except ImportError as exc:  # pragma: no cover
    raise ImportError("mapsage.metrics needs opencv-python-headless (pip install opencv-python-headless)") from exc

# codes used in the canonical uint8 maps of the metrics engine
NOT_IN_BAND = 254   # a valid pixel that is in no class's band
IGNORED = 255       # an ignored label pixel


def boundary_width(height: int, width: int, boundary_px: int | None, boundary_ratio: float | None) -> int:
    """The band half-width ``d`` in pixels for one image (at least 1)."""
    if boundary_ratio is not None:
        return max(1, int(round(boundary_ratio * math.sqrt(height ** 2 + width ** 2))))
    return max(1, int(boundary_px))


@lru_cache(maxsize=32)
def _kernel(d: int) -> np.ndarray:
    return np.ones((2 * d + 1, 2 * d + 1), np.uint8)


def edge_map_np(lo: np.ndarray, hi: np.ndarray, d: int, border_is_edge: bool, flat: bool = False,
                out: np.ndarray | None = None, tmp: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Bool map: True where the ``(2d+1)`` window around a pixel holds two different class ids (with
    ``flat=True`` the complement: True where the window is uniform).

    ``lo``/``hi`` are the uint8 id map with ignored pixels set to 0 resp. 255, so that they never raise the
    window max nor lower the window min (for a valid centre pixel). With ``border_is_edge`` the outside of the
    image counts as another class. ``out`` (bool) and ``tmp`` (two uint8) are optional preallocated buffers.
    (OpenCV does the morphology only: its element-wise functions read arrays of up to 4 pixels as scalars.)"""
    k = _kernel(d)
    mx, mn = tmp if tmp is not None else (None, None)
    if border_is_edge:
        mx = cv2.dilate(lo, k, dst=mx, borderType=cv2.BORDER_CONSTANT, borderValue=255)
    else:
        mx = cv2.dilate(lo, k, dst=mx)
    mn = cv2.erode(hi, k, dst=mn)
    return (np.equal if flat else np.not_equal)(mx, mn, out=out)


class BandWorkspace:
    """Preallocated buffers for :func:`band_codes_np` (fresh 1 MB allocations per call cost more than the
    morphology itself). Not thread-safe: one per accumulator."""

    u8 = ("mx", "mn", "ign", "keep", "lab_lo", "pred_lo", "pred_hi", "code_l", "code_p")
    b1 = ("ignb", "flat")

    def __init__(self, shape: tuple[int, int]):
        self.shape = tuple(shape)
        self.buf = {n: np.empty(self.shape, np.uint8) for n in self.u8}
        self.buf.update({n: np.empty(self.shape, bool) for n in self.b1})


def strip_map_np(label: np.ndarray, s: int) -> np.ndarray | None:
    """Bool ``[H,W]``: the ignored pixels of a canonical uint8 label map (ids and ``IGNORED``) whose ``(2s+1)``
    window holds valid pixels of two different classes (see the module docs). None when there are none."""
    if s <= 0:
        return None
    ignb = label == IGNORED
    if not ignb.any():
        return None
    k = _kernel(int(s))
    lo = np.where(ignb, 0, label).astype(np.uint8)          # ignored -> 0: cannot raise a max
    mx = cv2.dilate(lo, k)
    mn = cv2.erode(label, k)                                  # ignored pixels hold 255: cannot lower a min
    # a window with valid pixels has max >= min; one without any has max 0 < min 255: never a strip pixel
    strip = ignb & (mx > mn)
    return strip if strip.any() else None


def pred_strip_np(pred: np.ndarray, strip: np.ndarray, d: int) -> np.ndarray:
    """The strip pixels that are edges for the prediction: those within ``d`` px of a class change of the
    prediction (its values everywhere, inside the strip too)."""
    k = _kernel(int(d))
    return strip & (cv2.dilate(pred, k) != cv2.erode(pred, k))


def band_codes_np(label: np.ndarray, pred: np.ndarray, d: int, border_is_edge: bool,
                  has_ignore: bool, ws: BandWorkspace | None = None,
                  strip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Band codes of one image for the engine's joint histogram.

    ``label``: uint8 ``[H,W]`` with class ids ``0..C-1`` and ``IGNORED`` (255); ``pred``: uint8 ``[H,W]`` with ids
    ``0..C-1`` wherever the label is valid. Returns ``(code_l, code_p)``: the class id where the pixel is in its
    class's band, ``NOT_IN_BAND`` elsewhere, and ``IGNORED`` in ``code_l`` for ignored pixels. With ``ws`` the
    results live in the workspace's buffers (valid until its next use)."""
    if ws is None or ws.shape != label.shape:
        ws = BandWorkspace(label.shape)
    b = ws.buf
    tmp = (b["mx"], b["mn"])
    if has_ignore:
        ignb = np.equal(label, IGNORED, out=b["ignb"])
        ign = np.multiply(ignb.view(np.uint8), 255, out=b["ign"])      # 255 at ignored pixels, else 0
        keep = np.bitwise_not(ign, out=b["keep"])
        lab_lo = np.bitwise_and(label, keep, out=b["lab_lo"])          # ignored -> 0 (cannot raise a max)
        pred_lo = np.bitwise_and(pred, keep, out=b["pred_lo"])
        pred_hi = np.bitwise_or(pred, ign, out=b["pred_hi"])           # ignored -> 255 (cannot lower a min)
        lab_hi = label                                                 # ignored pixels already hold 255
        if strip is not None:                                          # strip pixels -> 255: an edge
            lab_lo[strip] = 255
            pred_lo[pred_strip_np(pred, strip, d)] = 255
    else:
        lab_lo = lab_hi = label
        pred_lo = pred_hi = pred
    codes = []
    for m, lo, hi, name in ((label, lab_lo, lab_hi, "code_l"), (pred, pred_lo, pred_hi, "code_p")):
        flat = edge_map_np(lo, hi, d, border_is_edge, flat=True, out=b["flat"], tmp=tmp)
        # band -> id; valid & not band -> 254; ignored -> 255 (the max keeps 255)
        code = np.multiply(flat.view(np.uint8), NOT_IN_BAND, out=b[name])
        codes.append(np.maximum(m, code, out=code))
    return codes[0], codes[1]


BAND_BIT = 128


def band_bits_np(label: np.ndarray, pred: np.ndarray, d: int, border_is_edge: bool,
                 has_ignore: bool, ws: BandWorkspace | None = None,
                 strip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The engine's single-histogram form (``C <= 127``): each map's ids with bit 7 (``BAND_BIT``) set on its
    band pixels. Ignored label pixels keep 255 (= 127 | 128, never a class). ``label``: uint8 ids ``0..C-1`` and
    255; ``pred``: uint8 ids ``0..C-1`` (anything at ignored pixels)."""
    if ws is None or ws.shape != label.shape:
        ws = BandWorkspace(label.shape)
    b = ws.buf
    tmp = (b["mx"], b["mn"])
    if has_ignore:
        ignb = np.equal(label, IGNORED, out=b["ignb"])
        ign = np.multiply(ignb.view(np.uint8), 255, out=b["ign"])
        keep = np.bitwise_not(ign, out=b["keep"])
        lab_lo = np.bitwise_and(label, keep, out=b["lab_lo"])
        pred_lo = np.bitwise_and(pred, keep, out=b["pred_lo"])
        pred_hi = np.bitwise_or(pred, ign, out=b["pred_hi"])
        lab_hi = label
        if strip is not None:
            lab_lo[strip] = 255
            pred_lo[pred_strip_np(pred, strip, d)] = 255
    else:
        lab_lo = lab_hi = label
        pred_lo = pred_hi = pred
    codes = []
    for m, lo, hi, name in ((label, lab_lo, lab_hi, "code_l"), (pred, pred_lo, pred_hi, "code_p")):
        edge = edge_map_np(lo, hi, d, border_is_edge, out=b["flat"], tmp=tmp)
        code = np.multiply(edge.view(np.uint8), BAND_BIT, out=b[name])
        codes.append(np.bitwise_or(m, code, out=code))
    return codes[0], codes[1]


def class_bands(class_map: np.ndarray, num_classes: int, d: int, border_is_edge: bool = False,
                valid: np.ndarray | None = None) -> np.ndarray:
    """Boolean ``[C,H,W]`` band masks of one class map (for pictures and inspection), by the fast method.

    ``valid`` (bool ``[H,W]``) marks the pixels that take part; others are in no band and create no edge."""
    m = np.ascontiguousarray(class_map)
    if m.ndim != 2:
        raise ValueError(f"class_bands needs a [H,W] map, got shape {m.shape}")
    if valid is not None:
        valid = np.asarray(valid, bool)
        if valid.shape != m.shape:
            raise ValueError(f"class_bands: valid mask shape {valid.shape} != map shape {m.shape}")
    values = m if valid is None else m[valid]
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(f"class_bands: class ids outside 0..{num_classes - 1}")
    if not 1 <= num_classes <= NOT_IN_BAND:
        raise ValueError(f"class_bands supports 1..{NOT_IN_BAND} classes, got {num_classes}")
    if valid is not None:
        m8 = np.where(valid, m, 0).astype(np.uint8)
        lo = m8
        hi = np.where(valid, m8, 255).astype(np.uint8)
    else:
        m8 = m.astype(np.uint8)
        lo = hi = m8
    edge = edge_map_np(lo, hi, d, border_is_edge)
    if valid is not None:
        edge &= valid
    return np.stack([edge & (m8 == k) for k in range(num_classes)])


# ---------------------------------------------------------------------------------------------------------------
# torch (GPU) path
# ---------------------------------------------------------------------------------------------------------------

def edge_map_torch(lo, hi, d: int, border_is_edge: bool):
    """Torch version of :func:`edge_map_np` on ``[N,H,W]`` float tensors (any device). Returns bool ``[N,H,W]``."""
    import torch.nn.functional as F

    k = 2 * d + 1
    x = lo.unsqueeze(1)
    if border_is_edge:
        mx = F.max_pool2d(F.pad(x, (d, d, d, d), value=255.0), k, stride=1)
    else:
        mx = F.max_pool2d(x, k, stride=1, padding=d)       # implicit -inf padding: the border is neutral
    mn = -F.max_pool2d(-hi.unsqueeze(1), k, stride=1, padding=d)
    return (mx != mn).squeeze(1)
