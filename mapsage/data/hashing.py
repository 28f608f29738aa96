"""Image fingerprints for split hygiene: an exact content hash and two 64-bit perceptual hashes.

* ``content_hash``: SHA-1 of the decoded pixels (shape included), so the same picture stored twice — even
  re-saved with other file metadata or as PNG instead of PNG — is found, which a file-bytes hash would miss.
* ``dhash``: difference hash (Krawetz): the grey image shrunk to 9×8 with area averaging, one bit per horizontal
  neighbour comparison.
* ``phash``: DCT hash (as in the ``imagehash`` package): the grey image shrunk to 32×32, its 2-D DCT, the 8×8
  lowest frequencies compared with their median.

Both perceptual hashes survive re-encoding, resizing and small brightness/contrast changes. They are computed for
the 8 flips/rotations of an image too (``dihedral_hashes``), so a tile that was flipped or rotated by a multiple of
90° before it was copied into another split is found as well."""
from __future__ import annotations

import hashlib

import cv2
import numpy as np

_BITS = np.uint64(1) << np.arange(64, dtype=np.uint64)


def content_hash(image: np.ndarray) -> str:
    arr = np.ascontiguousarray(image)
    h = hashlib.sha1()
    h.update(str((arr.shape, arr.dtype.str)).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image.astype(np.float32)
    if image.shape[2] == 4:
        image = image[..., :3]
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)


def _pack(bits: np.ndarray) -> np.uint64:
    return np.uint64(np.bitwise_or.reduce(_BITS[bits.ravel().astype(bool)], initial=np.uint64(0)))


def dhash_gray(gray: np.ndarray) -> np.uint64:
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA)
    return _pack(small[:, 1:] > small[:, :-1])


def phash_gray(gray: np.ndarray) -> np.uint64:
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8]
    return _pack(low > np.median(low))


def dihedral(gray: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of an image (identity first)."""
    out = []
    for k in range(4):
        r = np.rot90(gray, k)
        out.append(r)
        out.append(r[:, ::-1])
    return out


def image_hashes(image: np.ndarray, small_side: int = 256) -> dict:
    """content hash + pHash and dHash of the 8 dihedral variants (index 0 is the image as stored)."""
    gray = to_gray(image)
    h, w = gray.shape
    scale = small_side / max(1, min(h, w))
    if scale < 1:   # hashes only need a small picture: shrink first (area averaging), 10x faster on big tiles
        gray = cv2.resize(gray, (max(9, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)
    variants = dihedral(gray)
    return {
        "sha1": content_hash(image),
        "phash": np.array([phash_gray(np.ascontiguousarray(v)) for v in variants], dtype=np.uint64),
        "dhash": np.array([dhash_gray(np.ascontiguousarray(v)) for v in variants], dtype=np.uint64),
    }


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distances between uint64 hashes (broadcasting)."""
    x = np.bitwise_xor(a, b)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int16)
    # numpy < 2: popcount by bytes
    as_bytes = x[..., None].view(np.uint8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1).astype(np.int16)


def near_pairs(query_p: np.ndarray, query_d: np.ndarray, ref_p: np.ndarray, ref_d: np.ndarray,
               max_distance: int, chunk: int = 512) -> list[tuple[int, int, int, int]]:
    """Pairs (i, j, pHash distance, dHash distance) where some dihedral variant of query image i is within
    ``max_distance`` bits of reference image j in *both* hashes. ``query_*``: [N, 8] uint64 (all variants);
    ``ref_*``: [M] uint64 (as stored)."""
    pairs = []
    if len(query_p) == 0 or len(ref_p) == 0:
        return pairs
    for start in range(0, len(query_p), chunk):
        qp = query_p[start:start + chunk, :, None]          # [n, 8, 1]
        qd = query_d[start:start + chunk, :, None]
        dp = hamming(qp, ref_p[None, None, :])              # [n, 8, M]
        dd = hamming(qd, ref_d[None, None, :])
        both = np.maximum(dp, dd)
        best_v = both.argmin(axis=1)                        # [n, M] best variant per pair
        best = np.take_along_axis(both, best_v[:, None, :], axis=1)[:, 0, :]
        ii, jj = np.nonzero(best <= max_distance)
        for i, j in zip(ii.tolist(), jj.tolist()):
            v = best_v[i, j]
            pairs.append((start + i, j, int(dp[i, v, j]), int(dd[i, v, j])))
    return pairs
