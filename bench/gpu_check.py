"""One-shot GPU check: AMP training speed and FP16 export parity and speed of the demo SegFormer-B0, as ratios.

Needs only torch, timm, numpy, PyYAML, Pillow (or opencv), onnx (+ onnxruntime when present) and the project's
``mapsage.config`` / ``mapsage.models`` / ``mapsage.export`` modules; segmentation-models-pytorch (pure Python) is
imported from the installed packages or, when absent, from a wheel in ``--wheels DIR`` (default ``bench/wheels``):
``pip download segmentation-models-pytorch --no-deps --only-binary=:all: -d bench/wheels``.

It prints, on the bundled Dubai demo tiles (real images and masks, 512 px crops):

1. Training: the demo model (SegFormer-B0, 128-channel decoder, 6 classes) trained ``--steps`` AdamW steps in FP32,
   BF16 autocast and FP16 autocast (GradScaler), each from the same initial weights and batches: images/s, the
   last loss (finite or not), speed-up over FP32.
2. Export parity of FP16 against FP32 on the demo tiles (the FP32-trained model, tiles up to 1024² padded to 32): max
   |Δ logit| and argmax agreement for PyTorch ``.half()``, FP16 autocast, TorchScript FP16 and ONNX FP16 (through
   onnxruntime's CUDA provider where it exists, else its CPU provider on two tiles, labelled so).
3. Inference speed at batch ``--batch`` × 512²: PyTorch FP32 / autocast FP16 / ``.half()``, TorchScript FP32 /
   FP16, ONNX FP32 / FP16 through onnxruntime (CUDA provider when present): images/s and the ratio to PyTorch FP32.

``--cpu-smoke`` runs the same code on the CPU at toy sizes (so it is known to run). With ``OUT`` set, the figures go
to ``$OUT/gpu_check.json`` too.

    python bench/gpu_check.py                 # on the GPU machine (< 4 minutes on one H200)
    python bench/gpu_check.py --cpu-smoke     # anywhere
"""
from __future__ import annotations

import argparse
import copy
import glob
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T0 = time.perf_counter()


def _add_wheels(folder: Path) -> list[str]:
    added = []
    for whl in sorted(glob.glob(str(folder / "*.whl"))):
        if whl not in sys.path:
            sys.path.insert(0, whl)      # pure-Python wheels import straight from the zip
            added.append(Path(whl).name)
    return added


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def load_tiles(cfg, n: int, size: int):
    """``n`` demo tiles as (normalised float32 [3,H,W] tensors, class-id masks [H,W] int64), by decoding the
    colour masks with the config's colour map (unknown colours -> ignore)."""
    import numpy as np
    import torch
    from PIL import Image

    ds = cfg.dataset
    root = Path(ds.root)
    root = root if root.is_absolute() else ROOT / root
    images = sorted(root.glob(ds.image_glob))
    if not images:
        raise SystemExit(f"no demo images under {root} ({ds.image_glob}); run from the repository root")
    pick = [images[int(round(i))] for i in np.linspace(0, len(images) - 1, n)]
    lut = {}
    for colour, name in ds.color_map.items():
        c = colour.lstrip("#")
        lut[(int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16))] = ds.classes.index(name)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)     # mit_b0's ImageNet statistics
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    out = []
    for p in pick:
        mp = Path(str(p).replace(ds.mask_from_image[0], ds.mask_from_image[1])
                  .replace(ds.mask_from_image[2], ds.mask_from_image[3]))
        rgb = np.asarray(Image.open(p).convert("RGB"))
        m = np.asarray(Image.open(mp).convert("RGB"))
        code = (m[..., 0].astype(np.int64) << 16) | (m[..., 1].astype(np.int64) << 8) | m[..., 2]
        ids = np.full(code.shape, 255, dtype=np.int64)
        for (r, g, b), k in lut.items():
            ids[code == ((r << 16) | (g << 8) | b)] = k
        x = (torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0 - mean) / std
        out.append((x, torch.from_numpy(ids)))
    return out


