"""Files from strangers are data: a crafted checkpoint whose unpickling would create a file is refused, with the file
named, through every entry point that loads checkpoints or weights (pretrained, resume, evaluate, teacher, health,
and `mapsage run` at launch), and the file it would create never appears. Naming the file in runtime.trust_pickle
is the only way to load it, which proves the crafted file really executes code."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from conftest_train import one_thread, tiny_cfg  # noqa: F401 - fixture
from mapsage.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")


class _Payload:
    """Unpickling this object runs ``touch MARKER`` (what an attacker's file would do with worse commands)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture
def crafted(tmp_path) -> tuple[Path, Path]:
    """(a checkpoint-looking .pth with the payload, the marker file its unpickling would create)."""
    marker = tmp_path / "PWNED"
    cfg = tiny_cfg()
    from mapsage.config import to_dict
    from mapsage.models import build_model

    state = build_model(cfg, load_pretrained=False).state_dict()
    path = tmp_path / "evil" / "checkpoints" / "best.pth"
    path.parent.mkdir(parents=True)
    torch.save({"model": state, "ema": None, "config": to_dict(cfg), "best": {"raw": 0.9},
                "state_dict": state, "meta": _Payload(marker)}, path)
    return path, marker


def _refused(exc_info, path: Path) -> None:
    text = str(exc_info.value)
    assert str(path) in text and "refused to load" in text and "runtime.trust_pickle" in text, text
    assert "os.system" in text or "posix.system" in text, text           # names what it wanted to call


def test_pretrained_weights(crafted):
    from mapsage.models import build_model

    path, marker = crafted
    with pytest.raises(CheckpointError) as exc:
        build_model(tiny_cfg(f"model.pretrained={path}"))
    _refused(exc, path)
    assert "model.pretrained" in str(exc.value) and not marker.exists()


def test_resume(crafted, tmp_path):
    from mapsage.events import EventWriter
    from mapsage.train import Trainer

    path, marker = crafted
    rdir = tmp_path / "run"
    trainer = Trainer(tiny_cfg("train.epochs=1"), run_dir=rdir, events=EventWriter(rdir), validate=False,
                      show_bar=False)
    with pytest.raises(CheckpointError) as exc:
        trainer.fit(resume_from=path)
    _refused(exc, path)
    assert not marker.exists()


def test_evaluate_and_best_checkpoint_choice(crafted):
    from mapsage.infer.checkpoints import best_checkpoint, load_checkpoint_model

    path, marker = crafted
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint_model(str(path))
    _refused(exc, path)
    # a run folder with two best files: choosing between them reads their scores, safely too
    ema = path.with_name("best_ema.pth")
    ema.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError) as exc:
        best_checkpoint(path.parent.parent)
    assert "refused to load" in str(exc.value) and not marker.exists()


def test_teacher_timm_weights_and_workbench_checkpoint(crafted):
    from mapsage.distill import build_teacher

    path, marker = crafted
    for kind in ("timm", "workbench"):
        cfg = tiny_cfg("distill.enabled=true", f"distill.teacher.kind={kind}", f"distill.teacher.weights={path}",
                       "distill.teacher.model=vit_small_patch14_dinov2", "distill.teacher.img_size=56",
                       "distill.teacher.model_kwargs={embed_dim: 32, depth: 2, num_heads: 2}")
        with pytest.raises(CheckpointError) as exc:
            build_teacher(cfg, "cpu")
        _refused(exc, path)
    assert not marker.exists()


def test_health_reads_the_config_of_a_checkpoint(crafted):
    from mapsage.health.runref import training_config_under_test

    path, marker = crafted
    cfg = tiny_cfg("stage.kind=health", "stage.plan_stage=0", f"stage.checkpoint={path}")
    with pytest.raises(CheckpointError) as exc:
        training_config_under_test(cfg)
    _refused(exc, path)
    assert not marker.exists()


def test_mapsage_run_refuses_at_launch_and_the_opt_in_names_the_file(crafted, tmp_path, monkeypatch, capsys):
    from conftest_train import LOVEDA_CFG
    from mapsage import safeload
    from runners import cli

    path, marker = crafted
    ws = tmp_path / "ws"
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(ws))
    code = cli.main(["run", str(LOVEDA_CFG), "--set", f"model.pretrained={path}", "--gpus", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(path) in err and "refused to load" in err
    assert not marker.exists() and not (ws / "runs").exists() or not any((ws / "runs").iterdir())
    # the opt-in: a file named in runtime.trust_pickle is unpickled -- and its payload runs
    monkeypatch.setattr(safeload, "_trusted", set())
    safeload.trust([path])
    obj = safeload.load_file(path)
    assert marker.exists() and isinstance(obj, dict) and "model" in obj
    assert safeload.trusted(path) and not safeload.trusted(path.with_name("other.pth"))
    json.dumps(str(path))
