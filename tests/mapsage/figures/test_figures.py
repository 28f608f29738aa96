"""One figure library (:mod:`mapsage.figures`) for the app and the report.

* The app (Run detail under AppTest) and the report (:mod:`mapsage.report.plots`) draw the same per-class bars and
  the same confusion heatmap for the same stored evaluation: identical traces, in the dataset's class colours, with
  user text (a class named ``<i>road</i>``) shown as text in both.
* No module under ``app/`` or ``mapsage/`` builds a plotly figure outside ``mapsage/figures/`` (an ``ast`` walk over
  every file: plotly figure imports, ``Figure(...)`` and ``make_subplots(...)`` calls).
* One list of series colours: the report's curves and the app's overlaid curves both take ``run_colors``."""
from __future__ import annotations

import ast
import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import store
from mapsage import figures
from mapsage.report import ReportData, build_tables
from mapsage.report import plots as report_plots
from store import schema as store_schema
from store.report_queries import report_frames
from tests.support.apptest import figures_by_title, open_app
from tests.support.report import write_lab_run

ROOT = Path(__file__).resolve().parents[3]
CLASSES = ["background", "building", "<i>road</i>", "water", "barren", "forest", "agriculture"]
PALETTE = ["#101010", "#E2A929", "#8429F6", "#6EC1E4", "#3C1098", "#FEDD3A", "#2CA02C"]

# plotly modules that build figures, and the calls that do
PLOTLY_BUILDERS = ("plotly.graph_objects", "plotly.graph_objs", "plotly.subplots", "plotly.express",
                   "plotly.figure_factory")
FIGURE_CALLS = {"Figure", "FigureWidget", "make_subplots"}
# modules allowed to build figures outside mapsage/figures/, each with the reason (none today)
ALLOWED: dict[str, str] = {}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One run evaluated once by the metrics engine on the real LoveDA masks, its classes in the config's own
    colours (one class named like HTML), written the way the stages write it and ingested."""
    ws = tmp_path_factory.mktemp("figures-ws")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAPSAGE_WORKSPACE", str(ws))
        store_schema.forget_checked()
        classes = ", ".join(f"'{c}'" for c in CLASSES)
        colours = ", ".join(f"'{c}'" for c in PALETTE)
        rid = write_lab_run("colours", [{"variant": "raw", "shift": 6}],
                            overrides=[f"dataset.classes=[{classes}]", f"dataset.palette=[{colours}]"])
        store.ingest_all()
        yield {"ws": ws, "rid": rid}
    store_schema.forget_checked()


@pytest.fixture
def in_lab(lab, monkeypatch):
    monkeypatch.setenv("MAPSAGE_WORKSPACE", str(lab["ws"]))
    store_schema.forget_checked()
    return lab["rid"]


def _plain(v):
    """A plotly JSON value with typed arrays ({dtype, bdata, shape}) as nested lists, numbers rounded."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        if v.get("shape"):
            a = a.reshape([int(x) for x in str(v["shape"]).split(",")])
        return _plain(a.tolist())
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, float):
        return None if np.isnan(v) else round(v, 9)
    return v


def _traces(spec: dict) -> list[dict]:
    return _plain(spec["data"])


def _app_figures(run_id: str, tab: str) -> dict[str, dict]:

    at = open_app("views/run_detail.py", run=run_id)
    at.query_params["tab"] = tab
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return figures_by_title(at)


def _report(run_id: str):
    data = ReportData.from_mapping(report_frames([run_id]))
    return data, build_tables(data)


def test_app_and_report_draw_the_same_per_class_bars(in_lab):
    app = _app_figures(in_lab, "Per class")
    data, t = _report(in_lab)
    report = {f.layout.title.text: json.loads(f.to_json()) for f in report_plots.class_figures(data, t.per_class)}
    for app_title in ("Per-class IoU (val)", "Per-class Boundary IoU (val)"):
        [(title, spec)] = [(k, v) for k, v in report.items() if k.endswith(": p" + app_title[1:])]
        assert _traces(spec) == _traces(app[app_title]), title
    bar = _traces(app["Per-class IoU (val)"])[0]
    assert bar["marker"]["color"] == PALETTE                                  # the dataset's class colours
    assert bar["x"][2] == "&lt;i&gt;road&lt;/i&gt;"                          # a class name shows as text
    rows = store.per_class(in_lab, split="val", domain="all")
    weakest = set(rows.dropna(subset=["iou"]).nsmallest(3, "iou")["class_name"])
    assert {n for n, w in zip(rows.sort_values("class_id")["class_name"], bar["text"]) if "weakest" in w} == weakest


