"""Export for deployment on real demo tiles with workbench checkpoints: ONNX FP32 parity through the workbench's
inference path, TorchScript loaded where the project cannot be imported, INT8 and the export stage's A/B rows,
and the errors a user can fix."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from mapsage.config import load_config
from mapsage.config.schema import ExportCfg
from mapsage.events import EventWriter, read_events
from mapsage.stage import StageContext
from tests.support.infer import PROJECT_ROOT, fake_finished_run, write_checkpoint

pytest.importorskip("onnxruntime")

TEMPLATE = PROJECT_ROOT / "configs" / "stage1_baselines" / "demo_segformer_mit-b0_dubai.yaml"
EXPORT_TEMPLATE = PROJECT_ROOT / "configs" / "stage4_refine_ensemble" / "export_demo_segformer_mit-b0_dubai.yaml"
# The demo baseline with Tile 2 (nine 509 x 544 parts) as its validation tiles, two of them scored: real data,
# small enough for a 2-core test run.
FAST = ["dataset.split.assign={train: [Tile 1, Tile 3, Tile 4, Tile 5, Tile 6, Tile 7, Tile 8], val: [Tile 2]}",
        "eval.mode=whole", "eval.max_tiles=2", "train.num_workers=0"]


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture
def cfg():
    return load_config(TEMPLATE, FAST)


@pytest.fixture
def trained_run(tmp_workspace, cfg):
    """A finished demo-baseline run with best.pth and best_ema.pth (EMA scored higher, so it is chosen)."""
    folder = fake_finished_run(tmp_workspace, "train-x", cfg, str(TEMPLATE), ts=100.0)
    for name in ("best.pth", "best_ema.pth"):
        write_checkpoint(cfg, folder / "checkpoints" / name, seed=1, best={"raw": 0.30, "ema": 0.35}, ema_seed=2)
    return folder


def _model_and_data(cfg, trained_run):
    from mapsage.data import build_dataset
    from mapsage.train.checkpoint import load_for_inference

    model, ckpt_cfg = load_for_inference(trained_run / "checkpoints" / "best_ema.pth", weights="ema")
    return model, ckpt_cfg, build_dataset(cfg, "val", train=False)


def _export(model, cfg, dataset, out_dir, targets, **ecfg_kw):
    from mapsage.export import export_targets
    from mapsage.export.core import example_input

    ecfg = ExportCfg(targets=list(targets), calib_tiles=2, calib_size=[128, 128], **ecfg_kw)
    example = example_input(dataset[0]["image"], (256, 256), 32)
    return export_targets(model, cfg, out_dir, targets, ecfg, source={"run_id": "train-x"}, example=example)


# ----------------------------------------------------------------------------------------------------------------
# ONNX FP32 parity, through the workbench's inference and evaluation code


def test_onnx_fp32_parity_on_demo_tiles(tmp_path, cfg, trained_run):
    from mapsage.export import load_exported, read_sidecar
    from mapsage.export.parity import parity_pass
    from mapsage.infer import evaluate

    model, ckpt_cfg, ds = _model_and_data(cfg, trained_run)
    [f] = _export(model, ckpt_cfg, ds, tmp_path / "export", ["onnx:fp32"])
    side = read_sidecar(f.path)
    assert side["classes"] == list(cfg.dataset.classes) and side["input"]["multiple_of"] == 32
    assert side["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert side["source"]["run_id"] == "train-x" and side["sha256"]
    onnx_model = load_exported(f.path, threads=1)
    assert onnx_model.num_classes == len(cfg.dataset.classes)
    # the graph carries no boundary head / training outputs: one output, logits [B,C,H,W], dynamic axes
    import onnx
    g = onnx.load(str(f.path)).graph
    assert [o.name for o in g.output] == ["logits"]
    dims = [d.dim_param or d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "batch" and dims[2] == "height" and dims[3] == "width"

    par = parity_pass({"pt": model, "onnx": onnx_model}, ds, cfg, eval_cfg=cfg.eval, reference="pt", max_tiles=2)
    p = par.parity["onnx"]
    d_miou = 100 * (par.outcomes["onnx"].result.miou - par.outcomes["pt"].result.miou)
    assert p.tiles == 2 and p.pixels == 2 * 509 * 544
    assert p.agreement >= 0.999, p.to_dict()
    assert abs(d_miou) <= 0.05
    assert p.max_abs_logit < 1e-3
    # the evaluation code path runs the exported model unchanged (sliding window, odd tile sizes padded)
    slide = load_config(TEMPLATE, FAST + ["eval.mode=slide", "eval.tile=[256,256]", "eval.stride=[192,192]"])
    r_onnx = evaluate(onnx_model, ds, slide, split="val", variant="onnx", device="cpu", max_tiles=2, show_bar=False)
    r_pt = evaluate(model, ds, slide, split="val", variant="pt", device="cpu", max_tiles=2, show_bar=False)
    assert abs(r_onnx.miou - r_pt.miou) * 100 <= 0.05
    assert r_onnx.confusion.sum() == r_pt.confusion.sum() > 0


# ----------------------------------------------------------------------------------------------------------------
# TorchScript in a process that cannot import the project


CHILD = textwrap.dedent("""
    import importlib.abc, os, sys
    # no folder that holds the project's packages (the checkout, an editable install's source) stays on the path
    sys.path[:] = [p for p in sys.path if p and not os.path.isdir(os.path.join(p, "mapsage"))]

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("mapsage", "segmentation_models_pytorch", "timm", "runners", "store", "app"):
                raise ModuleNotFoundError(name)
    sys.meta_path.insert(0, Block())
    try:
        import mapsage  # noqa
        raise SystemExit("the project is importable")
    except ModuleNotFoundError:
        pass
    import numpy as np, torch
    m = torch.jit.load(sys.argv[2], map_location="cpu").eval()
    x = torch.from_numpy(np.load(sys.argv[3]))
    with torch.no_grad():
        np.save(sys.argv[4], m(x).numpy())
    print("ok", sorted(k for k in sys.modules if k.split(".")[0] in ("mapsage", "segmentation_models_pytorch")))
