"""What a stage entry point receives. Stage code lives in ``mapsage`` and never imports ``runners``.

Every stage kind is a function ``run(ctx: StageContext) -> None`` (see ``runners/stages.py`` for the registry).
It writes its numbers through ``ctx.events``, reports progress with ``ctx.progress(...)``, checks
``ctx.should_stop()`` at safe points (a cancel sets it; the stage saves what it has and returns), and resumes from
``ctx.resume_from`` (a checkpoint path) when given. The runner writes the final ``status`` record."""
from __future__ import annotations

import importlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .config import Config
from .events import EventWriter
from .progress import Tracker


@dataclass
class StageContext:
    cfg: Config
    run_id: str
    run_dir: Path
    events: EventWriter
    resume_from: Optional[Path] = None
    rank: int = 0
    world_size: int = 1
    heartbeat_every_s: float = 5.0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _last_beat: float = field(default=0.0, repr=False)
    _tracker: Optional[object] = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def request_stop(self) -> None:
        self._stop.set()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def progress(self, force: bool = False, **progress) -> None:
        """A heartbeat with progress (epoch, epochs, step, steps, frac, phase, message); rate-limited. The
        fraction is kept monotonic and ETA / rate are added (:class:`mapsage.progress.Tracker`)."""

        if self._tracker is None:
            self._tracker = Tracker()
        progress = self._tracker.update(progress)
        now = time.time()
        if self.is_main and (force or now - self._last_beat >= self.heartbeat_every_s):
            self._last_beat = now
            self.events.heartbeat(**progress)

    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def predictions_dir(self) -> Path:
        return self.run_dir / "predictions"

    @property
    def pid(self) -> int:
        return os.getpid()


def entry_point(target: str) -> Callable:
    """The stage function a ``"package.module:function"`` target names, imported on first use (the form of
    ``runners/stages.py``); lets a lower package hand a run to a higher one without importing it."""
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)
