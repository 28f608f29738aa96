"""The predict stage on LoveDA's Test layout (no masks), through the real job worker; submissions built and
validated (a good zip passes; a folder, a wrong size, a value 7 fail naming the file and the rule); adoption of
what a run's A/B stages kept; clear errors for empty sources."""
from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.deliver import checkpoint_run, loveda_test_layout

TEST_IDS = {"Test/Urban/4191", "Test/Rural/5167", "Test/Rural/5168"}


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """A predict job on the Test split of a Test-layout copy of the bundled tiles, run by the job worker."""
    import torch

    from runners.predict_spec import predict_spec
    from tests.support.app import run_in_process

    torch.set_num_threads(1)
    src = checkpoint_run("train_loveda_predict_fixture", overrides=["eval.mode=whole"])
    root = loveda_test_layout(tmp_path_factory.mktemp("loveda") / "LoveDA")
    config, overrides = predict_spec(src, "test", [f"dataset.root={root}", "runtime.threads=1",
                                                   "runtime.device=cpu", "predict.probabilities=uint8"])
    rid = run_in_process(str(config), overrides)
    return src, rid, root


@pytest.mark.slow
def test_predict_test_split_without_masks(predicted):
    import store
    from mapsage.workspace import run_dir

    src, rid, root = predicted
    pdir = run_dir(rid) / "predictions"
    manifest = json.loads((pdir / "manifest.json").read_text())
    assert manifest["complete"] and manifest["source"] == {"kind": "split", "name": "test", "split": "test",
                                                           "count": 3}
    assert {i["id"] for i in manifest["inputs"]} == TEST_IDS
    assert all(len(i["sha256"]) == 64 for i in manifest["inputs"])
    assert manifest["checkpoint"]["run_id"] == src and len(manifest["checkpoint"]["sha256"]) == 64
    assert manifest["identity"]["eval"]["mode"] == "whole" and manifest["identity"]["variant"] == "raw"
    for out in manifest["outputs"]:
        ids = np.asarray(Image.open(out["pred"]))
        assert ids.shape == (1024, 1024) and ids.dtype == np.uint8 and ids.max() <= 6
        colour = np.asarray(Image.open(out["color"]))
        assert colour.shape == (1024, 1024, 3)
        with np.load(out["prob"]) as z:
            probs = z["probs"]
            assert probs.dtype == np.uint8 and probs.shape == (7, 1024, 1024)
            assert float(z["scale"]) == pytest.approx(1 / 255)
        assert (probs.argmax(axis=0) == ids).mean() > 0.98
    # recorded in the store: the manifest artifact with its identity and hash, the predictions as artifacts
    store.ingest_all(wait=True)
    arts = store.artifacts(rid)
    man = arts[arts.kind == "manifest"]
    assert len(man) == 1
    meta = json.loads(man.iloc[0].meta_json)
    assert meta["inputs"] == 3 and meta["complete"] and len(meta["sha256"]) == 64
    assert set(arts[arts.kind == "pred"].tile) == TEST_IDS
    assert store.run(rid)["parent_run"] == src