""")


def test_torchscript_runs_in_a_process_without_the_project(tmp_path, cfg, trained_run):
    from mapsage.export.core import DeployGraph

    model, ckpt_cfg, ds = _model_and_data(cfg, trained_run)
    [f] = _export(model, ckpt_cfg, ds, tmp_path / "export", ["torchscript:fp32"])
    # an input of another batch and size than the one traced (dynamic axes survive tracing)
    x = torch.cat([ds[0]["image"][:, :288, :320], ds[1]["image"][:, :288, :320]]).view(2, 3, 288, 320)
    np.save(tmp_path / "x.npy", x.numpy())
    (tmp_path / "child.py").write_text(CHILD, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-I", str(tmp_path / "child.py"), str(PROJECT_ROOT), str(f.path),
                           str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok []")
    with torch.no_grad():
        ref = DeployGraph(model)(x).numpy()
    out = np.load(tmp_path / "y.npy")
    assert out.shape == ref.shape == (2, len(cfg.dataset.classes), 288, 320)
    assert np.abs(out - ref).max() < 1e-3
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.999


# ----------------------------------------------------------------------------------------------------------------
# the export stage: files, sidecars, parity, speed and A/B rows


@pytest.mark.slow
def test_export_stage_rows_decisions_and_store(tmp_path, tmp_workspace, cfg, trained_run):
    from mapsage.export.stage import run

    ecfg = load_config(EXPORT_TEMPLATE, FAST + [
        "stage.checkpoint=train-x", "export.targets=[onnx:fp32, onnx:int8]", "export.calib_tiles=2",
        "export.calib_size=[128,128]", "export.speed_size=[128,128]", "export.speed_repeats=1",
        "export.speed_threads=1", "runtime.device=cpu"])
    rdir = tmp_workspace / "runs" / "export-x"
    ctx = StageContext(cfg=ecfg, run_id="export-x", run_dir=rdir, events=EventWriter(rdir))
    run(ctx)
    recs = read_events(rdir / "events.jsonl")[0]
    ab = [r for r in recs if r["type"] == "ab"]
    assert [r["variant"] for r in ab] == ["export=pytorch", "export=onnx-fp32", "export=onnx-int8"]
    assert {r["ab_kind"] for r in ab} == {"export"} and ab[0]["decision"] == "baseline"
    fp32, int8 = ab[1], ab[2]
    for r in (fp32, int8):
        assert r["baseline"] == "export=pytorch" and r["threshold"] == -0.5 and r["criterion"] == "miou"
        assert r["decision"] == ("keep" if r["gain"] >= -0.5 else "drop")
        d = r["details"]
        for key in ("max_abs_logit", "argmax_agreement", "file_bytes", "cpu", "cpu_threads", "gain_mbiou"):
            assert d[key] is not None, key
        assert d["cpu_threads"] == 1 and d["cpu"]["images_per_s"] > 0 and d["cpu_pytorch_images_per_s"] > 0
        assert d["weights"] == "ema"
    assert fp32["details"]["argmax_agreement"] >= 0.999 and abs(fp32["gain"]) <= 0.05
    assert int8["details"]["export"]["int8"]["mode"] == "static"
    assert int8["details"]["export"]["int8"]["calibration"]["tiles"] == 2
    assert int8["details"]["file_bytes"] < 0.5 * fp32["details"]["file_bytes"]
    variants = {r["variant"] for r in recs if r["type"] == "metrics"}
    assert {"export=pytorch", "export=onnx-fp32", "export=onnx-int8"} <= variants
    arts = [r for r in recs if r["type"] == "artifact" and r["kind"] == "export"]
    assert len(arts) == 2 and all((rdir / a["path"]).is_file() and (rdir / a["meta"]["sidecar"]).is_file()
                                  for a in arts)
    side = json.loads((rdir / arts[1]["meta"]["sidecar"]).read_text())
    assert side["precision"] == "int8" and side["source"]["weights"] == "ema"
    assert side["source"]["run_id"] == "train-x"
    # the store takes the rows like every other A/B kind
    import store
    store.ingest_run("export-x")
    rows = store.ab_rows("export-x", ab_kind="export")
    assert list(rows["decision"]) == ["baseline", fp32["decision"], int8["decision"]]
    from app.widgets.export_ab import export_table
    table = export_table(rows)
    assert list(table["variant"]) == ["export=onnx-fp32", "export=onnx-int8"]
    assert table["argmax agreement %"].iloc[0] == pytest.approx(100 * fp32["details"]["argmax_agreement"])
    assert table["INT8"].iloc[1] == "static" and table["INT8"].isna().iloc[0] and (table["CPU threads"] == 1).all()
    # reports carry the export rows with their decisions
    from mapsage.report import ReportData, render_html
    from store.report_queries import report_frames
    html = render_html(ReportData.from_mapping(report_frames(["export-x"])))
    assert "export A/B" in html and "export=onnx-int8" in html
    # the A/B page shows the export rows, their decisions and the export figures
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(PROJECT_ROOT / "app" / "main.py"), default_timeout=120)
    at.run()
    at.switch_page("views/tta_ab.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    frames = [d.value for d in at.dataframe]
    assert list(frames[0]["decision"]) == list(rows["decision"])
    shown = [f for f in frames if "argmax agreement %" in f.columns]
    assert shown and list(shown[0]["decision"]) == [fp32["decision"], int8["decision"]]


# ----------------------------------------------------------------------------------------------------------------
# errors the user can fix


class ShapeBranch(nn.Module):
    """Control flow on the input's width: tracing records one branch only."""
    output_stride = 32
    num_classes = 3

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 3, 1)
        self.b = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.a(x) if x.shape[-1] < 300 else self.b(x)


