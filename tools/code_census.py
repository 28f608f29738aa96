"""Code census: structural counts for the project's own packages (``mapsage``, ``store``, ``runners``, ``app``).

Prints, one figure a line:

- imports inside functions (all, and those of the project's own modules);
- functions longer than 100 lines (first to last line of the ``def``, decorators excluded);
- files longer than 400 lines;
- dead functions: ``vulture`` (confidence >= 60) over the packages plus ``tests``, ``bench``, ``scripts`` and
  ``tools`` (so a function only a test calls counts as used), restricted to functions and methods defined in the
  packages, less dunder hooks, registry targets named in ``"module:function"`` strings and functions registered by
  a decorator (methods a library calls by name, e.g. albumentations' or onnxruntime's, still count); when ``vulture`` is not installed, a plain AST cross-reference (a function whose name appears nowhere
  else as a name, attribute or string) stands in;
- private names (``_x``) imported from another module of the project;
- import cycles among ``mapsage`` subpackages (imports inside functions included).

Usage: ``python tools/code_census.py [--list]`` from the repository root (``--list`` prints the items behind each
count).
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mapsage", "store", "runners", "app")
USERS = ("tests", "bench", "scripts", "tools")
OWN = set(PACKAGES)


def py_files(*tops: str, root: Path = ROOT) -> list[Path]:
    out: list[Path] = []
    for top in tops:
        base = root / top
        if base.is_dir():
            out.extend(sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts))
    return out


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(module: str, is_package: bool, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        target = resolve_from(module, is_package, node)
        # ``from pkg import sub`` may name a submodule: keep both, the graph builder checks which exist
        return [target] + [f"{target}.{a.name}" for a in node.names if a.name != "*"]
    return []


class _FunctionImports(ast.NodeVisitor):
    def __init__(self) -> None:
        self.depth = 0
        self.found: list[ast.AST] = []

    def _func(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _func

    def visit_Import(self, node: ast.Import) -> None:
        if self.depth:
            self.found.append(node)

    visit_ImportFrom = visit_Import


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def function_imports(files: list[Path]) -> tuple[list[str], list[str]]:
    every, own = [], []
    for path in files:
        mod = module_name(path)
        visitor = _FunctionImports()
        visitor.visit(parse(path))
        for node in visitor.found:
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            every.append(where)
            names = imported_modules(mod, path.name == "__init__.py", node)
            if any(n.split(".")[0] in OWN for n in names):
                own.append(where)
    return every, own


def long_functions(files: list[Path], limit: int = 100) -> list[str]:
    out = []
    for path in files:
        for node in ast.walk(parse(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    return out


def long_files(files: list[Path], limit: int = 400) -> list[str]:
    out = []
    for path in files:
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            out.append(f"{path.relative_to(ROOT)} ({n} lines)")
    return out


def dead_functions_vulture() -> list[str] | None:
    exe = shutil.which("vulture") or str(Path(sys.executable).with_name("vulture"))
    if not Path(exe).exists():
        return None
    targets = [t for t in PACKAGES + USERS if (ROOT / t).is_dir()]
    proc = subprocess.run(
        [exe, *targets, "--min-confidence", "60"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    named, decorated = _referenced_by_string_or_decorator()
    out = []
    for line in proc.stdout.splitlines():
        if ("unused function" in line or "unused method" in line) and line.split("/")[0] in PACKAGES:
            name = line.split("'")[1]
            where = line.split(":")[0] + ":" + line.split(":")[1]
            if name.startswith("__") or name in named or where in decorated:
                continue            # dunder hooks, registry targets named in strings, decorator registrations
            out.append(line.split(" (")[0])
    return out


def _referenced_by_string_or_decorator() -> tuple[set[str], set[str]]:
    """Function names that appear in string constants (``"package.module:function"`` registry targets) and the
    ``file:line`` of decorated functions (registered by their decorator)."""
    named: set[str] = set()
    decorated: set[str] = set()
    for path in py_files(*PACKAGES):
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value:
                named.add(node.value.rsplit(":", 1)[-1])
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.decorator_list:
                for line in [node.lineno] + [d.lineno for d in node.decorator_list]:
                    decorated.add(f"{path.relative_to(ROOT)}:{line}")
    return named, decorated


def dead_functions_ast(files: list[Path], users: list[Path]) -> list[str]:
    defined: list[tuple[Path, ast.AST]] = []
    seen: dict[str, int] = defaultdict(int)
    for path in files + users:
        tree = parse(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                seen[node.id] += 1
            elif isinstance(node, ast.Attribute):
                seen[node.attr] += 1
            elif isinstance(node, ast.alias):
                seen[(node.asname or node.name).split(".")[-1]] += 1
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
                seen[node.value] += 1
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and path in files:
                defined.append((path, node))
    out = []
    for path, node in defined:
        name = node.name
        if name.startswith("__") or name.startswith("test_") or node.decorator_list:
            continue
        if not seen.get(name):
            out.append(f"{path.relative_to(ROOT)}:{node.lineno}: unused function '{name}'")
    return out


def private_imports(files: list[Path]) -> list[str]:
    out = []
    for path in files:
        mod = module_name(path)
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.ImportFrom):
                target = resolve_from(mod, path.name == "__init__.py", node)
                if target.split(".")[0] not in OWN or target == mod:
                    continue
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        out.append(f"{path.relative_to(ROOT)}:{node.lineno} {target}.{alias.name}")
    return out


def subpackage_graph(top: str = "mapsage", root: Path = ROOT) -> dict[str, set[str]]:
    """Edges between the first-level parts of ``top`` (``mapsage.train`` -> ``mapsage.infer``), every import in a
    file counted, wherever it sits (module top, function body, ``if TYPE_CHECKING`` block)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in py_files(top, root=root):
        mod = module_name(path, root)
        parts = mod.split(".")
        if len(parts) < 2:
            continue
        src = parts[1]
        for node in ast.walk(parse(path)):
            for name in imported_modules(mod, path.name == "__init__.py", node):
                bits = name.split(".")
                if len(bits) >= 2 and bits[0] == top and bits[1] != src:
                    dst = bits[1]
                    if (root / top / dst).is_dir() or (root / top / f"{dst}.py").exists():
                        graph[src].add(dst)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def edges_within(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    members = set(comp)
    return [f"{a}->{b}" for a in sorted(comp) for b in sorted(graph.get(a, ())) if b in members]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the items behind each count")
    args = parser.parse_args()
    files = py_files(*PACKAGES)
    users = py_files(*USERS)

    every, own = function_imports(files)
    longf = long_functions(files)
    bigf = long_files(files)
    dead = dead_functions_vulture()
    dead_tool = "vulture --min-confidence 60, registrations excluded"
    if dead is None:
        dead, dead_tool = dead_functions_ast(files, users), "AST cross-reference"
    private = private_imports(files)
    graph = subpackage_graph()
    cyc = cycles(graph)

    print(f"files scanned: {len(files)} ({', '.join(PACKAGES)})")
    print(f"imports inside functions: {len(every)} (project's own modules: {len(own)})")
    print(f"functions > 100 lines: {len(longf)}")
    print(f"files > 400 lines: {len(bigf)}")
    print(f"dead functions ({dead_tool}): {len(dead)}")
    print(f"private names imported across modules: {len(private)}")
    print(f"import cycles among mapsage subpackages: {len(cyc)}")
    for comp in cyc:
        print(f"  cycle: {' / '.join(comp)}  edges: {', '.join(edges_within(graph, comp))}")
    if args.list:
        for title, items in (
            ("imports of the project's own modules inside functions", own),
            ("functions > 100 lines", longf),
            ("files > 400 lines", bigf),
            ("dead functions", dead),
            ("private names imported across modules", private),
        ):
            print(f"\n## {title}")
            for item in items:
                print(f"  {item}")


if __name__ == "__main__":
    main()
