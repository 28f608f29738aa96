"""Benchmark of the metrics engine on real LoveDA masks (1024×1024, 7 classes).

    .venv/bin/python bench/metrics.py [--repeat 25] [--threads 1] [--torch-cpu]

Prints, in one run and on the same data:

1. confusion-matrix throughput (Mpixel/s) of ``SegMetrics.update`` (boundary off) beside a bare
   ``np.bincount(label * C + pred)``, for uint8 masks (as read from PNG) and int64 masks (as a DataLoader
   gives them); the engine must stay within 1.25× of the bare count;
2. Boundary IoU time per tile: what Boundary IoU adds to ``SegMetrics.update`` (full update minus the
   boundary-off update: one class-change map per image and band-flagged ids in the same joint histogram) beside
   a straightforward per-class implementation (binary erosion per class, per map), after checking that both
   give the same band areas; the engine must not be slower;
3. the same on CUDA when a GPU is present (``torch.bincount`` bare count; a per-class max-pool Boundary IoU),
   or with ``--torch-cpu`` on CPU tensors (to exercise the torch path).

Predictions are made from the real labels (shift, grey erosion, relabelled patch, 5 % noise). Times are the best
and the median of ``--repeat`` interleaved rounds (the machine may be shared: the best is the most stable).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mapsage.metrics import SegMetrics  # noqa: E402

C = 7
IGN = 255
D = 3


def load_pairs(with_nodata: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """The three real LoveDA masks (raw 1..7 -> 0..6, raw 0 -> 255), two derived predictions each."""
    pairs = []
    paths = sorted((ROOT / "tests" / "data" / "loveda").glob("*/*/masks_png/*.png"))
    if not paths:
        raise SystemExit("tests/data/loveda masks not found")
    for i, path in enumerate(paths):
        raw = np.array(Image.open(path)).astype(np.int16)
        lab = (raw - 1).astype(np.int16)
        lab[raw == 0] = IGN
        lab = lab.astype(np.uint8)
        if with_nodata:                       # a no-data rim as in many real LoveDA tiles
            lab[:96] = IGN
            lab[:, :64] = IGN
        rng = np.random.default_rng(i)
        base = np.where(lab == IGN, 0, lab).astype(np.uint8)
        shifted = np.roll(base, (6, -3), axis=(0, 1))
        noisy = shifted.copy()
        flip = rng.random(base.shape) < 0.05
        noisy[flip] = rng.integers(0, C, int(flip.sum()))
        eroded = ndimage.grey_erosion(base, size=(5, 5)).astype(np.uint8)
        eroded[256:512, 300:700] = (eroded[256:512, 300:700] + 1) % C     # a relabelled patch
        pairs += [(noisy, lab), (eroded, lab)]
    return pairs


# ------------------------------------------------------------------------------------------ reference code
def bare_bincount(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    return np.bincount((label * C + pred).ravel(), minlength=C * C)


def straightforward_biou_areas(pred: np.ndarray, label: np.ndarray, d: int = D) -> tuple[np.ndarray, np.ndarray]:
    """Per class and per map: binary mask, erosion by a (2d+1) square, band = mask - eroded (ignored pixels
    neutral: they count as the class for the erosion and are dropped from the band)."""
    kernel = np.ones((2 * d + 1, 2 * d + 1), np.uint8)
    valid = label != IGN
    ign = ~valid
    bi = np.zeros(C, np.int64)
    bu = np.zeros(C, np.int64)
    for k in range(C):
        bands = []
        for m in (label, pred):
            mk = (m == k) & valid
            eroded = cv2.erode((mk | ign).view(np.uint8), kernel).view(bool)
            bands.append(mk & ~eroded)
        bi[k] = np.count_nonzero(bands[0] & bands[1])
        bu[k] = np.count_nonzero(bands[0] | bands[1])
    return bi, bu


# ---------------------------------------------------------------------------------------------- timing
def timed_rounds(funcs: dict, repeat: int) -> dict[str, tuple[float, float]]:
    """Interleaved rounds; returns {name: (best, median)} seconds per round."""
    times: dict[str, list[float]] = {k: [] for k in funcs}
    for f in funcs.values():
        f()                                            # warm-up (buffers, caches)
    for _ in range(repeat):
        for name, f in funcs.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return {k: (float(np.min(v)), float(np.median(v))) for k, v in times.items()}


def report_cpu(repeat: int) -> bool:
    ok = True
    for with_nodata in (False, True):
        pairs = load_pairs(with_nodata)
        npx = sum(lab.size for _, lab in pairs)
        tag = "with a no-data rim (15 % ignored)" if with_nodata else "real tiles as they are (no ignored pixels)"
        print(f"\n== CPU, {len(pairs)} tiles 1024×1024, C={C}, {tag}")
        # correctness first: the bare count (uint8 arithmetic: ignored 255*7+p wraps to 249..255, outside the
        # C*C bins, so it is exact on this data) and the engine agree
        m = SegMetrics(C, compute_boundary=False)
        for p, lab in pairs:
            m.update(p, lab)
        bare_total = sum(bare_bincount(p, lab)[:C * C] for p, lab in pairs).reshape(C, C)
        assert np.array_equal(bare_total, m.result().confusion), "bare bincount and engine disagree"
        pairs64 = [(p.astype(np.int64), lab.astype(np.int64)) for p, lab in pairs]
        eng = SegMetrics(C, compute_boundary=False)
        eng_full = SegMetrics(C, boundary_px=D)

        def run_bare(ps=pairs):
            for p, lab in ps:
                bare_bincount(p, lab)

        def run_engine(ps=pairs):
            eng.reset()
            for p, lab in ps:
                eng.update(p, lab)

        def run_full():
            eng_full.reset()
            for p, lab in pairs:
                eng_full.update(p, lab)

        eng_full.reset()
        for p, lab in pairs:
            eng_full.update(p, lab)
            ref = SegMetrics(C, boundary_px=D)
            ref.update(p, lab)
            bi, bu = straightforward_biou_areas(p, lab)
            r = ref.result()
            assert np.array_equal(r.b_intersect, bi) and np.array_equal(r.b_union, bu), "Boundary areas disagree"

        def run_b_straight():
            for p, lab in pairs:
                straightforward_biou_areas(p, lab)

        t = timed_rounds({"bare_u8": run_bare, "engine_u8": run_engine,
                          "bare_i64": lambda: run_bare(pairs64), "engine_i64": lambda: run_engine(pairs64),
                          "b_straight": run_b_straight, "full": run_full}, repeat)
        n = len(pairs)
        print(f"{'confusion matrix':<44}{'best Mpx/s':>12}{'median Mpx/s':>14}{'ms/tile':>9}")
        for dtype in ("u8", "i64"):
            for who in ("bare", "engine"):
                best, med = t[f"{who}_{dtype}"]
                label = ("bare np.bincount(label*C+pred)" if who == "bare" else "SegMetrics.update (boundary off)")
                print(f"  {label + (' uint8' if dtype == 'u8' else ' int64'):<42}{npx / best / 1e6:12.1f}"
                      f"{npx / med / 1e6:14.1f}{best / n * 1e3:9.2f}")
            ratio_best = t[f"engine_{dtype}"][0] / t[f"bare_{dtype}"][0]
            ratio_med = t[f"engine_{dtype}"][1] / t[f"bare_{dtype}"][1]
            verdict = "OK" if ratio_best <= 1.25 else "TOO SLOW"
            ok &= ratio_best <= 1.25
            print(f"  -> engine / bare time ({dtype}): {ratio_best:.2f}× best, {ratio_med:.2f}× median "
                  f"(limit 1.25×) {verdict}")
        b_best = t["full"][0] - t["engine_u8"][0]
        b_med = t["full"][1] - t["engine_u8"][1]
        print(f"{'Boundary IoU (d=3 px), per tile':<44}{'best ms':>12}{'median ms':>14}")
        print(f"  {'engine: full update minus boundary-off':<42}{b_best / n * 1e3:12.2f}{b_med / n * 1e3:14.2f}")
        best, med = t["b_straight"]
        print(f"  {'straightforward per-class erosion':<42}{best / n * 1e3:12.2f}{med / n * 1e3:14.2f}")
        speed = t["b_straight"][0] / b_best
        ok &= speed >= 1.0
        print(f"  -> engine is {speed:.1f}× faster (best), {t['b_straight'][1] / b_med:.1f}× (median) "
              f"{'OK' if speed >= 1.0 else 'SLOWER'}")
        best, med = t["full"]
        print(f"  full update (confusion + Boundary IoU + per-image stats): {best / n * 1e3:.2f} ms/tile best, "
              f"{med / n * 1e3:.2f} median ({npx / best / 1e6:.0f} Mpx/s); bare bincount + straightforward "
              f"Boundary IoU: {(t['bare_u8'][0] + t['b_straight'][0]) / n * 1e3:.2f} ms/tile")
    return ok


def report_torch(device: str, repeat: int, batch: int = 6) -> bool:
    import torch
    import torch.nn.functional as F

    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    pairs = load_pairs(with_nodata=True)[:batch]
    pred = torch.from_numpy(np.stack([p for p, _ in pairs])).long().to(dev)
    label = torch.from_numpy(np.stack([lab for _, lab in pairs])).long().to(dev)
    npx = label.numel()
    what = (torch.cuda.get_device_name(dev) if dev.type == "cuda"
            else "informational: CPU tensors use the numpy path unless backend='torch' is forced")
    print(f"\n== torch on {device} ({what}), batch [{batch},1024,1024] int64, C={C}, no-data rim")

    def bare():
        return torch.bincount((label * C + pred).reshape(-1), minlength=C * C)

    m_conf = SegMetrics(C, compute_boundary=False, backend="torch")
    m_full = SegMetrics(C, boundary_px=D, backend="torch")

    def eng(m):
        m.reset()
        m.update(pred, label)
        return m

    def straight_biou():
        k = 2 * D + 1
        valid = label != IGN
        bi = torch.zeros(C, dtype=torch.int64, device=dev)
        bu = torch.zeros(C, dtype=torch.int64, device=dev)
        for c in range(C):
            bands = []
            for mp in (label, pred):
                mk = (mp == c) & valid
                keep = (mk | ~valid).to(torch.float16 if dev.type == "cuda" else torch.float32).unsqueeze(1)
                eroded = -F.max_pool2d(-keep, k, stride=1, padding=D)
                bands.append(mk & (eroded.squeeze(1) < 0.5))
            bi[c] = (bands[0] & bands[1]).sum()
            bu[c] = (bands[0] | bands[1]).sum()
        return bi, bu

    # correctness: same confusion as the bare count, same band areas as the per-class version
    full = eng(m_full).result()
    conf_bare = bare()[:C * C].reshape(C, C).cpu().numpy()
    assert np.array_equal(conf_bare, full.confusion)
    bi, bu = straight_biou()
    assert np.array_equal(bi.cpu().numpy(), full.b_intersect) and np.array_equal(bu.cpu().numpy(), full.b_union)

    def timed(f):
        def g():
            f()
            sync()
        return g

    t = timed_rounds({"bare": timed(bare), "conf": timed(lambda: eng(m_conf)), "full": timed(lambda: eng(m_full)),
                      "straight": timed(straight_biou)}, repeat)
    print(f"  bare torch.bincount(label*C+pred):   {npx / t['bare'][0] / 1e6:10.0f} Mpx/s best "
          f"({t['bare'][0] / batch * 1e3:.3f} ms/tile)")
    print(f"  SegMetrics.update (boundary off):    {npx / t['conf'][0] / 1e6:10.0f} Mpx/s best "
          f"({t['conf'][0] / batch * 1e3:.3f} ms/tile; includes per-image stats, on-device validation)")
    ratio = t["conf"][0] / t["bare"][0]
    limit = "(limit 1.25×)" if dev.type == "cuda" else "(informational)"
    print(f"  -> engine / bare time: {ratio:.2f}× best, {t['conf'][1] / t['bare'][1]:.2f}× median {limit}")
    b_eng = t["full"][0] - t["conf"][0]
    print(f"  Boundary IoU per tile: engine {b_eng / batch * 1e3:.3f} ms (full update {t['full'][0] / batch * 1e3:.3f}"
          f" minus boundary-off), straightforward per-class max-pool {t['straight'][0] / batch * 1e3:.3f} ms "
          f"-> {t['straight'][0] / max(b_eng, 1e-12):.1f}× faster")
    return ratio <= 1.25 and b_eng <= t["straight"][0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=25, help="interleaved timing rounds (default 25)")
    ap.add_argument("--threads", type=int, default=1, help="OpenCV / torch CPU threads (default 1)")
    ap.add_argument("--torch-cpu", action="store_true", help="also time the torch path on CPU tensors")
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    import torch
    torch.set_num_threads(args.threads)
    print(f"metrics benchmark — python {platform.python_version()}, numpy {np.__version__}, opencv {cv2.__version__},"
          f" torch {torch.__version__}; {os.cpu_count()} CPUs, {args.threads} thread(s); load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    ok = report_cpu(args.repeat)
    if torch.cuda.is_available():
        ok &= report_torch("cuda", args.repeat)
    else:
        print("\n== CUDA: not available on this machine (no GPU); the torch path is covered by --torch-cpu and tests")
    if args.torch_cpu:   # informational: CPU tensors take the numpy path unless backend="torch" is forced
        report_torch("cpu", max(3, args.repeat // 5))
    print("\nall targets met" if ok else "\nSOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