def test_app_and_report_draw_the_same_confusion_heatmap(in_lab):
    app = _app_figures(in_lab, "Confusion")
    app_title = next(k for k in app if k.startswith("Confusion matrix, row-normalised"))
    data, _ = _report(in_lab)
    m, names = store.confusion_matrix(in_lab, split="val", domain="all")
    fig = report_plots.confusion_figure(data, in_lab, np.asarray(m), list(names), "colours · raw · final", "val")
    assert fig.layout.title.text.endswith(app_title)
    heat_app, heat_report = _traces(app[app_title])[0], _traces(json.loads(fig.to_json()))[0]
    assert heat_app == heat_report and heat_app["type"] == "heatmap"
    rows = np.asarray(m, np.float64).sum(axis=1)
    z = np.asarray([[np.nan if v is None else v for v in r] for r in heat_report["z"]], np.float64)
    assert np.allclose(np.nansum(z, axis=1)[rows > 0], 100.0)                 # each label row sums to 100 %
    layout = json.loads(fig.to_json())["layout"]
    assert [t.split("</span> ")[-1] for t in layout["xaxis"]["ticktext"]] == [figures.as_text(c) for c in CLASSES]


def test_report_curves_take_the_series_colours_of_runs():
    curves = pd.DataFrame({"run": ["a"] * 2 + ["b"] * 2, "run_id": ["a"] * 2 + ["b"] * 2, "source": "eval",
                           "split": "val", "variant": "raw", "epoch": [0, 1, 0, 1], "name": "miou",
                           "value": [0.3, 0.4, 0.35, 0.45]})
    [miou] = report_plots.curve_figures(curves)
    series = pd.DataFrame({"run": ["a · raw · split val"] * 2 + ["b · raw · split val"] * 2,
                           "epoch": [0, 1, 0, 1], "miou": [0.3, 0.4, 0.35, 0.45]})
    app = figures.overlay_curves(series, "miou", "mIoU % (split in legend)", "Validation mIoU per epoch", 100.0)
    assert _traces(json.loads(miou.to_json())) == _traces(json.loads(app.to_json()))
    assert [t.line.color for t in miou.data] == figures.run_colors(2) == figures.SERIES_COLOURS[:2]


def _figure_code(path: Path) -> list[str]:
    """``file:line what`` of every plotly figure import and every figure construction in a module."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [f"{node.lineno} import {a.name}" for a in node.names if a.name.startswith(PLOTLY_BUILDERS)]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = {a.name for a in node.names}
            if node.module.startswith(PLOTLY_BUILDERS) or (
                    node.module == "plotly" and names & {"graph_objects", "graph_objs", "subplots", "express"}):
                out.append(f"{node.lineno} from {node.module} import {', '.join(sorted(names))}")
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name in FIGURE_CALLS:
                out.append(f"{node.lineno} {name}(...)")
    return [f"{path.relative_to(ROOT)}:{w}" for w in out]


def test_no_figure_is_built_outside_the_library():
    library = ROOT / "mapsage" / "figures"
    files = [p for top in ("app", "mapsage") for p in sorted((ROOT / top).rglob("*.py"))
             if library not in p.parents and "static" not in p.parts]
    assert len(files) > 100
    found = [hit for p in files if str(p.relative_to(ROOT)) not in ALLOWED for hit in _figure_code(p)]
    assert not found, "plotly figures built outside mapsage/figures/:\n" + "\n".join(found)
    assert all((ROOT / p).exists() for p in ALLOWED), "an allowed module is gone: take it off ALLOWED"
    # and the walker sees what it looks for
    assert _figure_code(library / "base.py") and _figure_code(library / "curves.py")
