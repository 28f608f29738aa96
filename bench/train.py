"""Training throughput of the engine beside a bare PyTorch loop: same model, batch, data, device, in one process.

    .venv/bin/python bench/train.py [CONFIG] [--steps 12] [--rounds 2] [--set key=value ...]

Both loops build the model from the config with the same seed and draw their batches from the same training
dataset (train transforms), the same :class:`~mapsage.train.sampler.EpochSampler`, batch size and number of
loader workers. The bare loop is what one would write by hand: forward, ``0.7 * CE + 0.3 * Dice`` (torch + smp),
backward, AdamW step (autocast as the engine on GPU). The engine is :class:`mapsage.train.Trainer` as a run uses
it -- loss schedule, grad-norm clipping and logging, warmup+cosine LR, EMA, NaN checks, step events, heartbeats,
a ``last.pth`` checkpoint per epoch -- with validation off (it is not training throughput).

Each measurement runs two epochs of ``--steps`` optimiser steps and times the second (the first warms up the
allocator, the workers and the page cache): engine images/s is the second epoch's images over its wall time
(data loading included for both). A second figure takes both epochs' wall time, which for the engine also
covers its per-epoch ``last.pth`` checkpoint and event writes. Loops alternate for ``--rounds`` rounds; the
medians are compared. Overhead = 1 - engine / bare.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_CONFIG = ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml"


def engine_round(cfg, steps: int) -> tuple[float, float, float]:
    """(images/s of the second epoch, its wall seconds, wall seconds of both epochs) of the Trainer.

    The second epoch is timed by the engine's own clock (its ``train_epoch`` event); the total is
    ``Trainer.fit``'s wall time from the first batch to the end, which also covers the per-epoch ``last.pth``
    checkpoint writes and the event writes between epochs.
    """
    from mapsage.events import EventWriter, read_events
    from mapsage.train import Trainer
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        ev = EventWriter(tmp)
        summary = Trainer(cfg, run_dir=tmp, events=ev, validate=False, show_bar=False).fit()
        records, _ = read_events(Path(tmp) / "events.jsonl")
    epochs = [r["values"] for r in records if r["type"] == "scalars" and r["split"] == "train_epoch"]
    second = epochs[1]
    return second["images_per_s"], second["epoch_time"], float(summary["wall_s"])


def bare_round(cfg, steps: int) -> tuple[float, float, float]:
    """(images/s of the second epoch, its wall seconds, wall seconds of both epochs) of a hand-written loop."""
    from segmentation_models_pytorch.losses import DiceLoss

    from mapsage.data import build_dataset
    from mapsage.models import build_model
    from mapsage.train.engine import collate, epoch_seed, seed_everything
    from mapsage.train.sampler import EpochSampler

    device = torch.device("cuda" if (cfg.runtime.device != "cpu" and torch.cuda.is_available()) else "cpu")
    seed_everything(epoch_seed(cfg.train.seed, -1, 0))
    model = build_model(cfg).to(device)
    train_set = build_dataset(cfg, cfg.dataset.train_split, train=True)
    bs = int(cfg.train.batch_size)
    sampler = EpochSampler(len(train_set), steps * bs, seed=cfg.train.seed)
    nw = int(cfg.train.num_workers)
    loader = torch.utils.data.DataLoader(train_set, batch_size=bs, sampler=sampler, num_workers=nw,
                                         collate_fn=collate, drop_last=True, pin_memory=device.type == "cuda",
                                         prefetch_factor=2 if nw else None)
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg.train.lr), weight_decay=float(cfg.train.weight_decay))
    dice = DiceLoss("multiclass", ignore_index=cfg.ignore_index)
    amp = None
    if device.type == "cuda" and cfg.train.amp:
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    model.train()
    wall = total = 0.0
    for epoch in range(2):
        sampler.set_epoch(epoch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True)
            y = batch["mask"].to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = model(x)
            logits = logits.float()
            loss = 0.7 * F.cross_entropy(logits, y, ignore_index=cfg.ignore_index) + 0.3 * dice(logits, y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        total += wall
    return steps * bs / wall, wall, total


def component_costs(cfg, repeats: int = 20) -> dict[str, float]:
    """Median milliseconds of one training step's compute and of each thing the engine adds to a step.

    The loop-level comparison above includes data loading and is as noisy as the machine; this measures the
    engine's additions directly, on the Trainer's own objects and one real batch: the step's compute (forward,
    the configured loss, backward, AdamW), then the EMA update, the grad-norm clip, the scheduler step, the loss's
    device-to-host copy with the NaN check, and a step event write.
    """
    from mapsage.events import EventWriter
    from mapsage.losses import Targets
    from mapsage.train import Trainer

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        events = EventWriter(tmp)
        tr = Trainer(cfg, run_dir=tmp, events=events, validate=False, show_bar=False)
        tr._setup_runtime()
        tr._setup_data()
        tr._setup_model()
        tr.sampler.set_epoch(0)
        batch = next(iter(tr.loader))
        images, masks = batch["image"].to(tr.device), batch["mask"].to(tr.device)
        targets = Targets(mask=masks, ignore_index=tr.loss_fn.ignore_index)
        tr.model.train()
        trainable = [p for p in tr.model.parameters() if p.requires_grad]
        holder = {}

        def step():
            tr.optimizer.zero_grad(set_to_none=True)
            loss, terms = tr.loss_fn(tr.model(images), targets, batch=None)
            loss.backward()
            holder["loss"], holder["terms"] = loss, terms
            tr.optimizer.step()

        def host_copy():
            loss, terms = holder["loss"], holder["terms"]
            host = torch.stack([loss.detach().float(), *(v.float() for v in terms.values())]).tolist()
            tr._check_finite(host[0], 0, 0, dict(zip(terms, host[1:])))

        costs = {"step compute (forward, loss, backward, AdamW)": _median_ms(step, max(3, repeats // 4))}
        if tr.ema is not None:
            costs["EMA update"] = _median_ms(lambda: tr.ema.update(tr.model), repeats)
        costs["grad-norm clip"] = _median_ms(
            lambda: float(torch.nn.utils.clip_grad_norm_(trainable, float(cfg.train.grad_clip or float("inf")))),
            repeats)
        costs["scheduler step"] = _median_ms(tr.scheduler.step, repeats)
        costs["loss to host + NaN check"] = _median_ms(host_copy, repeats)
        costs["step event write"] = _median_ms(
            lambda: events.scalars({"loss": 1.0, "ce": 0.7, "dice": 0.3, "lr": 1e-4, "grad_norm": 1.0},
                                   epoch=0, step=1, split="train"), repeats)
        return costs


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG))
    ap.add_argument("--steps", type=int, default=12, help="optimiser steps per epoch (two epochs per measurement)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--skip-components", action="store_true", help="skip the per-step cost breakdown")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)

    from mapsage.config import load_config
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [f"train.steps_per_epoch={args.steps}", "train.epochs=2", "train.early_stop.patience=0",
                 "train.accumulate=1", *args.overrides]
    cfg = load_config(args.config, overrides)
    dev = "cuda" if (cfg.runtime.device != "cpu" and torch.cuda.is_available()) else "cpu"
    from mapsage.runtime import tune_allocator
    print(f"config: {args.config}", flush=True)
    print(f"{tune_allocator(cfg.runtime.keep_freed_memory)} (both loops; runtime.keep_freed_memory)", flush=True)
    print(f"model {cfg.model.arch}/{cfg.model.encoder} (decoder {cfg.model.decoder_channels or 'default'}), "
          f"batch {cfg.train.batch_size}, crop {cfg.augment.crop_size}, workers {cfg.train.num_workers}, "
          f"device {dev}, threads {torch.get_num_threads()}, {args.steps} steps x 2 epochs per measurement, "
          f"EMA {'on' if cfg.train.ema.enabled else 'off'}, grad_clip {cfg.train.grad_clip}, "
          f"cutmix_p {cfg.augment.cutmix_p}, mixup_p {cfg.augment.mixup_p}", flush=True)
    eng, bare, eng_tot, bare_tot = [], [], [], []
    for r in range(args.rounds):
        e_ips, e_wall, e_tot = engine_round(cfg, args.steps)
        eng.append(e_ips)
        eng_tot.append(2 * args.steps * int(cfg.train.batch_size) / e_tot)
        print(f"round {r + 1}: engine {e_ips:7.2f} images/s ({e_wall:.1f} s; both epochs with checkpoints "
              f"{e_tot:.1f} s)", flush=True)
        b_ips, b_wall, b_tot = bare_round(cfg, args.steps)
        bare.append(b_ips)
        bare_tot.append(2 * args.steps * int(cfg.train.batch_size) / b_tot)
        print(f"round {r + 1}: bare   {b_ips:7.2f} images/s ({b_wall:.1f} s; both epochs {b_tot:.1f} s)", flush=True)
    e, b = statistics.median(eng), statistics.median(bare)
    et, bt = statistics.median(eng_tot), statistics.median(bare_tot)
    print(f"median, second epoch: engine {e:.2f} images/s, bare loop {b:.2f} images/s, "
          f"engine overhead {1.0 - e / b:+.1%}")
    print(f"median, both epochs incl. warm-up and per-epoch last.pth: engine {et:.2f} images/s, "
          f"bare loop {bt:.2f} images/s, engine overhead {1.0 - et / bt:+.1%}")
    if not args.skip_components:
        costs = component_costs(cfg)
        step_ms = next(iter(costs.values()))
        added = sum(list(costs.values())[1:])
        print("per-step costs (median ms, one real batch, no data loading):")
        for name, ms in costs.items():
            print(f"  {name:48s} {ms:9.2f} ms" + ("" if ms is step_ms else f"  ({ms / step_ms:6.2%} of the step)"))
        print(f"  engine additions in all {added:.2f} ms = {added / step_ms:.2%} of the step's compute")
    return 0


if __name__ == "__main__":
    sys.exit(main())