def crops(tiles, size: int, batch: int, steps: int, seed: int = 0):
    """``steps`` batches of random ``size``² crops (fixed by the seed, the same for every precision)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(steps):
        xs, ys = [], []
        for _ in range(batch):
            x, y = tiles[int(torch.randint(len(tiles), (1,), generator=g))]
            h, w = y.shape
            if h < size or w < size:
                x = F.pad(x, (0, max(0, size - w), 0, max(0, size - h)))
                y = F.pad(y, (0, max(0, size - w), 0, max(0, size - h)), value=255)
                h, w = y.shape
            t = int(torch.randint(h - size + 1, (1,), generator=g))
            l = int(torch.randint(w - size + 1, (1,), generator=g))
            xs.append(x[:, t:t + size, l:l + size])
            ys.append(y[t:t + size, l:l + size])
        batches.append((torch.stack(xs), torch.stack(ys)))
    return batches


def train_steps(model, batches, device, mode: str, lr: float = 6e-4):
    """AdamW steps over ``batches`` in ``mode`` fp32 | bf16 | fp16 (autocast; fp16 with GradScaler); returns
    (images/s over all but the first 2 steps, losses)."""
    import torch
    import torch.nn.functional as F

    model.train().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    scaler = torch.amp.GradScaler(device.type, enabled=(mode == "fp16"))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
    losses, times = [], []
    for _i, (x, y) in enumerate(batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x)
            logits = out["seg"] if isinstance(out, dict) else out
            loss = F.cross_entropy(logits.float(), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        sync(device)
        times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    timed = times[2:] if len(times) > 3 else times
    return len(batches[0][0]) * len(timed) / sum(timed), losses


def sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fns: dict, repeats: int, device) -> dict:
    """Median seconds per call, engines interleaved round by round after one warm-up call each."""
    for fn in fns.values():
        fn()
    sync(device)
    t = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            t[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in t.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="toy sizes on the CPU (proves the script runs)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per precision (GPU 40, smoke 3)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (GPU 16, smoke 2)")
    ap.add_argument("--size", type=int, default=None, help="crop size (GPU 512, smoke 128)")
    ap.add_argument("--tiles", type=int, default=None, help="demo tiles for parity (GPU 18, smoke 2)")
    ap.add_argument("--parity-crop", type=int, default=None,
                    help="crop parity tiles to at most this size (GPU 1024, smoke 128)")
    ap.add_argument("--wheels", default=str(ROOT / "bench" / "wheels"),
                    help="folder of pure-Python wheels to import from when missing (segmentation-models-pytorch)")
    args = ap.parse_args(argv)
    smoke = args.cpu_smoke
    steps = args.steps or (2 if smoke else 40)
    batch = args.batch or (2 if smoke else 16)
    size = args.size or (64 if smoke else 512)
    parity_crop = args.parity_crop or (128 if smoke else 1024)
    n_tiles = args.tiles or (2 if smoke else 18)
    sys.path.insert(0, str(ROOT))
    added = _add_wheels(Path(args.wheels))

    import torch

    try:
        import segmentation_models_pytorch  # noqa: F401
    except ImportError:
        print("segmentation-models-pytorch is missing: pip download segmentation-models-pytorch --no-deps "
              "--only-binary=:all: -d bench/wheels (and carry bench/wheels)", file=sys.stderr)
        return 2
    from mapsage.config import load_config
    from mapsage.export.core import DeployGraph, convert_onnx_fp16, export_onnx_fp32, export_torchscript, run_onnx
    from mapsage.models import build_model

    try:
        import onnxruntime as ort
        providers = ort.get_available_providers()
    except ImportError:
        ort, providers = None, []
    device = torch.device("cpu" if smoke or not torch.cuda.is_available() else "cuda")
    if not smoke and device.type != "cuda":
        print("no CUDA device; use --cpu-smoke on a CPU machine", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    res: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                 "torch": torch.__version__, "onnxruntime": getattr(ort, "__version__", None),
                 "onnxruntime_providers": providers, "wheels_from_folder": added, "smoke": smoke,
                 "steps": steps, "batch": batch, "size": size}
    log(f"device {res['device']}, torch {torch.__version__}, onnxruntime {res['onnxruntime']} {providers}")

    cfg = load_config(ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml", [])
    torch.manual_seed(0)
    init = build_model(cfg, load_pretrained=False)
    tiles = load_tiles(cfg, max(n_tiles, 4), size)
    batches = crops(tiles, size, batch, steps)
    log(f"demo model {cfg.model.arch}/{cfg.model.encoder} ({sum(p.numel() for p in init.parameters()) / 1e6:.2f} M "
        f"params), {len(tiles)} tiles, {steps} steps x batch {batch} x {size}^2")

    # 1. training: fp32 vs bf16 / fp16 autocast ---------------------------------------------------------------
    train = {}
    trained = None
    for mode in ("fp32", "bf16", "fp16"):
        m = copy.deepcopy(init)
        # CPU smoke: reduced-precision autocast on a CPU without bf16/fp16 units is emulated and very slow; one
        # step on 32 px crops proves the code path (the GPU run uses the full batches for every precision)
        use = [(x[..., :32, :32], y[..., :32, :32]) for x, y in batches[:1]] if smoke and mode != "fp32" else batches
        try:
            ips, losses = train_steps(m, use, device, mode)
            train[mode] = {"images_per_s": ips, "first_loss": losses[0], "last_loss": losses[-1],
                           "loss_finite": all(math.isfinite(v) for v in losses)}
        except Exception as exc:  # noqa: BLE001 - a precision the device lacks is a figure too
            train[mode] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        if mode == "fp32":
            trained = m
        log(f"train {mode}: {train[mode]}")
    for mode in ("bf16", "fp16"):
        if "images_per_s" in train.get(mode, {}) and "images_per_s" in train["fp32"]:
            train[mode]["speedup_vs_fp32"] = train[mode]["images_per_s"] / train["fp32"]["images_per_s"]
    res["train"] = train

    # 2. exports of the fp32-trained model ----------------------------------------------------------------------
    graph = DeployGraph(trained.eval().to("cpu")).eval()
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    ex = torch.zeros(1, 3, size, size)
    ex[0] = batches[0][0][0]
    t = time.perf_counter()
    onnx32 = onnx16 = None
    try:
        onnx32 = export_onnx_fp32(graph, ex, tmp / "m32.onnx")
        onnx16 = convert_onnx_fp16(onnx32, tmp / "m16.onnx")
    except Exception as exc:  # noqa: BLE001 - no onnx / onnxruntime / exporter here: the rest still runs
        res["onnx_skipped"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        log(f"ONNX skipped: {res['onnx_skipped']}")
        ort = None
    ts32 = export_torchscript(graph, ex, tmp / "ts32.pt", precision="fp32", device=device)
    ts16 = export_torchscript(graph, ex, tmp / "ts16.pt", precision="fp16", device=device)
    res["export_seconds"] = time.perf_counter() - t
    res["file_mb"] = {p.name: p.stat().st_size / 1e6 for p in (onnx32, onnx16, ts32, ts16) if p is not None}
    log(f"exported in {res['export_seconds']:.1f} s: {res['file_mb']}")
    g32 = graph.to(device).eval()
    g16 = copy.deepcopy(graph).half().to(device).eval()
    ts32m = torch.jit.load(str(ts32), map_location=device).eval()
    ts16m = torch.jit.load(str(ts16), map_location=device).eval()
    cuda_ep = "CUDAExecutionProvider" in providers and device.type == "cuda"
    sess = {}
    if ort is not None:
        prov = (["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda_ep else ["CPUExecutionProvider"])
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")   # no busy pool threads
        sess = {k: ort.InferenceSession(str(p), so, providers=prov) for k, p in (("fp32", onnx32), ("fp16", onnx16))}

    # 3. FP16 parity on the demo tiles (whole tiles padded to 32) ---------------------------------------------
    import torch.nn.functional as F

    def padded(x):
        h, w = x.shape[-2:]
        return F.pad(x, (0, (-w) % 32, 0, (-h) % 32)), h, w

    engines16 = {
        "pytorch_half": lambda x: g16(x.half()).float(),
        "pytorch_autocast_fp16": lambda x: _autocast(g32, x, device),
        "torchscript_fp16": lambda x: ts16m(x.half()).float(),
    }
    if sess:
        engines16["onnx_fp16" + ("_cuda" if cuda_ep else "_cpu")] = \
            lambda x: torch.from_numpy(run_onnx(sess["fp16"], x.cpu().numpy())).to(device)
    par = {k: {"max_abs_logit": 0.0, "agree": 0, "pixels": 0, "tiles": 0} for k in engines16}
    with torch.inference_mode():
        for i, (x, _) in enumerate(tiles[:n_tiles]):
            if parity_crop:
                x = x[:, :parity_crop, :parity_crop]
            xp, h, w = padded(x.unsqueeze(0).to(device))
            ref = g32(xp)[..., :h, :w].float()
            for k, fn in engines16.items():
                if k.startswith("onnx") and not cuda_ep and i >= 2:
                    continue               # FP16 ONNX on the CPU provider: two tiles are enough to see it
                out = fn(xp)[..., :h, :w].float()
                d = par[k]
                d["max_abs_logit"] = max(d["max_abs_logit"], float((out - ref).abs().max()))
                d["agree"] += int((out.argmax(1) == ref.argmax(1)).sum())
                d["pixels"] += h * w
                d["tiles"] += 1
    for k, d in par.items():
        d["argmax_agreement_pct"] = 100.0 * d.pop("agree") / max(1, d["pixels"])
        log(f"parity fp16 vs fp32 {k}: max |Δ logit| {d['max_abs_logit']:.4f}, argmax agreement "
            f"{d['argmax_agreement_pct']:.3f} % over {d['tiles']} tiles")
    res["fp16_parity"] = par

    # 4. inference speed at batch x size^2 ------------------------------------------------------------------
    xb = torch.cat([b[0] for b in batches])[:batch].to(device)
    fns = {
        "pytorch_fp32": lambda: g32(xb),
        "pytorch_autocast_fp16": lambda: _autocast(g32, xb, device),
        "pytorch_half": lambda: g16(xb.half()),
        "torchscript_fp32": lambda: ts32m(xb),
        "torchscript_fp16": lambda: ts16m(xb.half()),
    }
    if sess and (cuda_ep or smoke):
        xn = xb.cpu().numpy()
        fns["onnx_fp32"] = lambda: run_onnx(sess["fp32"], xn)
        fns["onnx_fp16"] = lambda: run_onnx(sess["fp16"], xn)
    with torch.inference_mode():
        secs = timeit(fns, 3 if smoke else 20, device)
    base = secs["pytorch_fp32"]
    res["infer_speed"] = {k: {"images_per_s": batch / s, "ratio_vs_pytorch_fp32": base / s} for k, s in secs.items()}
    res["infer_speed_note"] = (f"batch {batch} x {size}^2, median of {3 if smoke else 20}; onnx through "
                               + ("onnxruntime CUDA provider" if cuda_ep else "onnxruntime CPU provider (smoke)"
                                  if smoke else "- (no onnxruntime CUDA provider: not timed)"))
    res["seconds"] = time.perf_counter() - T0

    print("\n=== GPU check: ratios ===")
    for mode in ("bf16", "fp16"):
        tr = train.get(mode, {})
        print(f"train {mode} autocast vs fp32: {tr.get('speedup_vs_fp32', float('nan')):.2f}x "
              f"({tr.get('images_per_s', float('nan')):.1f} vs {train['fp32'].get('images_per_s', float('nan')):.1f} "
              f"img/s), loss finite {tr.get('loss_finite')}, last loss {tr.get('last_loss')}"
              + (f" ERROR {tr['error']}" if "error" in tr else ""))
    for k, d in par.items():
        print(f"fp16 parity {k}: max |Δ logit| {d['max_abs_logit']:.4f}, argmax agreement "
              f"{d['argmax_agreement_pct']:.3f} %")
    for k, v in res["infer_speed"].items():
        print(f"infer {k}: {v['images_per_s']:.1f} img/s = {v['ratio_vs_pytorch_fp32']:.2f}x pytorch fp32")
    print(f"total {res['seconds']:.1f} s")
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_check.json").write_text(json.dumps(res, indent=2, default=str), encoding="utf-8")
        print(f"wrote {Path(out) / 'gpu_check.json'}")
    return 0


def _autocast(model, x, device):
    import torch
    with torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16):
        return model(x).float()


if __name__ == "__main__":
    sys.exit(main())
