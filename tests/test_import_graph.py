"""No import cycle among the ``mapsage`` subpackages: the graph of which subpackage imports which, built with
``ast`` from every import in every file (imports inside functions included), has no strongly connected component
with more than one member. The walker is ``tools/code_census.py`` (the census prints the same graph's cycles)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Edges known to close a cycle, each with the reason and the way out. The test fails when an edge listed here is
# gone (take it off the list) and when any other cycle appears.
PENDING: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def census():
    spec = importlib.util.spec_from_file_location("code_census", ROOT / "tools" / "code_census.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["code_census"] = module
    spec.loader.exec_module(module)
    return module


def _without(graph: dict[str, set[str]], edges) -> dict[str, set[str]]:
    return {src: {dst for dst in dsts if (src, dst) not in edges} for src, dsts in graph.items()}


def test_no_import_cycle_among_mapsage_subpackages(census):
    graph = census.subpackage_graph("mapsage")
    assert {"train", "infer", "distill", "models", "data", "config"} <= set(graph), sorted(graph)
    stale = [edge for edge in PENDING if edge[1] not in graph.get(edge[0], set())]
    assert not stale, f"these edges are gone; take them off PENDING: {stale}"
    cycles = census.cycles(_without(graph, PENDING))
    described = [f"{' / '.join(c)} ({', '.join(census.edges_within(graph, c))})" for c in cycles]
    assert not cycles, "import cycles among mapsage subpackages:\n" + "\n".join(described)


def test_the_broken_cycles_stay_broken(census):
    """Pairs that were cycles (training and inference, training and distillation, the config and the reliability
    card, ...) are not in one strongly connected component, even counting the PENDING edges."""
    components = [set(c) for c in census.cycles(census.subpackage_graph("mapsage"))]
    for a, b in (("train", "infer"), ("train", "distill"), ("config", "reliability"), ("data", "train"),
                 ("data", "health"), ("reliability", "deliver"), ("infer", "reliability"), ("train", "reliability")):
        assert not any({a, b} <= c for c in components), f"{a} and {b} import each other again"


def test_the_walker_sees_imports_inside_functions(census, tmp_path):
    pkg = tmp_path / "pkg"
    for sub, body in {
        "a": "from ..b import thing\n",
        "b": "def thing():\n    from ..c.mod import other\n    return other\n",
        "c": "def other():\n    import pkg.a.x\n",
    }.items():
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text(body)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("")
    (pkg / "c" / "mod.py").write_text("")
    graph = census.subpackage_graph("pkg", root=tmp_path)
    assert graph == {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert census.cycles(graph) == [["a", "b", "c"]]


def test_training_reaches_the_distillation_stage_by_name():
    """Training hands distillation configs up by name instead of importing mapsage.distill."""
    import mapsage.distill.stage
    from mapsage.stage import entry_point
    from mapsage.train.stage import DISTILL_ENTRY

    assert entry_point(DISTILL_ENTRY) is mapsage.distill.stage.run
