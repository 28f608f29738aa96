"""Files from strangers are data: a crafted checkpoint whose unpickling would create a file is refused, with the file
and the call named, through every entry point that loads checkpoints or weights (pretrained, resume, evaluate,
teacher, health, and `mapsage run` at launch), and the file it would create never appears. Objects other tools keep
beside their weights load as inert placeholders (never imported, never run) and the weights load; numpy arrays load
as arrays; a file that cannot be read as data is refused. No option unpickles a file in full."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mapsage.errors import CheckpointError
from tests.support.train import LOVEDA_CFG, tiny_cfg

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
    assert str(path) in text and "refused to load" in text, text
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


def test_mapsage_run_refuses_at_launch_in_one_line(crafted, tmp_path, monkeypatch, capsys):
    from runners import cli

    path, marker = crafted
    ws = tmp_path / "ws"
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(ws))
    code = cli.main(["run", str(LOVEDA_CFG), "--set", f"model.pretrained={path}", "--gpus", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(path) in err and "refused to load" in err
    assert "posix.system" in err or "os.system" in err
    assert not marker.exists() and not (ws / "runs").exists() or not any((ws / "runs").iterdir())


def _touch(marker: str) -> dict:
    """A function of an ordinary module: what unpickling would call to rebuild :class:`_History`."""
    Path(marker).touch()
    return {}


class _History:
    """Stands for the objects other tools keep beside the weights (mmengine's HistoryBuffer, Lightning's
    hyper-parameters): rebuilding it would call :func:`_touch`, i.e. run code of the module the file names."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


def test_foreign_objects_beside_the_weights_are_read_as_inert_placeholders(tmp_path):
    """An mmseg-style checkpoint: weights plus a history object, hyper-parameters and numpy arrays in ``meta``. The
    weights load into the model; numpy arrays load as arrays; the other objects become placeholders that name what
    the file asked for, and the code they would have run never runs; a warning names them."""
    from mapsage.models import build_model
    from mapsage.safeload import Inert, load_file

    marker = tmp_path / "RAN"
    cfg = tiny_cfg()
    state = build_model(cfg, load_pretrained=False).state_dict()
    path = tmp_path / "iter_160000.pth"
    torch.save({"state_dict": state, "meta": {"history": _History(marker), "hparams": argparse.Namespace(lr=6e-5),
                                              "seed": np.int64(7), "class_weight": np.arange(3.0)}}, path)
    with pytest.warns(UserWarning, match=r"kept argparse\.Namespace, \S*_touch as inert placeholders"):
        obj = load_file(path)
    meta = obj["meta"]
    assert isinstance(meta["history"], Inert) and meta["history"].name.endswith("._touch")
    assert meta["history"].args == (str(marker),)                  # the call it wanted, kept as data
    assert isinstance(meta["hparams"], Inert) and meta["hparams"].name == "argparse.Namespace"
    assert meta["seed"] == 7 and np.array_equal(meta["class_weight"], np.arange(3.0))
    assert not marker.exists()
    with pytest.warns(UserWarning, match="inert placeholders"):
        model = build_model(tiny_cfg(f"model.pretrained={path}"))
    got = model.state_dict()
    encoder = [k for k in state if ".encoder." in k]                 # pretrained weights: the encoder's
    assert len(encoder) > 100 and all(torch.equal(got[k], state[k]) for k in encoder)
    assert not marker.exists()


def test_a_file_that_cannot_be_read_as_data_is_refused(tmp_path):
    """A legacy (pre-zip) torch file with foreign objects cannot be listed without unpickling it: refused, naming
    the file; so is a file of objects without any tensor."""
    from mapsage.safeload import load_file

    marker = tmp_path / "RAN"
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2), "meta": _History(marker)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"legacy\.pth: refused to load: .*full unpickling"):
        load_file(legacy)
    empty = tmp_path / "objects.pth"
    torch.save({"meta": _History(marker)}, empty)
    with pytest.raises(CheckpointError, match=r"objects\.pth: refused to load: .*holds no tensors"):
        load_file(empty)
    assert not marker.exists()
