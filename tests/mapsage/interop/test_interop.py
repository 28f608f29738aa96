"""Interop: export to MLflow / TensorBoard and read back with their own readers; mmsegmentation and TensorBoard
imports that land in the store beside native runs; the training scalars mmseg users read."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from tests.support.apptest import figures_by_title, open_app, page_text, plotly_array
from tests.support.interop import MMSEG_CLASSES, expected_miou, train_lines, write_mmseg0_logjson, write_mmseg1_workdir


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """A workspace with one real (quick) LoveDA-samples training run: {workspace, run_id}."""
    import torch

    ws = tmp_path_factory.mktemp("interop-ws")
    old = os.environ.get("MAPSAGE_WORKSPACE")
    os.environ["MAPSAGE_WORKSPACE"] = str(ws)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from tests.support.app import LOVEDA_DEMO, run_in_process

        rid = run_in_process(LOVEDA_DEMO, [
            "stage.name=interop-native", "train.epochs=2", "train.steps_per_epoch=2", "train.batch_size=2",
            "train.log_every=1", "augment.crop_size=[96, 96]", "train.ema.enabled=false",
            "eval.save_predictions=false", "runtime.threads=1", "runtime.device=cpu", "train.num_workers=0"])
    finally:
        torch.set_num_threads(threads)
        if old is None:
            os.environ.pop("MAPSAGE_WORKSPACE", None)
        else:
            os.environ["MAPSAGE_WORKSPACE"] = old
    return {"workspace": ws, "run_id": rid}


@pytest.fixture
def ws(native, monkeypatch):
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(native["workspace"]))
    return native


# ---------------------------------------------------------------------------------------------------------------
# the scalars mmseg users read


@pytest.mark.slow
def test_new_run_has_acc_seg_iteration_and_data_time_curves(ws):
    import store

    rid = ws["run_id"]
    steps = store.scalars(rid, split="train").pivot_table(index="step", columns="name", values="value")
    assert list(steps.index) == [1, 2, 3, 4]                                  # log_every=1, 2 epochs x 2 steps
    for name in ("acc_seg", "time", "data_time", "loss", "lr"):
        assert steps[name].notna().all(), name
    assert ((steps["acc_seg"] > 0) & (steps["acc_seg"] <= 1)).all()           # a fraction of labelled pixels
    assert (steps["time"] > steps["data_time"]).all() and (steps["data_time"] >= 0).all()
    assert "gpu_util" not in steps.columns and "memory" not in steps.columns  # CPU run: no GPU samples
    epochs = store.scalars(rid, split="train_epoch").pivot_table(index="epoch", columns="name", values="value")
    assert epochs["acc_seg"].between(0, 1).all()
    # the epoch's pixel accuracy pools both steps' pixels: it lies between the two step values
    for e in (0, 1):
        lo, hi = sorted(steps["acc_seg"].iloc[2 * e:2 * e + 2])
        assert lo - 1e-9 <= epochs.loc[e, "acc_seg"] <= hi + 1e-9


def test_pixel_hits_and_gpu_sampler_on_cpu():
    import torch

    from mapsage.train.telemetry import GpuSampler, pixel_hits

    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1] = 1.0                                   # predicts class 1 everywhere
    mask = torch.tensor([[[1, 0], [255, 1]]])
    correct, valid = pixel_hits(logits, mask, 255)
    assert (float(correct), float(valid)) == (2.0, 3.0)
    s = GpuSampler(torch.device("cpu")).start()
    assert not s.active and "CPU" in s.note and s.take() == {} and s.epoch_values() == {}
    s.stop()


# ---------------------------------------------------------------------------------------------------------------
# out


def _export_points(rid):
    from mapsage.interop.bundle import export_points
    from runners.commands.interop_cmd import gather_bundle

    return export_points(gather_bundle(rid))


@pytest.mark.slow
def test_export_to_tensorboard_reads_back_with_tensorboards_reader(ws, tmp_path):
    import store
    from mapsage.interop.tensorboard_io import read_scalars
    from runners.cli import main

    rid = ws["run_id"]
    assert main(["export-runs", rid, "--to", "tensorboard", str(tmp_path / "tb")]) == 0
    got = read_scalars(tmp_path / "tb" / rid)
    want: dict[str, list] = {}
    for p in _export_points(rid):
        want.setdefault(p.tag, []).append((p.step, p.value))
    assert set(got) == set(want)
    for tag, rows in want.items():
        assert [s for s, _, _ in got[tag]] == [s for s, _ in sorted(rows)], tag
        np.testing.assert_allclose([v for _, v, _ in got[tag]], [v for _, v in sorted(rows)], rtol=1e-6,
                                   err_msg=tag)                     # TensorBoard keeps float32
    # mmseg's names and units, against the store's own numbers
    sc = store.scalars(rid, split="train")
    acc = sc[sc["name"] == "acc_seg"].sort_values("step")
    np.testing.assert_allclose([v for _, v, _ in got["decode.acc_seg"]], acc["value"] * 100, rtol=1e-6)
    for tag in ("loss", "decode.loss_ce", "lr", "time", "data_time", "mIoU", "aAcc", "mAcc", "IoU.building",
                "epoch/decode.acc_seg", "epoch/epoch_time"):
        assert tag in got, tag
    ev = store.metrics(rid, split="val", domain="all", variant="raw").sort_values("epoch")
    np.testing.assert_allclose([v for _, v, _ in got["mIoU"]], ev["miou"] * 100, rtol=1e-6)


@pytest.mark.slow
def test_export_to_mlflow_reads_back_with_mlflow_client(ws, tmp_path):
    from mlflow.tracking import MlflowClient

    import store
    from mapsage.interop.bundle import flatten_config
    from mapsage.interop.names import safe_key
    from runners.cli import main

    rid = ws["run_id"]
    uri = f"sqlite:///{tmp_path / 'ml' / 'mlflow.db'}"
    assert main(["export-runs", rid, "--to", "mlflow", "--tracking-uri", uri, "--experiment", "interop-test",
                 "--no-report"]) == 0
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("interop-test")
    [run] = client.search_runs([exp.experiment_id], filter_string=f"tags.`mapsage.run_id` = '{rid}'")
    assert run.info.status == "FINISHED"
    # params equal the resolved config, flattened
    cfg = store.run(rid)["config"]
    assert run.data.params == {safe_key(k): v for k, v in flatten_config(cfg).items()}
    assert run.data.params["model.encoder"] == cfg["model"]["encoder"]
    # every metric history equals the exported series (steps and values; MLflow keeps doubles)
    want: dict[str, list] = {}
    for p in _export_points(rid):
        want.setdefault(p.tag, []).append((p.step, p.value))
    assert set(run.data.metrics) == set(want)
    for key, rows in want.items():
        hist = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert hist == sorted(rows), key
    # and against the store: the step losses and the per-class IoU of the last epoch
    sc = store.scalars(rid, split="train")
    loss = sc[sc["name"] == "loss"].sort_values("step")
    assert [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, "loss"),
                                              key=lambda m: m.step)] == list(zip(loss["step"], loss["value"]))
    pc = store.per_class(rid, split="val", domain="all", variant="raw")
    for c in pc.itertuples():
        if c.iou == c.iou:
            assert math.isclose(run.data.metrics[f"IoU.{c.class_name}"], c.iou * 100)
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "confusion_val.csv", "per_class_val.csv"} <= names
    # a second export is refused without --overwrite, replaced with it
    with pytest.raises(Exception, match="--overwrite"):
        from runners.commands.interop_cmd import export_runs
        export_runs([rid], "mlflow", tracking_uri=uri, experiment="interop-test", report=False)
    assert main(["export-runs", rid, "--to", "mlflow", "--tracking-uri", uri, "--experiment", "interop-test",
                 "--no-report", "--overwrite"]) == 0
    assert len(client.search_runs([exp.experiment_id], filter_string=f"tags.`mapsage.run_id` = '{rid}'")) == 1


# ---------------------------------------------------------------------------------------------------------------
# in


@pytest.mark.slow
def test_mmseg1_workdir_imports_beside_native_runs(ws, tmp_path):
    import yaml

    import store
    from runners.cli import main

    marker = tmp_path / "config-was-executed"
    work = write_mmseg1_workdir(tmp_path, marker)
    assert main(["import-runs", str(work), "--dataset", "loveda-samples"]) == 0
    assert not marker.exists()                                  # the config was read as data, never run
    from mapsage.interop.foreign import import_run_id
    from mapsage.interop.mmseg import find_runs

    [source] = find_runs(work)
    rid = import_run_id(source)
    runs = store.list_runs()
    assert runs.set_index("run_id").loc[rid, "kind"] == "imported" and ws["run_id"] in set(runs["run_id"])
    row = store.run(rid)
    assert row["dataset"] == "loveda-samples" and row["split"] == "val" and row["status"] == "succeeded"
    assert row["info"]["origin"] == "imported" and row["info"]["import_source"] == "mmseg-1.x"
    assert row["backbone"] == "MixVisionTransformer" and row["arch"] == "SegformerHead" and row["size"] == "512x512"
    assert row["loss"] == "ce1" and "scale0.5-2" in row["aug"] and "hflip" in row["aug"]
    cfg = yaml.safe_load((Path(os.environ["MAPSAGE_WORKSPACE"]) / "runs" / rid / "config.yaml").read_text())
    assert cfg["source_config"]["marker"].startswith("<os.system(")
    # curves: the training scalars in workbench names and units, at mmseg's iterations
    sc = store.scalars(rid, split="train").pivot_table(index="step", columns="name", values="value")
    src = {r["iter"]: r for r in train_lines()}
    assert list(sc.index) == sorted(src)
    np.testing.assert_allclose(sc["acc_seg"], [src[i]["decode.acc_seg"] / 100 for i in sc.index])
    np.testing.assert_allclose(sc["ce"], [src[i]["decode.loss_ce"] for i in sc.index])
    for name in ("time", "data_time", "memory", "lr", "loss"):
        assert sc[name].notna().all()
    # validations: periods of 200 iterations, mmseg's percents as fractions, per class from the text log
    ev = store.metrics(rid, split="val").sort_values("epoch")
    assert list(ev["epoch"]) == [0, 1]
    np.testing.assert_allclose(ev["miou"], [expected_miou(0), expected_miou(1)])
    pc = store.per_class(rid, split="val", epoch=0)
    assert list(pc["class_name"]) == ["background", "building", "road", "water", "barren", "forest",
                                      "agriculture"]                      # the workbench's LoveDA names
    assert pc.set_index("class_name").loc["water", "excluded"]
    assert math.isclose(pc.set_index("class_name").loc["agriculture", "iou"], 0.456)
    assert row["best_val_miou"] == pytest.approx(expected_miou(1))
    # ranked with the native run on the same dataset and split, per-class columns aligned
    lb = store.leaderboard(split="val")
    both = lb[lb["run_id"].isin([rid, ws["run_id"]])]
    assert len(both) == 2 and both["iou_building"].notna().all()
    assert set(both["dataset"]) == {"loveda-samples"}
    # importing the same source again is noticed
    from runners.commands.interop_cmd import import_runs
    again = import_runs(work, dataset="loveda-samples")
    assert [r["written"] for r in again] == [False]


@pytest.mark.slow
def test_mmseg0_logjson_and_tensorboard_folder_import(ws, tmp_path):
    import store
    from runners.commands.interop_cmd import export_runs, import_runs

    path = write_mmseg0_logjson(tmp_path)
    [row] = import_runs(path)                                   # dataset from the config: LoveDADataset
    info = store.run(row["run_id"])
    assert info["dataset"] == "loveda" and row["validations"] == 2 and row["train_records"] == 4
    ev = store.metrics(row["run_id"], split="val").sort_values("epoch")
    np.testing.assert_allclose(ev["miou"], [0.31, 0.32])         # 0.x logs fractions
    pc = store.per_class(row["run_id"], split="val", epoch=1)
    assert len(pc) == len(MMSEG_CLASSES) and "agriculture" in set(pc["class_name"])
    steps = store.scalars(row["run_id"], split="train")
    assert sorted(steps[steps["name"] == "acc_seg"]["step"]) == [10, 20, 30, 40]   # epochs laid end to end

    # a TensorBoard folder: the native run's own export comes back with the same curves and figures
    rid = ws["run_id"]
    [tb] = export_runs([rid], "tensorboard", logdir=tmp_path / "tb")
    [back] = import_runs(tb.parent, dataset="loveda-samples")
    assert back["source"] == "tensorboard"
    a = store.scalars(rid, names="acc_seg", split="train").sort_values("step")
    b = store.scalars(back["run_id"], names="acc_seg", split="train").sort_values("step")
    np.testing.assert_allclose(b["value"], a["value"], rtol=1e-6)
    ma = store.metrics(rid, split="val", variant="raw", domain="all").sort_values("epoch")
    mb = store.metrics(back["run_id"], split="val", variant="raw", domain="all").sort_values("epoch")
    np.testing.assert_allclose(mb["miou"], ma["miou"], rtol=1e-6)
    assert set(store.metrics(back["run_id"])["domain"]) == set(store.metrics(rid)["domain"])  # Urban/Rural too


def test_import_errors_name_the_path(tmp_path, tmp_workspace):
    from mapsage.errors import UserError
    from runners.commands.interop_cmd import import_runs

    with pytest.raises(UserError, match="no such file"):
        import_runs(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="found no vis_data/scalars.json"):
        import_runs(empty)
    bad = tmp_path / "w" / "20240101_000000" / "vis_data"
    bad.mkdir(parents=True)
    (bad / "scalars.json").write_text('{"loss": 1.0, "step": 1}\nnot json\n{"loss": 0.5, "step": 2}\n')
    with pytest.raises(UserError, match=r"scalars.json, line 2"):
        import_runs(tmp_path / "w")


def test_gpu_sampler_through_nvml(monkeypatch):
    """The sampler's NVML path with a stand-in ``pynvml`` module (this machine has no GPU): the physical GPU is
    found through CUDA_VISIBLE_DEVICES, utilisation is averaged and memory maximised per window, and a device
    without a utilisation counter (a MIG slice) still reports memory."""
    import sys
    import types

    import torch

    from mapsage.train.telemetry import GpuSampler

    calls = {"util": iter([10.0, 30.0, 50.0, 70.0] + [90.0] * 100), "mem": iter([1000, 3000, 2000] + [500] * 100)}
    nv = types.ModuleType("pynvml")
    nv.nvmlInit = lambda: None
    nv.nvmlDeviceGetHandleByIndex = lambda i: ("gpu", i)
    nv.nvmlDeviceGetHandleByUUID = lambda u: (_ for _ in ()).throw(AssertionError("no uuid expected"))
    nv.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=next(calls["util"]))
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=next(calls["mem"]) * 2 ** 20)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: (_ for _ in ()).throw(RuntimeError("none")))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    s = GpuSampler(torch.device("cuda", 1), interval=3600)     # the thread never fires: samples taken by hand
    assert s.active and s._handle == ("gpu", 5)
    for _ in range(3):
        s._win.append(s.sample())
        s._epoch.append(s._win[-1])
    got = s.take()
    assert got == {"gpu_util": 30.0, "gpu_util_max": 50.0, "gpu_mem_mb": 3000.0}
    assert s.take() == {"gpu_util": 70.0, "gpu_util_max": 70.0, "gpu_mem_mb": 500.0}   # empty window: sampled now
    assert s.epoch_values()["gpu_mem_mb"] == 3000.0
    s.start()
    s.stop()
    assert s._thread is None

    nv.nvmlDeviceGetUtilizationRates = lambda h: (_ for _ in ()).throw(RuntimeError("Not Supported"))
    mig = GpuSampler(torch.device("cuda", 0), interval=3600)
    assert mig._handle == ("gpu", 3)
    assert mig.take() == {"gpu_mem_mb": 500.0}


@pytest.mark.slow
def test_run_detail_draws_the_iteration_curves_and_the_imported_note(ws, tmp_path):
    """Run detail (under AppTest): acc_seg, time and data_time curves of the new run from the store's values; an
    imported run is introduced as such."""
    import store
    from runners.commands.interop_cmd import import_runs

    rid = ws["run_id"]
    at = open_app("views/run_detail.py", run=rid)
    fig = figures_by_title(at)["Per-iteration scalars (train, sampled steps)"]
    traces = {t["name"]: t for t in fig["data"]}
    assert {"acc_seg", "time", "data_time"} <= set(traces)
    sc = store.scalars(rid, split="train").pivot_table(index="step", columns="name", values="value")
    np.testing.assert_allclose(plotly_array(traces["acc_seg"]["y"]), sc["acc_seg"] * 100)
    np.testing.assert_allclose(plotly_array(traces["data_time"]["y"]), sc["data_time"])
    assert "GPU utilisation: not sampled" in page_text(at)

    [row] = import_runs(write_mmseg1_workdir(tmp_path, tmp_path / "m"), dataset="loveda-samples")
    text = page_text(open_app("views/run_detail.py", run=row["run_id"]))
    assert "**Imported** from mmseg-1.x" in text and "no paired-bootstrap intervals" in text


def test_epoch_panels_for_the_new_scalars():
    from mapsage import figures

    assert {n: figures.curve_group(n) for n in ("acc_seg", "gpu_util", "gpu_util_max", "gpu_mem_mb", "memory")} == \
        {"acc_seg": "acc", "gpu_util": "gpu", "gpu_util_max": "gpu", "gpu_mem_mb": "mem", "memory": "mem"}
