"""Check 8 — sanity run: can the model, loss and optimiser fit one small batch?

``health.sanity_batch`` training tiles, read without augmentation, each cut to one ``health.sanity_size`` square
(the candidate window holding the most classes, so the batch is not a single-class trivial case), are trained on
for up to ``health.sanity_steps`` AdamW steps at ``health.sanity_lr`` (no weight decay, the config's gradient clipping),
with the config's own model and loss. The loss must fall below ``health.sanity_loss_ratio`` of its first value
(compared on a 3-step moving average, so one lucky step does not count); once it has, ``EXTRA_STEPS`` more
steps are run for the curve and the fit stops. The first step also reports how many
parameter tensors received a gradient at all. The curve is stored as ``scalars`` events (split ``sanity``) and as
a picture; the trained model is kept for a quick per-class evaluation when there is no run under test."""
from __future__ import annotations

import math
import time
from typing import Any

import cv2
import numpy as np

from .context import HealthRun
from .result import CheckResult

EXTRA_STEPS = 10     # steps run after the loss first fell below the threshold, so the curve shows it settle


def _best_window(mask: np.ndarray, size: int, ignore: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` window (3×3 candidate grid) with the most classes, then most labels."""
    H, W = mask.shape
    ys = np.linspace(0, max(0, H - size), 3).round().astype(int)
    xs = np.linspace(0, max(0, W - size), 3).round().astype(int)
    best, best_key = (0, 0), (-1, -1)
    for y in ys:
        for x in xs:
            win = mask[y:y + size, x:x + size]
            vals = win[win != ignore]
            key = (len(np.unique(vals)), vals.size)
            if key > best_key:
                best, best_key = (int(y), int(x)), key
    return best


def sanity_batch(h: HealthRun):
    import torch

    cfg = h.cfg
    hc = cfg.health
    ds = h.dataset(cfg.dataset.train_split, train=False)
    n = min(max(1, hc.sanity_batch), len(ds))
    idx = np.linspace(0, len(ds) - 1, n).round().astype(int).tolist()
    size = int(hc.sanity_size)
    images, masks, ids = [], [], []
    for i in idx:
        item = ds[i]
        img, mask = item["image"], item["mask"]
        H, W = mask.shape
        if H < size or W < size:     # pad small tiles (image 0, mask ignore) so every crop has one size
            py, px = max(0, size - H), max(0, size - W)
            img = torch.nn.functional.pad(img, (0, px, 0, py))
            mask = torch.nn.functional.pad(mask, (0, px, 0, py), value=cfg.ignore_index)
        y, x = _best_window(mask.numpy(), size, cfg.ignore_index)
        images.append(img[:, y:y + size, x:x + size])
        masks.append(mask[y:y + size, x:x + size])
        ids.append(f"{item['id']}@{y},{x}")
    return torch.stack(images), torch.stack(masks), ids


def _curve_picture(losses: list[float], threshold: float, path, title: str) -> None:
    W, H, m = 640, 300, 48
    img = np.full((H, W, 3), 255, np.uint8)
    finite = [v for v in losses if math.isfinite(v)]
    if not finite:
        cv2.imwrite(str(path), img)
        return
    top = max(max(finite), threshold) * 1.05
    bottom = 0.0

    def pt(i, v):
        x = m + (W - 2 * m) * (i / max(1, len(losses) - 1))
        y = H - m - (H - 2 * m) * ((v - bottom) / (top - bottom))
        return int(round(x)), int(round(y))

    cv2.rectangle(img, (m, m), (W - m, H - m), (0, 0, 0), 1)
    ty = pt(0, threshold)[1]
    for x in range(m, W - m, 12):
        cv2.line(img, (x, ty), (min(x + 6, W - m), ty), (0, 0, 200), 1)
    cv2.putText(img, f"threshold {threshold:.3f}", (W - m - 150, ty - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                (0, 0, 200), 1, cv2.LINE_AA)
    pts = [pt(i, v) for i, v in enumerate(losses) if math.isfinite(v)]
    cv2.polylines(img, [np.array(pts, np.int32)], False, (200, 90, 0), 2, cv2.LINE_AA)
    cv2.putText(img, title[:80], (m, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "step", (W // 2 - 14, H - 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"{top:.2f}", (4, m + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "0", (m - 14, H - m + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, str(len(losses) - 1), (W - m - 10, H - m + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def train_sanity(h: HealthRun) -> dict[str, Any]:
    """Run the sanity fit once per HealthRun (the per-class check may reuse its model). Returns its record."""
    if "sanity" in h.cache:
        return h.cache["sanity"]
    import torch

    cfg = h.cfg
    hc = cfg.health
    torch.manual_seed(int(cfg.train.seed))
    device = torch.device(h.device)
    x, y, ids = sanity_batch(h)
    x, y = x.to(device), y.to(device)
    model = h.cache.pop("fresh_model", None) or h.model_factory(cfg)   # built after the same seed either way
    model.to(device).train()
    torch.manual_seed(int(cfg.train.seed) + 1)    # dropout / stochastic depth draws, whichever check built it
    loss_fn = h.loss_factory(cfg)
    module = getattr(loss_fn, "module", None)
    if isinstance(module, torch.nn.Module):
        module.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    record: dict[str, Any] = {"ids": ids, "shape": list(x.shape), "losses": [], "device": str(device)}
    if not params:
        record["error"] = "the model has no trainable parameters"
        h.cache["sanity"] = record
        return record
    opt = torch.optim.AdamW(params, lr=hc.sanity_lr, weight_decay=0.0)
    threshold_ratio = float(hc.sanity_loss_ratio)
    reached = None
    t0 = time.perf_counter()
    for step in range(int(hc.sanity_steps)):
        if h.should_stop():
            break
        out = model(x)
        logits = out["seg"] if isinstance(out, dict) else out
        loss = loss_fn(out if isinstance(out, dict) else logits, y)
        value = float(loss.detach())
        record["losses"].append(value)
        h.events.scalars({"loss": value}, step=step, split="sanity")
        if not math.isfinite(value):
            record["error"] = f"the loss became {value} at step {step}"
            break
        opt.zero_grad(set_to_none=True)
        if not loss.requires_grad:
            record["error"] = "the loss does not depend on any trainable parameter (no gradient path)"
            break
        loss.backward()
        if step == 0:
            with_grad = sum(1 for p in params if p.grad is not None and float(p.grad.abs().sum()) > 0)
            record["params_with_grad"] = f"{with_grad}/{len(params)}"
            # (stochastic depth may drop a whole block for this batch: a few zero-gradient tensors are normal)
            record["params_without_grad"] = [n for n, p in model.named_parameters() if p.requires_grad and (
                p.grad is None or float(p.grad.abs().sum()) == 0)][:12]
            record["grad_norm_0"] = float(torch.norm(torch.stack([p.grad.norm() for p in params
                                                                  if p.grad is not None])) if with_grad else 0.0)
            if with_grad == 0:
                record["error"] = "no parameter received a gradient at the first step"
                break
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        opt.step()
        smooth = float(np.mean(record["losses"][-3:]))
        if reached is None and step >= 2 and smooth < threshold_ratio * record["losses"][0]:
            reached = step
        if reached is not None and step >= reached + EXTRA_STEPS:
            break        # shown to learn: a few more steps for the curve, then stop (the check is about "within N")
        if step % 5 == 0:
            h.progress(f"sanity: step {step + 1}/{hc.sanity_steps}, loss {value:.4f}")
    record["seconds"] = round(time.perf_counter() - t0, 2)
    model.eval()
    record["model"] = model
    h.cache["sanity"] = record
    return record


def check_sanity(h: HealthRun) -> CheckResult:
    cfg = h.cfg
    hc = cfg.health
    rec = train_sanity(h)
    losses = rec["losses"]
    evidence = {k: v for k, v in rec.items() if k not in ("model", "losses")}
    evidence.update({"steps": hc.sanity_steps, "lr": hc.sanity_lr, "batch": hc.sanity_batch, "size": hc.sanity_size,
                     "loss_ratio": hc.sanity_loss_ratio, "curve": [round(v, 5) for v in losses]})
    picture = None
    if losses:
        start = losses[0]
        threshold = hc.sanity_loss_ratio * start
        smooth = [float(np.mean(losses[max(0, i - 2): i + 1])) for i in range(len(losses))]
        reached = next((i for i, v in enumerate(smooth) if i >= 2 and v < threshold), None)
        best = min(smooth[2:] or smooth)
        evidence.update({"start": start, "threshold": threshold, "final": losses[-1], "best_smoothed": best,
                         "reached_at_step": reached})
        path = h.picture_path("sanity_curve.png")
        _curve_picture(losses, threshold, path,
                       f"sanity fit: {cfg.model.arch}/{cfg.model.encoder}, batch {len(rec['ids'])}x{hc.sanity_size}px, "
                       f"lr {hc.sanity_lr:g}")
        picture = h.store_picture(path, "sanity")
    if rec.get("error"):
        return CheckResult("sanity", "fail", f"the sanity fit cannot train: {rec['error']}", evidence, picture)
    if not losses:
        return CheckResult("sanity", "fail", "the sanity fit ran no step (stopped)", evidence, picture)
    if reached is None:
        return CheckResult("sanity", "fail",
                           f"the model cannot overfit one batch: loss {start:.4f} -> {losses[-1]:.4f} (best "
                           f"{best / start:.0%} of the start) in {len(losses)} steps at lr {hc.sanity_lr:g}; needs "
                           f"< {hc.sanity_loss_ratio:.0%} (health.sanity_loss_ratio)", evidence, picture)
    return CheckResult("sanity", "pass",
                       f"loss fell below {hc.sanity_loss_ratio:.0%} of its start at step {reached} ({start:.4f} -> "
                       f"{losses[-1]:.4f} after {len(losses)} steps, {len(rec['ids'])}x{hc.sanity_size}px, no "
                       f"augmentation, lr {hc.sanity_lr:g}; {rec.get('params_with_grad', '?')} parameter tensors "
                       f"got gradients)", evidence, picture)
