"""The import graph of runtime/ and pipeline_tools/, read from the source (ast, nothing imported): every
`import` and `from ... import`, relative ones and those inside functions included.

- no cycle among the project's modules;
- mlserver is imported only by the adapter (runtime/model.py) and runtime/integration/;
- the served package (runtime/) never imports the operator tools (pipeline_tools/), which are not in the image;
- the serving core (runtime/core) imports nothing from the packages around it;
- the runtime's packages import only to the left in LAYERS (docs/architecture.md, "The direction of imports");
- the operator tools import only the runtime's framework-free core and its log format.

An import names the module it makes the importer run: `from package import name` is an edge to
package.name when that is a module, else to the package; `import a.b.c` is an edge to a.b.c.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("runtime", "pipeline_tools")
MLSERVER_ALLOWED = ("runtime.model", "runtime.integration")
CORE = "runtime.core"
AROUND_THE_CORE = (
    "runtime.policy",
    "runtime.edge",
    "runtime.features",
    "runtime.observation",
    "runtime.service",
    "runtime.integration",
    "runtime.model",
)
# The runtime's packages, each importing only itself and those to its left.
LAYERS = (
    ("runtime.core",),
    ("runtime.observation",),
    ("runtime.policy",),
    ("runtime.features",),
    ("runtime.edge",),
    ("runtime.service",),
    ("runtime.model", "runtime.integration", "runtime"),
)
TOOLS_MAY_IMPORT = ("runtime.core", "runtime.observation.logs")
# Edges of a known cycle that another change removes, (importer, imported) -> that change. They are left
# out of the cycle search; each must still exist, so an entry goes once its edge does.
KNOWN_CYCLE_EDGES: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} (line {self.line})"


def modules(repo: Path, roots: tuple[str, ...]) -> dict[str, Path]:
    """Every module under the roots by dotted name (a package by its own name, for its __init__.py)."""
    found = {}
    for root in roots:
        for path in sorted((repo / root).rglob("*.py")):
            parts = path.relative_to(repo).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def imports(repo: Path, roots: tuple[str, ...]) -> list[Import]:
    """Every import statement anywhere in every module, resolved to the module it imports."""
    known = modules(repo, roots)
    found = []
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                is_package = path.name == "__init__.py"
                found += [Import(name, target, node.lineno) for target in _targets(node, name, is_package, set(known))]
    return found


def in_package(module: str, packages: tuple[str, ...] | str) -> bool:
    prefixes = (packages,) if isinstance(packages, str) else packages
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def find_cycle(edges: list[Import]) -> list[Import] | None:
    """One cycle of the graph as the imports that close it, or None (depth-first, iterative)."""
    graph: dict[str, list[Import]] = {}
    for each in edges:
        graph.setdefault(each.importer, []).append(each)
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[Import] = []
        on_path = {start: 0}
        stack = [(start, iter(graph.get(start, [])))]
        while stack:
            node, children = stack[-1]
            edge = next(children, None)
            if edge is None:
                stack.pop()
                done.add(node)
                del on_path[node]
                if path:
                    path.pop()
            elif edge.imported in on_path:
                return path[on_path[edge.imported] :] + [edge]
            elif edge.imported not in done:
                path.append(edge)
                on_path[edge.imported] = len(path)
                stack.append((edge.imported, iter(graph.get(edge.imported, []))))
    return None


def project_edges(found: list[Import], known: dict[str, Path]) -> list[Import]:
    """The imports from one of `known` to another (a package importing a name of its own is no edge)."""
    return [i for i in found if i.imported in known and i.importer != i.imported]


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    return imports(REPO, ROOTS)


def test_the_walk_sees_the_project() -> None:
    # The rules below pass vacuously on an empty walk: the layout they name must be there.
    known = modules(REPO, ROOTS)
    assert {"runtime.model", CORE, "runtime.integration", "pipeline_tools.rollout.cli"} <= known.keys()
    assert all(p in known for p in AROUND_THE_CORE)


def test_no_import_cycle_among_the_project_modules(graph: list[Import]) -> None:
    edges = project_edges(graph, modules(REPO, ROOTS))
    present = {(e.importer, e.imported) for e in edges}
    gone = [f"{a} -> {b} ({why})" for (a, b), why in KNOWN_CYCLE_EDGES.items() if (a, b) not in present]
    assert not gone, f"known cycle edges no longer there, drop them from KNOWN_CYCLE_EDGES: {gone}"
    cycle = find_cycle([e for e in edges if (e.importer, e.imported) not in KNOWN_CYCLE_EDGES])
    assert cycle is None, "import cycle:\n  " + "\n  ".join(map(str, cycle or []))


def test_only_the_adapter_and_integration_import_mlserver(graph: list[Import]) -> None:
    offending = [
        str(i) for i in graph if in_package(i.imported, "mlserver") and not in_package(i.importer, MLSERVER_ALLOWED)
    ]
    assert not offending, offending
    assert any(i.importer == "runtime.model" and in_package(i.imported, "mlserver") for i in graph)


def test_the_served_package_never_imports_the_operator_tools(graph: list[Import]) -> None:
    offending = [
        str(i) for i in graph if in_package(i.importer, "runtime") and in_package(i.imported, "pipeline_tools")
    ]
    assert not offending, offending


def test_the_core_imports_nothing_from_the_packages_around_it(graph: list[Import]) -> None:
    offending = [str(i) for i in graph if in_package(i.importer, CORE) and in_package(i.imported, AROUND_THE_CORE)]
    assert not offending, offending


def layer_of(module: str) -> int | None:
    for index, layer in enumerate(LAYERS):
        if module in layer or any(in_package(module, (name,)) for name in layer if name != "runtime"):
            return index
    return None


def test_the_runtime_packages_import_only_to_their_left(graph: list[Import]) -> None:
    offending = []
    for i in graph:
        importer, imported = layer_of(i.importer), layer_of(i.imported)
        if importer is not None and imported is not None and imported > importer:
            offending.append(f"{i}: {LAYERS[importer][0]} may not import {LAYERS[imported][0]}")
    assert not offending, offending


def test_the_operator_tools_import_only_the_framework_free_core(graph: list[Import]) -> None:
    offending = [
        str(i)
        for i in graph
        if in_package(i.importer, "pipeline_tools")
        and in_package(i.imported, "runtime")
        and not in_package(i.imported, TOOLS_MAY_IMPORT)
    ]
    assert not offending, offending


# ---------------------------------------------------------------- the walk itself, on a made-up tree


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_relative_function_level_and_aliased_imports_are_seen(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "app/__init__.py": "from . import util\n",
            "app/util.py": "import os\n",
            "app/sub/__init__.py": "",
            "app/sub/deep.py": (
                "from typing import TYPE_CHECKING\n"
                "import app.util as u\n"
                "from ..util import helper\n"
                "from .. import sub\n"
                "def late():\n"
                "    from .sibling import thing\n"
                "    import mlserver.model\n"
                "if TYPE_CHECKING:\n"
                "    from app import util\n"
            ),
            "app/sub/sibling.py": "",
        },
    )
    found = {(i.importer, i.imported, i.line) for i in imports(tmp_path, ("app",))}
    assert {
        ("app", "app.util", 1),
        ("app.util", "os", 1),
        ("app.sub.deep", "app.util", 2),
        ("app.sub.deep", "app.util", 3),  # helper is a name in app.util
        ("app.sub.deep", "app.sub", 4),
        ("app.sub.deep", "app.sub.sibling", 6),
        ("app.sub.deep", "mlserver.model", 7),
        ("app.sub.deep", "app.util", 9),
    } <= found


def test_a_cycle_through_a_function_level_relative_import_is_found(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/a.py": "from app import b\n",
            "app/b.py": "import app.c\n",
            "app/c.py": "import json\n\ndef late():\n    from .a import run\n",
            "app/d.py": "from app import a\n",
        },
    )
    edges = project_edges(imports(tmp_path, ("app",)), modules(tmp_path, ("app",)))
    cycle = find_cycle(edges)
    assert cycle is not None
    assert sorted(str(e) for e in cycle) == [
        "app.a -> app.b (line 1)",
        "app.b -> app.c (line 1)",
        "app.c -> app.a (line 4)",
    ]
    assert find_cycle([e for e in edges if e.importer != "app.c"]) is None
