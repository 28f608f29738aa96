"""Build every requested export of one model: ``export_targets(model, cfg, out_dir, targets, ecfg, ...)``.

The FP32 ONNX file is the source of the FP16 and INT8 files (built once when several are asked for). Each file is
checked against the eager model on an input of another shape before it is returned, and gets its sidecar."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from ..data import build_dataset
from ..infer.evaluate import pick_indices
from .core import (
    SUFFIX,
    DeployGraph,
    ExportedFile,
    build_sidecar,
    check_against_eager,
    convert_onnx_fp16,
    example_input,
    export_onnx_fp32,
    export_torchscript,
    ort_session,
    quantize_onnx_int8,
    run_onnx,
    write_sidecar,
)
from .errors import ExportError


def parse_target(target: str) -> tuple[str, str]:
    fmt, _, prec = str(target).partition(":")
    if fmt not in SUFFIX or prec not in ("fp32", "fp16", "int8") or (fmt == "torchscript" and prec == "int8"):
        raise ExportError(f"export target {target!r}: use onnx:fp32|fp16|int8 or torchscript:fp32|fp16")
    return fmt, prec


def calibration_crops(cfg, n: int, size: Sequence[int], multiple: int, split: Optional[str] = None
                      ) -> tuple[list[np.ndarray], list[str]]:
    """``n`` training tiles (spread evenly over the split), each cropped at its centre to ``size`` (rounded up to
    ``multiple``, zero-padded where the tile is smaller): normalised float32 ``[3,h,w]`` arrays and their ids."""

    try:
        ds = build_dataset(cfg, split or cfg.dataset.train_split, train=False)
    except Exception:  # noqa: BLE001 - no training split: static INT8 does not apply
        return [], []
    if len(ds) == 0:
        return [], []
    crops, ids = [], []
    h, w = (int(v) for v in size)
    for i in pick_indices(len(ds), n):
        s = ds[i]
        img = s["image"]
        top = max(0, (img.shape[1] - h) // 2)
        left = max(0, (img.shape[2] - w) // 2)
        crops.append(example_input(img[:, top:, left:], (h, w), multiple)[0].numpy().astype(np.float32))
        ids.append(str(s.get("id", i)))
    return crops, ids


def _second_shape(example: torch.Tensor, multiple: int) -> torch.Tensor:
    """Another batch size and other height/width than the example (the frozen-shape check)."""
    b, c, h, w = example.shape
    h2 = max(multiple, h - multiple) if h > multiple else h + multiple
    w2 = w + 2 * multiple
    x = torch.nn.functional.interpolate(example[:1], size=(h2, w2), mode="bilinear", align_corners=False)
    return torch.cat([x, x.flip(-1)], dim=0)


def export_targets(model: torch.nn.Module, cfg, out_dir: str | Path, targets: Sequence[str], ecfg, *,
                   source: dict, example: torch.Tensor, calib: Optional[tuple[list, list]] = None,
                   device: torch.device | str = "cpu", stem: str = "model",
                   log: Callable[[str], None] = lambda s: None) -> list[ExportedFile]:
    """Export ``model`` (trained with config ``cfg``) as each ``"<format>:<precision>"`` of ``targets`` into
    ``out_dir`` (``<stem>-<format>-<precision>.onnx|.pt`` + ``.json`` sidecars). ``example``: a real input
    ``[1,3,h,w]`` (h, w multiples of the model's output stride); ``calib``: ``(crops, ids)`` for static INT8
    (built from the training split when None and needed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    graph = DeployGraph(model.to("cpu")).eval()
    mult = graph.output_stride
    second = _second_shape(example, mult)
    parsed = [parse_target(t) for t in targets]
    done: list[ExportedFile] = []
    fp32_onnx: Optional[Path] = None

    def eager(x):
        return graph(x)

    def need_fp32_onnx() -> Path:
        nonlocal fp32_onnx
        if fp32_onnx is None:
            path = out_dir / f"{stem}-onnx-fp32.onnx"
            t0 = time.perf_counter()
            export_onnx_fp32(graph, example, path, opset=ecfg.opset, exporter=ecfg.onnx_exporter)
            sess = ort_session(path)
            worst = check_against_eager(graph.name, eager,
                                        lambda x: torch.from_numpy(run_onnx(sess, x.numpy())), [second],
                                        ecfg.parity_atol, kind="onnx")
            fp32_onnx = path
            log(f"ONNX FP32 of {graph.name}: {path.name}, {path.stat().st_size / 1e6:.2f} MB in "
                f"{time.perf_counter() - t0:.1f} s; check on {list(second.shape)}: max |Δ logit| {worst:.2e}")
        return fp32_onnx

    for fmt, prec in parsed:
        t0 = time.perf_counter()
        info: dict[str, Any] = {}
        path = out_dir / f"{stem}-{fmt}-{prec}{SUFFIX[fmt]}"
        if fmt == "onnx":
            src = need_fp32_onnx()
            if prec == "fp32":
                info["exporter"] = ecfg.onnx_exporter
            elif prec == "fp16":
                convert_onnx_fp16(src, path)
                info["conversion"] = "onnxruntime.transformers.float16 (keep_io_types: float32 in and out)"
            else:
                if ecfg.int8_mode != "dynamic" and calib is None:
                    calib = calibration_crops(cfg, ecfg.calib_tiles, ecfg.calib_size, mult)
                crops, ids = calib if calib is not None else ([], [])
                info["int8"] = quantize_onnx_int8(src, path, mode=ecfg.int8_mode, crops=crops,
                                                  op_types=ecfg.int8_op_types, per_channel=ecfg.int8_per_channel,
                                                  reduce_range=ecfg.int8_reduce_range,
                                                  calib_method=ecfg.calib_method, name=graph.name, log=log)
                if info["int8"]["mode"] == "static":
                    info["int8"]["calibration"]["tile_ids"] = ids
            info["opset"] = ecfg.opset
        else:
            dev = torch.device(device)
            if prec == "fp16" and dev.type != "cuda":
                log(f"TorchScript FP16 of {graph.name} is built on the CPU (no GPU here); it is meant for GPUs")
            export_torchscript(graph, example, path, method=ecfg.torchscript_method, precision=prec, device=dev)
            info["method"] = ecfg.torchscript_method
            if prec == "fp32":
                loaded = torch.jit.load(str(path), map_location="cpu").eval()
                with torch.no_grad():
                    worst = check_against_eager(graph.name, eager, lambda x: loaded(x), [second],
                                                ecfg.parity_atol, kind="torchscript")
                info["shape_check_max_abs_logit"] = worst
            graph.to("cpu").float()
        seconds = time.perf_counter() - t0
        side = build_sidecar(cfg, fmt=fmt, precision=prec, multiple=mult, source=source,
                             extra={"export": info})
        sc = write_sidecar(path, side)
        ef = ExportedFile(fmt, prec, path, sc, seconds, info)
        done.append(ef)
        log(f"{ef.name}: {path.name}, {ef.bytes / 1e6:.2f} MB" + (f" ({info['int8']['mode']} INT8)"
                                                                    if "int8" in info else ""))
    if fp32_onnx is not None and ("onnx", "fp32") not in parsed:
        fp32_onnx.unlink(missing_ok=True)       # built only as the source of FP16 / INT8
    return done
