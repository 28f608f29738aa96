"""The plan's stages and their templates under ``configs/stage*/`` (listed by :func:`runners.api.list_templates`).

Each template is also resolved with :func:`mapsage.config.load_config`, so what the board shows (title, kind,
dataset, model, run name) and the knobs it offers start from exactly what a launch would resolve. A template that
fails to load is listed with its error instead of hiding the whole board."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mapsage.config import CONFIGS_DIR, PROJECT_ROOT, Config, load_config
from mapsage.registries import CHECKPOINT_REQUIRED_KINDS
from runners import api

STAGES: dict[int, tuple[str, str]] = {
    0: ("Health checks", "The seven checks and the overfit sanity run; must pass before any training is trusted."),
    1: ("Baselines", "Reference models (SegFormer-B2 ImageNet 512, CE 0.7 + Dice 0.3, 50 epochs) and tracks; the "
                     "image-classification track (task: classification, configs/stage1_classification/)."),
    2: ("Losses, augmentation, distillation", "Loss schedules (Lovász from epoch 20), OHEM, class weights, "
                                                "multi-scale + CutMix/MixUp, teacher→student distillation."),
    3: ("Inference and TTA", "Sliding window, TTA kept only where it gains ≥ +0.8 mIoU, small-object filter."),
    4: ("Refinement and ensembles", "SAM prompts + DenseCRF, adopted only where Boundary IoU gains ≥ +1.0; "
                                    "weighted ensembles."),
}

DEMO_DATASET_CONFIG = CONFIGS_DIR / "_base_" / "datasets" / "dubai.yaml"


@dataclass
class Template:
    path: Path                       # absolute
    rel: str                         # relative to the project root, as passed to `mapsage run`
    plan_stage: int
    kind: str
    title: str
    description: str
    dataset: str
    run_name: str
    cfg: Optional[Config] = None
    error: Optional[str] = None
    needs_checkpoint: bool = False
    summary: dict = field(default_factory=dict)   # the experiment table's descriptive columns

    @property
    def is_demo(self) -> bool:
        """A template on the bundled demo dataset (the Dubai set): it runs from a plain clone."""
        return self.cfg is not None and self.cfg.dataset.name == "dubai"

    @property
    def label(self) -> str:
        return self.title or Path(self.rel).stem


def discover(configs_dir: Path = CONFIGS_DIR) -> dict[int, list[Template]]:
    """Templates grouped by plan stage 0..4 (every stage present, possibly empty), demo templates first.

    The list is the runner's (:func:`runners.api.list_templates`); each template is also resolved into a typed
    :class:`Config` here, because the launch knobs start from its values."""

    board: dict[int, list[Template]] = {s: [] for s in STAGES}
    for item in api.list_templates(configs_dir):
        path = Path(item["abs_path"]).resolve()
        try:
            rel = str(path.relative_to(PROJECT_ROOT))
        except ValueError:
            rel = str(path)
        cfg, error = None, item.get("error")
        if error is None:
            try:
                cfg = load_config(path)
            except Exception as exc:  # noqa: BLE001 - listed with its error
                error = f"{type(exc).__name__}: {exc}"
        kind = item.get("kind") or "?"
        stage = item.get("plan_stage")
        t = Template(
            path=path, rel=rel, plan_stage=int(stage) if stage is not None else 1, kind=kind,
            title=item.get("title") or path.stem, description=item.get("description") or "",
            dataset=cfg.dataset.name if cfg else "?", run_name=item.get("run_name") or "", cfg=cfg, error=error,
            needs_checkpoint=bool(cfg) and kind in CHECKPOINT_REQUIRED_KINDS and not cfg.stage.checkpoint
            or bool(cfg) and kind == "ensemble" and not cfg.ensemble.members,
            summary=dict(item.get("summary") or {}),
        )
        board.setdefault(t.plan_stage, []).append(t)
    for items in board.values():
        items.sort(key=lambda t: (not t.is_demo, t.error is not None, t.rel))
    return board


def signature(configs_dir: Path = CONFIGS_DIR) -> tuple:
    """Changes when any config file changes (a cache key for :func:`discover`)."""
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(configs_dir.rglob("*.yaml")))


def demo_plan(board: dict[int, list[Template]]) -> list[Template]:
    """The demo plan's first step: the bundled-dataset templates of stages 0 and 1 that start without a
    checkpoint (health checks, then the baseline). Later stages need the baseline's checkpoint, so they are
    launched from the Plan board once it exists."""
    out = []
    for stage in (0, 1):
        for t in board.get(stage, []):
            if t.is_demo and t.error is None and not t.needs_checkpoint:
                out.append(t)
    return out
