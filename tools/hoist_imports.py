"""Move function-level imports of the project's own modules to the top of their module where that is safe.

Safe means: (1) the imported module does not import this module back through module-level imports (no cycle at
import time, computed over the whole project's top-level import graph, updated as imports are hoisted); (2) it
brings no heavy third-party package (torch, timm, rasterio, ...) that this module does not already load at
import time (the app's pages stay light); (3) the bound name is not defined otherwise at module level nor bound
to something else by another function-level import; (4) the import is not inside ``try`` (an optional import).

Usage: ``python tools/hoist_imports.py [--apply] [PATH ...]`` (default: mapsage store runners app). Prints what
it would move; ``--apply`` rewrites the files. Run ``ruff check --fix`` afterwards for the import order.
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKGS = ("mapsage", "store", "runners", "app")
HEAVY = {"torch", "torchvision", "timm", "segmentation_models_pytorch", "rasterio", "geopandas", "shapely",
         "optuna", "albumentations", "cv2", "kornia", "onnxruntime", "onnx", "mlflow", "pydensecrf",
         "pydensecrf2", "sklearn", "scipy", "submitit", "segment_anything", "streamlit", "plotly", "folium",
         "duckdb", "pyarrow", "pandas", "tensorboard", "rio_cogeo", "pyogrio", "matplotlib", "playwright"}


def patched_names() -> set[str]:
    """Attribute names the tests replace with ``monkeypatch.setattr`` / ``mock.patch``: a caller that imports
    such a name inside a function sees the replacement; hoisted, it would keep the original."""
    import re

    pat = re.compile(r'(?:monkeypatch\.setattr|patch\.object|mock\.patch|patch)\((?:[^,()]+,\s*)?"([A-Za-z_.]+)"')
    out = set()
    for p in (ROOT / "tests").rglob("*.py"):
        for m in pat.finditer(p.read_text(encoding="utf-8")):
            out.add(m.group(1).rsplit(".", 1)[-1])
    return out


PATCHED: set[str] = set()


def modname(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve(node: ast.ImportFrom, path: Path) -> str | None:
    if node.level == 0:
        return node.module
    base = modname(path).split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class Project:
    def __init__(self, roots):
        self.files = {}
        for r in roots:
            for p in sorted((ROOT / r).rglob("*.py")):
                if "static" in p.parts:
                    continue
                self.files[modname(p)] = p
        self.edges: dict[str, set[str]] = defaultdict(set)     # module-level imports: project modules
        self.heavy: dict[str, set[str]] = defaultdict(set)     # module-level imports: heavy third-party roots
        for m, p in self.files.items():
            try:
                tree = ast.parse(p.read_text(encoding="utf-8"))
            except SyntaxError:
                continue
            for n in tree.body:
                self._add_top(m, p, n)

    def _targets(self, m: str, p: Path, n) -> list[str]:
        out = []
        if isinstance(n, ast.Import):
            out = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            base = resolve(n, p)
            if base:
                out = [base] + [f"{base}.{a.name}" for a in n.names]
        return out

    def _add_top(self, m: str, p: Path, n) -> None:
        if isinstance(n, (ast.If, ast.Try)):
            if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
                return
            for b in ast.iter_child_nodes(n):
                self._add_top(m, p, b)
            return
        for t in self._targets(m, p, n):
            root = t.split(".")[0]
            if root in PKGS:
                self.add_edge(m, t)
            elif root in HEAVY:
                self.heavy[m].add(root)

    def add_edge(self, m: str, target: str) -> None:
        # a target module and every package __init__ on its way
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name in self.files and name != m:
                self.edges[m].add(name)

    def closure(self, m: str) -> set[str]:
        seen, todo = set(), [m]
        while todo:
            x = todo.pop()
            for y in self.edges.get(x, ()):
                if y not in seen:
                    seen.add(y)
                    todo.append(y)
        return seen

    def heavy_of(self, m: str) -> set[str]:
        out = set(self.heavy.get(m, ()))
        for x in self.closure(m):
            out |= self.heavy.get(x, set())
        return out


def _module_level_names(tree: ast.Module) -> dict[str, str]:
    names = {}
    for n in tree.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[n.name] = "def"
        elif isinstance(n, ast.Assign):
            for t in n.targets:
                for x in ast.walk(t):
                    if isinstance(x, ast.Name):
                        names[x.id] = "assign"
        elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
            names[n.target.id] = "assign"
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for a in n.names:
                names[(a.asname or a.name).split(".")[0]] = "import"
    return names


def plan_file(proj: Project, path: Path):
    """[(lineno, end_lineno, import statement text to add at top)] for the hoistable function-level imports."""
    src = path.read_text(encoding="utf-8")
    tree = ast.parse(src)
    me = modname(path)
    toplevel = _module_level_names(tree)
    in_try = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Try):
            for b in n.body + [h for hh in n.handlers for h in hh.body] + n.orelse + n.finalbody:
                for x in ast.walk(b):
                    in_try.add(id(x))
    bound: dict[str, set[tuple]] = defaultdict(set)
    cands = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for n in ast.walk(fn):
            if isinstance(n, ast.ImportFrom) and n.col_offset > 0:
                target = resolve(n, path)
                if not target:
                    continue
                for a in n.names:
                    bound[a.asname or a.name].add((target, a.name))
                if target.split(".")[0] in PKGS:
                    cands.append(n)
    seen = set()
    out = []
    for n in cands:
        if id(n) in seen or id(n) in in_try:
            continue
        seen.add(id(n))
        target = resolve(n, path)
        if any(a.name == "*" for a in n.names):
            continue
        names = [(a.asname or a.name) for a in n.names]
        if any(a.name in PATCHED for a in n.names):
            continue
        if any(len(bound[x]) > 1 for x in names):
            continue
        if any(x in toplevel and toplevel[x] != "import" for x in names):
            continue
        # the module itself, or one of its packages, is this module (or contains it): skip
        if target == me or me.startswith(target + ".") and target.count(".") < me.count("."):
            continue
        probe = set()
        for t in [target] + [f"{target}.{a.name}" for a in n.names]:
            parts = t.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name in proj.files and name != me:
                    probe.add(name)
        if not probe:
            continue
        reach = set(probe)
        for x in probe:
            reach |= proj.closure(x)
        if me in reach:
            continue                                   # a cycle at import time
        # a package's __init__ that imports this module's package lazily is fine; a heavy import is not
        heavy_new = set()
        for x in probe:
            heavy_new |= proj.heavy_of(x) | proj.heavy.get(x, set())
        if heavy_new - proj.heavy_of(me):
            continue
        for x in probe:
            proj.edges[me].add(x)
        stmt = ast.unparse(ast.ImportFrom(module=n.module, names=n.names, level=n.level))
        out.append((n.lineno, n.end_lineno, stmt))
    return src, out


def apply(path: Path, src: str, moves) -> None:
    lines = src.splitlines(keepends=True)
    drop = set()
    for lo, hi, _ in moves:
        drop.update(range(lo - 1, hi))
    body = [ln for i, ln in enumerate(lines) if i not in drop]
    # a block left empty gets "pass"; a blank line left where the import stood is removed by ruff
    tree_ok = True
    try:
        ast.parse("".join(body))
    except SyntaxError:
        tree_ok = False
    if not tree_ok:
        return
    # insert after the last top-level import (or the module docstring / __future__)
    tree = ast.parse("".join(body))
    at = 0
    for n in tree.body:
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            at = n.end_lineno
        elif isinstance(n, ast.Expr) and isinstance(getattr(n, "value", None), ast.Constant) and at == 0:
            at = n.end_lineno
        elif at:
            break
    new = [f"{stmt}\n" for _, _, stmt in moves]
    body[at:at] = new
    path.write_text("".join(body), encoding="utf-8")


def main(argv: list[str]) -> int:
    do = "--apply" in argv
    roots = [a for a in argv if not a.startswith("--")] or list(PKGS)
    PATCHED.update(patched_names())
    proj = Project(PKGS)
    total = 0
    for r in roots:
        files = [ROOT / r] if (ROOT / r).is_file() else sorted((ROOT / r).rglob("*.py"))
        for p in files:
            if "static" in p.parts:
                continue
            try:
                src, moves = plan_file(proj, p)
            except SyntaxError:
                continue
            if moves:
                total += len(moves)
                print(f"{p.relative_to(ROOT)}: {len(moves)}")
                if do:
                    apply(p, src, moves)
    print(f"hoistable: {total}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