def test_tracing_that_freezes_control_flow_is_refused(tmp_path):
    from mapsage.export import TracingFrozen
    from mapsage.export.build import _second_shape
    from mapsage.export.core import DeployGraph, check_against_eager, export_torchscript

    graph = DeployGraph(ShapeBranch())
    x = torch.randn(1, 3, 256, 256)
    path = export_torchscript(graph, x, tmp_path / "m.pt")
    loaded = torch.jit.load(str(path))
    with pytest.raises(TracingFrozen, match="ShapeBranch.*control flow.*--format onnx"):
        check_against_eager(graph.name, graph, loaded, [_second_shape(x, 32)], 1e-3, kind="torchscript")


def test_missing_onnxruntime_and_unknown_files_are_clear(tmp_path, monkeypatch):
    from mapsage.export import ExportError, OnnxRuntimeMissing, load_exported
    from mapsage.export.core import DeployGraph, export_onnx_fp32

    with pytest.raises(ExportError, match="not found"):
        load_exported(tmp_path / "none.onnx")
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(ExportError, match="no sidecar m.onnx.json"):
        load_exported(tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(OnnxRuntimeMissing, match="ShapeBranch.*pip install onnx onnxruntime.*--format torchscript"):
        export_onnx_fp32(DeployGraph(ShapeBranch()), torch.randn(1, 3, 64, 64), tmp_path / "x.onnx")


class Unexportable(nn.Module):
    output_stride = 1

    def forward(self, x):
        return torch.fft.fft2(x).abs()


def test_an_operator_without_onnx_translation_names_the_model(tmp_path):
    from mapsage.export import ExportError
    from mapsage.export.core import DeployGraph, export_onnx_fp32

    with pytest.raises(ExportError, match="ONNX export of Unexportable failed.*--format torchscript"):
        export_onnx_fp32(DeployGraph(Unexportable()), torch.randn(1, 3, 32, 32), tmp_path / "u.onnx")


def test_targets_and_cli_options(trained_run):
    from mapsage.config import ConfigError
    from runners.commands.export_cmd import DEFAULT_TEMPLATE, config_for, export_overrides, targets_of

    # a run id exports with the run's own config (dataset, classes, window); other references with the template
    assert config_for("train-x", None) == trained_run / "config.yaml"
    assert config_for("train-x/best.pth", None) == trained_run / "config.yaml"
    assert config_for("latest:demo_segformer_mit-b0_dubai", None) == DEFAULT_TEMPLATE
    c = load_config(config_for("train-x", None), export_overrides("train-x", ["onnx:int8", "torchscript:fp32"]))
    assert c.stage.kind == "export" and c.stage.checkpoint == "train-x" and c.stage.plan_stage == 4
    assert c.export.targets == ["onnx:int8", "torchscript:fp32"] and c.dataset.split.assign["val"] == ["Tile 2"]

    assert targets_of(None, None, []) == ["onnx:fp32"]
    assert targets_of(["onnx", "torchscript"], ["fp32", "int8"], []) == ["onnx:fp32", "onnx:int8",
                                                                         "torchscript:fp32"]
    assert targets_of(None, None, ["onnx:int8"]) == ["onnx:int8"]
    with pytest.raises(Exception, match="use --format onnx --precision int8"):
        targets_of(["torchscript"], ["int8"], [])
    with pytest.raises(ConfigError, match="torchscript:int8 is not supported"):
        load_config(EXPORT_TEMPLATE, ["export.targets=[torchscript:int8]"])


# ----------------------------------------------------------------------------------------------------------------
# A deployment predicted by the deliverable stage's code: `mapsage predict RUN --model FILE.onnx`


def test_predict_runs_an_exported_model_like_its_checkpoint(tmp_path, cfg, trained_run):
    import argparse

    from mapsage.data import build_dataset
    from mapsage.deliver.model_source import load_predictor
    from mapsage.deliver.predict import predict_images
    from runners.commands.predict_cmd import register
    from runners.validate import validate_launch

    model, ckpt_cfg, ds = _model_and_data(cfg, trained_run)
    [f] = _export(model, ckpt_cfg, ds, trained_run / "export", ["onnx:fp32"])
    pred_onnx = load_predictor(str(f.path))
    pred_pt = load_predictor(str(trained_run / "checkpoints" / "best_ema.pth"), adopt=False)
    assert pred_onnx.variant == "export=onnx:fp32" and pred_onnx.classes == list(cfg.dataset.classes)
    from mapsage.deliver.sources import Input
    inputs = [Input(s.id, s.image_path, "image") for s in build_dataset(cfg, "val", train=False).samples[:1]]
    rec_onnx = predict_images(pred_onnx, inputs, tmp_path / "onnx", device="cpu", show_bar=False)
    rec_pt = predict_images(pred_pt, inputs, tmp_path / "pt", device="cpu", show_bar=False)
    from PIL import Image
    a = np.asarray(Image.open(rec_onnx[0]["pred"]))
    b = np.asarray(Image.open(rec_pt[0]["pred"]))
    assert a.shape == b.shape and (a == b).mean() >= 0.999
    # the CLI flag names the file as the job's checkpoint; launch validation reads its sidecar, never unpickles it
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["predict", "train-x", "--model", str(f.path)])
    from runners.commands.predict_cmd import options_from_args
    assert f"stage.checkpoint={f.path.resolve()}" in options_from_args(args)
    validate_launch(load_config(TEMPLATE, FAST + ["stage.kind=predict", f"stage.checkpoint={f.path}"]))