def _zip(path: Path, files: dict[str, np.ndarray], folder: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        if folder:
            zf.writestr(folder + "/", b"")
        for name, arr in files.items():
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            zf.writestr((folder + "/" if folder else "") + name, buf.getvalue())
    return path


@pytest.mark.slow
def test_submit_builds_a_valid_loveda_zip_and_validate_catches_broken_ones(predicted, tmp_path, capsys):
    from runners.cli import main

    src, rid, root = predicted
    out = tmp_path / "sub.zip"
    assert main(["submit", src, "--format", "loveda", "--out", str(out)]) == 0
    assert "valid loveda submission (3 files)" in capsys.readouterr().out
    with zipfile.ZipFile(out) as zf:
        names = sorted(zf.namelist())
        assert names == ["4191.png", "5167.png", "5168.png"]           # at the root, named by the Test ids
        for n in names:
            arr = np.asarray(Image.open(io.BytesIO(zf.read(n))))
            assert arr.shape == (1024, 1024) and arr.dtype == np.uint8 and arr.max() <= 6
    assert main(["submit", "validate", str(out), "--against", str(root / "Test")]) == 0
    assert main(["submit", "validate", str(out), "--against", rid]) == 0
    capsys.readouterr()

    good = {n: np.zeros((1024, 1024), np.uint8) for n in ("4191.png", "5167.png", "5168.png")}
    folder = _zip(tmp_path / "folder.zip", good, folder="submission")
    assert main(["submit", "validate", str(folder), "--against", str(root / "Test")]) == 1
    text = capsys.readouterr().out
    assert "submission/4191.png: layout" in text and "zip root" in text

    small = dict(good, **{"5167.png": np.zeros((512, 1024), np.uint8)})
    assert main(["submit", "validate", str(_zip(tmp_path / "size.zip", small)), "--against", str(root / "Test")]) == 1
    assert "5167.png: size - is 1024x512 (WxH); it must be 1024x1024" in capsys.readouterr().out

    seven = dict(good)
    seven["5168.png"] = good["5168.png"].copy()
    seven["5168.png"][10, 10] = 7
    assert main(["submit", "validate", str(_zip(tmp_path / "seven.zip", seven)), "--against", str(root / "Test")]) == 1
    assert "5168.png: values - holds value(s) [7]; only 0..6 are allowed" in capsys.readouterr().out

    missing = {k: v for k, v in good.items() if k != "4191.png"}
    assert main(["submit", "validate", str(_zip(tmp_path / "missing.zip", missing)), "--against",
                 str(root / "Test")]) == 1
    assert "4191.png: count" in capsys.readouterr().out
    rgb = dict(good, **{"4191.png": np.zeros((1024, 1024, 3), np.uint8)})
    assert main(["submit", "validate", str(_zip(tmp_path / "rgb.zip", rgb))]) == 1
    text = capsys.readouterr().out
    assert "4191.png: channels" in text and "1796" in text                 # and the full-split count rule


def test_submit_without_test_predictions_says_what_to_run(tmp_path, capsys):
    from runners.cli import main

    rid = checkpoint_run("train_no_predictions_fixture")
    assert main(["submit", rid, "--format", "loveda"]) == 2
    assert f"mapsage predict {rid} --on test" in capsys.readouterr().err
    assert main(["submit", rid, "--format", "isprs"]) == 2
    assert "known: loveda" in capsys.readouterr().err


def _child_run(name: str, parent: str, kind: str, rows: list[dict], config_overrides=None) -> None:
    from mapsage.config import load_config, save_resolved
    from mapsage.events import EventWriter
    from mapsage.workspace import run_dir
    from tests.support.deliver import LOVEDA_CONFIG

    rdir = run_dir(name)
    save_resolved(load_config(LOVEDA_CONFIG, config_overrides or []), rdir)
    ev = EventWriter(rdir)
    ev.emit("run_info", name=name, kind=kind, parent_run=parent, created_at=time.time())
    for r in rows:
        ev.emit("ab", **r)
    ev.status("succeeded")


def test_predictor_adopts_what_the_ab_runs_kept():
    from mapsage.deliver.model_source import load_predictor

    src = checkpoint_run("train_adopt_fixture")
    assert load_predictor(src).variant == "raw"
    _child_run("tta-ab_adopt_fixture", src, "tta_ab", [
        {"ab_kind": "tta", "variant": "tta=off", "baseline": "tta=off", "decision": "baseline", "gain": 0.0},
        {"ab_kind": "tta", "variant": "tta=flip", "baseline": "tta=off", "decision": "keep", "gain": 1.2,
         "details": {"tta": {"name": "flip", "scales": [1.0], "hflip": True, "vflip": False}}},
        {"ab_kind": "tta", "variant": "tta=ms", "baseline": "tta=off", "decision": "drop", "gain": 0.3,
         "details": {"tta": {"name": "ms", "scales": [0.75, 1.0], "hflip": True, "vflip": False}}}])
    _child_run("evaluate_adopt_fixture", src, "evaluate", [
        {"ab_kind": "post", "variant": "raw+post", "baseline": "raw", "decision": "keep", "gain": 0.4}],
        config_overrides=["post.enabled=true", "post.min_area={building: 30}"])
    p = load_predictor(src)
    assert p.eval_cfg.tta.hflip and list(p.eval_cfg.tta.scales) == [1.0]
    assert p.post is not None and p.post.describe(p.classes)["min_area"] == {"building": 30}
    assert p.variant == "raw+tta=flip+post"
    assert [a["what"] for a in p.adopted] == ["tta", "post"]
    assert load_predictor(src, adopt=False).variant == "raw"


def test_sources_name_the_problem(tmp_path):
    from mapsage.config import load_config
    from mapsage.deliver.sources import resolve_source
    from mapsage.errors import DataError
    from tests.support.deliver import LOVEDA_CONFIG

    cfg = load_config(LOVEDA_CONFIG)
    with pytest.raises(DataError, match=r"predict.source: split 'test' of loveda-samples has no samples"):
        resolve_source(cfg, "test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty holds no images"):
        resolve_source(cfg, str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"'nowhere' is not a split of loveda-samples"):
        resolve_source(cfg, "nowhere")
    src = resolve_source(cfg, str(Path(LOVEDA_CONFIG).parents[2] / "tests" / "data" / "loveda" / "Train"))
    assert src.kind == "folder" and [i.id for i in src.inputs] == ["Rural/images_png/0", "Rural/images_png/1"]
