"""Model budgets: parameter count and FLOPs at the crop size (``torch.utils.flop_counter``), and
``model.max_params`` (a launch of a bigger model is refused before training, naming both counts)."""
from __future__ import annotations

from ..errors import UserError


class ModelTooLarge(UserError):
    pass


def count_params(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def count_flops(model, size: tuple[int, int] | list[int], device=None) -> int:
    """FLOPs of one forward pass of one image at ``size`` (h, w); a multiply-add counts as 2 FLOPs (torch's
    convention). The model's training mode is restored."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, int(size[0]), int(size[1]), device=device)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)


def check_max_params(cfg, n_params: int) -> None:
    limit = cfg.model.max_params
    if limit is not None and n_params > float(limit):
        raise ModelTooLarge(
            f"model.max_params: {cfg.model.arch}/{cfg.model.encoder} has {n_params:,} parameters "
            f"({n_params / 1e6:.2f} M), over the limit of {int(float(limit)):,} ({float(limit) / 1e6:.2f} M); "
            f"choose a smaller model.encoder / model.decoder_channels or raise model.max_params")


def model_facts(cfg, flops: bool = True) -> dict:
    """Build ``cfg``'s model on the CPU (no pretrained weights) and count: ``model_params``, ``flops`` (one image
    at ``augment.crop_size``), ``flops_at`` ([h, w])."""
    import torch

    from .factory import build_model

    threads = torch.get_num_threads()
    try:
        model = build_model(cfg, load_pretrained=False)
        out = {"model_params": count_params(model)}
        if flops:
            size = list(cfg.augment.crop_size)
            out.update(flops=count_flops(model, size, torch.device("cpu")), flops_at=size)
        return out
    finally:
        torch.set_num_threads(threads)
