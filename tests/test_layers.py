"""The architecture, checked: I/O at the edges, the core on labelled data, no import cycle.

Every module of ``xbkg`` belongs to one layer and imports (at module level or
inside functions) only from its own layer and the layers below:

1. the data model: names, errors, axes, groupings, region lists, options;
2. ``xbkg.io``: reads and writes files, never imports the core;
3. the core: transforms labelled data, never reads or writes files;
4. the orchestration: runs the pass over the events, builds, writes, plots;
5. the user interfaces: the command line, the accessor, the package itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS = {
    "data model": {
        "xbkg._version",
        "xbkg.conventions",
        "xbkg.errors",
        "xbkg.axes",
        "xbkg.grouping",
        "xbkg.regions",
        "xbkg.options",
    },
    "io": "xbkg.io.",
    "core": {
        "xbkg.exclusion",
        "xbkg.fov",
        "xbkg.fov_model",
        "xbkg.model",
        "xbkg.conditions",
        "xbkg.products",
        "xbkg.prediction",
        "xbkg.validation",
        "xbkg.truth",
        "xbkg.schedule",
    },
    "orchestration": {
        "xbkg.cube",
        "xbkg.pipeline",
        "xbkg.plotting",
        "xbkg.simulate",
    },
    "interfaces": {"xbkg", "xbkg.cli", "xbkg.__main__", "xbkg.accessor"},
}
ORDER = list(LAYERS)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    for name, members in LAYERS.items():
        if isinstance(members, str):
            if module.startswith(members) or module == members.rstrip("."):
                return name
        elif module in members:
            return name
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The xbkg modules ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not (node.module == "xbkg" or node.module.startswith("xbkg.")):
                continue
            submodules = {f"{node.module}.{a.name}" for a in node.names} & modules
            # "from xbkg import exclusion" imports the submodule (and runs the package,
            # which every module does anyway); "from xbkg.x import f" imports xbkg.x.
            found |= submodules or {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "xbkg"}
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in (SRC / "xbkg").rglob("*.py")}
    return {m: imports_of(p, set(paths)) - {m, "xbkg.io"} for m, p in paths.items()}


def test_every_module_imports_only_its_layer_and_below(graph):
    wrong = []
    for module, deps in sorted(graph.items()):
        rank = ORDER.index(layer_of(module))
        for dep in sorted(deps):
            if dep == "xbkg" and module != "xbkg":
                wrong.append(f"{module} imports the package xbkg (import the submodule instead)")
            elif ORDER.index(layer_of(dep)) > rank:
                wrong.append(f"{module} ({layer_of(module)}) imports {dep} ({layer_of(dep)})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle(graph):
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_layers_are_the_modules():
    """Every module is in a layer, and every listed module exists."""
    modules = {module_name(p) for p in (SRC / "xbkg").rglob("*.py")} - {"xbkg.io"}
    for module in modules:
        layer_of(module)
    listed = {m for v in LAYERS.values() if isinstance(v, set) for m in v}
    assert listed <= modules, listed - modules
