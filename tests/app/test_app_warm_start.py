"""Run detail's "Fine-tune at a new crop size": on a succeeded training run one click (through the health gate's
confirm step, as on the Plan board) queues a training run whose resolved config starts from that run's weights
(``model.init_from``) at the new crop size, the same config otherwise, and records the run as its parent."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.app import DEMO, QUICK, run_in_process

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")


@pytest.fixture
def finished_run(tmp_workspace, monkeypatch):
    """A real, finished 1-epoch demo run at 128 px crops in a fresh workspace; the scheduler is held so that a
    queued run stays queued (no process is started)."""
    import torch

    import store
    from runners import scheduler

    threads = torch.get_num_threads()
    try:
        rid = run_in_process(DEMO, [*QUICK, "train.epochs=1", "stage.name=warm-start-source"])
    finally:
        torch.set_num_threads(threads)
    store.ingest_all()
    monkeypatch.setattr(scheduler, "schedule", lambda *a, **k: None)
    return rid


def _texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for e in [*at.caption, *at.warning, *at.success, *at.error, *at.markdown])


def test_one_click_queues_a_warm_started_run_at_the_new_crop(finished_run, tmp_workspace):
    from mapsage.config import load_config
    from mapsage.workspace import run_dir

    rid = finished_run
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.run()
    at.query_params["run"] = rid
    at.switch_page("views/run_detail.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    crop = [n for n in at.number_input if n.key == f"warm_crop:{rid}"]
    assert crop and crop[0].value == 256                      # trained at 128 px: twice that by default
    go = [b for b in at.button if b.key == f"warm_go:{rid}"]
    assert go and go[0].label == "Fine-tune at 256 px"
    assert f"model.init_from={rid}" in _texts(at)
    before = {p.name for p in (tmp_workspace / "runs").iterdir()}
    go[0].click().run()
    assert not at.exception, [e.message for e in at.exception]
    # no health run on the demo dataset: the health gate asks first, as for a Plan board launch
    assert "no health run on dataset dubai" in " ".join(str(w.value) for w in at.warning)
    assert {p.name for p in (tmp_workspace / "runs").iterdir()} == before
    [b for b in at.button if b.label == "Launch anyway"][0].click().run()
    assert not at.exception, [e.message for e in at.exception]
    new = sorted({p.name for p in (tmp_workspace / "runs").iterdir()} - before)
    assert len(new) == 1 and new[0].startswith("warm-start-source-ft256_")
    assert any(new[0] in str(s.value) for s in at.success)
    cfg = load_config(run_dir(new[0]) / "config.yaml", [])
    src = load_config(run_dir(rid) / "config.yaml", [])
    assert cfg.model.init_from == rid and list(cfg.augment.crop_size) == [256, 256]
    assert cfg.stage.kind == "train" and cfg.train.lr == src.train.lr and cfg.train.epochs == src.train.epochs
    assert cfg.loss == src.loss and cfg.model.encoder == src.model.encoder and cfg.dataset == src.dataset
    info = [json.loads(line) for line in (run_dir(new[0]) / "events.jsonl").read_text().splitlines()
            if '"run_info"' in line][0]
    assert info["parent_run"] == rid and info["parent_relation"] == "warm_start"


def test_default_crop_and_overrides():
    from app.widgets.warm_start import default_crop, overrides_for
    from mapsage.config import load_config

    assert default_crop(512) == 768 and default_crop(256) == 512 and default_crop(1024) == 1536
    cfg = load_config(ROOT / DEMO, ["eval.mode=slide", "eval.tile=[256, 256]", "eval.stride=[192, 192]"])
    got = overrides_for("run-a", cfg, 512)
    assert got == ["model.init_from=run-a", "augment.crop_size=[512, 512]", "augment.crop_schedule=[]",
                   "augment.crop_sizes=[]", "eval.tile=[512, 512]", "eval.stride=[384, 384]"]
    whole = load_config(ROOT / DEMO, ["eval.mode=whole"])
    assert overrides_for("run-a", whole, 768)[-1] == "augment.crop_sizes=[]"     # windows untouched
