"""What every check receives: the config under test, where to put pictures, the event writer, and the parts of the
library the checks exercise. The parts are injectable so a test can hand a check a broken one (a metric that
averages absent classes, a model that cannot learn, a dataset whose transform moves only the image) and watch the
check fail; by default they are the library's own (``mapsage.data``, ``mapsage.metrics``, ``mapsage.models``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import Config
from ..events import EventWriter, NullEvents


def _default_dataset_factory(cfg: Config, split: str, train: bool = False):
    from ..data import build_dataset
    return build_dataset(cfg, split, train=train)


def _default_metric_factory(cfg: Config):
    """The metrics object exactly as training-time validation and final evaluation build it."""
    from ..infer.evaluate import make_metrics
    return make_metrics(cfg)


def _default_metric_class():
    from ..metrics import SegMetrics
    return SegMetrics


def _default_model_factory(cfg: Config):
    from ..models import build_model
    return build_model(cfg)


def _default_loss_factory(cfg: Config):
    """The training loss of the first loss phase, as the training engine builds and calls it: a callable
    ``(logits [B,C,H,W], mask [B,H,W]) -> scalar``."""
    from ..losses import Targets, build_loss

    loss = build_loss(cfg)
    loss.start_epoch(0, {})

    def call(logits, mask):
        total, _ = loss(logits, Targets(mask=mask, ignore_index=loss.ignore_index))
        return total

    call.__name__ = f"SegLoss[{' + '.join(f'{k} {v:g}' for k, v in loss.active_terms.items())}]"
    call.module = loss
    return call


@dataclass
class HealthRun:
    cfg: Config
    out_dir: Path                                    # pictures go here (``<run>/health``)
    run_dir: Optional[Path] = None                   # artifact paths are written relative to it
    events: EventWriter = field(default_factory=NullEvents)
    device: str = "cpu"
    progress: Callable[[str], None] = lambda message: None
    should_stop: Callable[[], bool] = lambda: False
    dataset_factory: Callable[..., Any] = _default_dataset_factory
    metric_factory: Callable[[Config], Any] = _default_metric_factory
    metric_class: Optional[Callable[..., Any]] = None    # the engine class for known-answer tests (SegMetrics)
    model_factory: Callable[[Config], Any] = _default_model_factory
    loss_factory: Callable[[Config], Any] = _default_loss_factory
    cache: dict = field(default_factory=dict)

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        if self.run_dir is not None:
            self.run_dir = Path(self.run_dir)

    def engine_class(self):
        """The metrics engine class under test (injected, or ``mapsage.metrics.SegMetrics``)."""
        return self.metric_class if self.metric_class is not None else _default_metric_class()

    # -- data -----------------------------------------------------------------------------------------------
    def splits(self) -> list[str]:
        """The split names of the dataset under test: train, val and (if configured) test, without repeats."""
        d = self.cfg.dataset
        out = []
        for s in (d.train_split, d.val_split, d.test_split):
            if s and s not in out:
                out.append(s)
        return out

    def dataset(self, split: str, train: bool = False):
        key = ("dataset", split, bool(train))
        if key not in self.cache:
            self.cache[key] = self.dataset_factory(self.cfg, split, train=train)
        return self.cache[key]

    # -- pictures -------------------------------------------------------------------------------------------
    def picture_path(self, name: str) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / name

    def rel(self, path: Path) -> str:
        """A path relative to the run folder where possible (the event format's convention)."""
        path = Path(path)
        if self.run_dir is not None:
            try:
                return str(path.resolve().relative_to(self.run_dir.resolve()))
            except ValueError:
                pass
        return str(path)

    def store_picture(self, path: Path, check: str, kind: str = "figure") -> str:
        rel = self.rel(path)
        self.events.artifact(kind, path, check=check)
        return rel
