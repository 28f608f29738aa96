"""Stochastic weight averaging (``train.swa``) with ``torch.optim.swa_utils``.

From ``train.swa.start_epoch`` (default: the last quarter of the run) the weights at the end of every epoch are
averaged with equal weight (``AveragedModel``). After training, the average's BatchNorm statistics -- which an
average of weights does not have -- are recomputed by ``swa_utils.update_bn`` over ``train.swa.bn_batches`` training
batches (default: one epoch's worth); the engine then validates it as variant ``swa`` and saves ``swa.pth``.
The LR schedule is the run's own (``train.lr_schedule``; ``constant`` or ``cosine_restarts`` suit SWA).
"""
from __future__ import annotations

import itertools
from typing import Iterable, Optional

import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, update_bn

from ..config import ConfigError


def swa_start(cfg) -> int:
    s = cfg.train.swa.start_epoch
    epochs = int(cfg.train.epochs)
    return int(s) if s is not None else max(0, epochs - max(1, epochs // 4))


class Swa:
    def __init__(self, model: nn.Module, cfg):
        self.start = swa_start(cfg)
        if self.start >= int(cfg.train.epochs):
            raise ConfigError(f"train.swa.start_epoch {self.start} is not before train.epochs "
                              f"({cfg.train.epochs}); nothing would be averaged")
        self.avg = AveragedModel(model, use_buffers=False)
        self.epochs: list[int] = []
        self.bn_batches = cfg.train.swa.bn_batches

    @property
    def module(self) -> nn.Module:
        return self.avg.module

    def after_epoch(self, model: nn.Module, epoch: int) -> bool:
        if epoch < self.start:
            return False
        self.avg.update_parameters(model)
        self.epochs.append(int(epoch))
        return True

    def has_bn(self) -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.avg.modules())

    def update_bn(self, images: Iterable[torch.Tensor], device, max_batches: Optional[int] = None) -> int:
        """Recompute BatchNorm statistics of the average from ``images`` batches; returns the batches used."""
        n = [0]

        def counted():
            for x in (itertools.islice(images, max_batches) if max_batches else images):
                n[0] += 1
                yield x
        update_bn(counted(), self.avg, device=device)
        return n[0]

    def state_dict(self) -> dict:
        return self.avg.module.state_dict()
