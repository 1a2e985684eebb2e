"""Imports flow one way: no module of charlm imports, even from inside a function, a module that
imports it back, and no room imports from a room above it. Measured from the code's own import
statements (``ast``), not from a list."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "charlm"

# The rooms from the ground up. A module may import from its own floor and from floors below it, never
# from one above: the tree says which way the imports flow. A room is a folder, or a module of the
# package's root (each listed by name).
FLOORS = [
    {"suggest", "fields", "cache", "cadence"},   # the words: flags and their checks, the cache, cadences
    {"hardware"},                                # what this machine can do, and the choices made from it
    {"data"},                                    # text in, token ids and batches out
    {"models"},                                  # the networks
    {"config", "generation"},                    # a run's settings; sampling from any model
    {"checkpoint"},                              # a run folder: config, vocabulary and weights
    {"evaluation", "inspection"},                # scoring a run, and looking inside it
    {"training", "compression"},                 # what is built on runs: training them, coding with them
    {"serve", "export", "d2l", "implementations"},  # the explorer, a run as a page or ONNX; the book's API;
                                                    # the map of the fast paths
    {"", "info", "cli", "__main__"},             # the public face and the command line
]


def room(module: str) -> str:
    """``data.corpora`` -> ``data``; a module of the root is its own room."""
    return module.split(".")[0] if "." in module else module


def floor_of(module: str) -> int:
    return next(i for i, rooms in enumerate(FLOORS) if room(module) in rooms)


def module_name(path: Path) -> str:
    """``src/charlm/compression/kernel.py`` -> ``compression.kernel``; a package is its folder."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The charlm modules that `name`'s file imports, wherever the import statement stands.

    ``from . import machine`` in ``auto`` names ``machine``; ``from ..models import RNNLM`` in
    ``compression.codec`` names the package ``models``; ``from .models.native import x`` names
    ``models.native``. A name that is a submodule (``from . import native`` in ``models``) counts too."""
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".") if name else []
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.removeprefix("charlm.") for a in node.names if a.name.startswith("charlm.")}
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
        elif (node.module or "").split(".")[0] == "charlm":
            target = node.module.removeprefix("charlm").removeprefix(".")
        else:
            continue
        for alias in node.names:  # a submodule, or else a name the module `target` defines
            submodule = f"{target}.{alias.name}".strip(".")
            found.add(submodule if submodule in known else target)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    files = modules()
    return {name: imported(name, path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.add(tuple(sorted(group)))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "data.corpora" in graph["data.dataset"]              # from .corpora import ... at the top
    assert "hardware.machine" in graph["compression.build"]     # from ..hardware import machine, ...
    assert "training.auto" in graph["cli.commands"]             # from ..training import auto, in a function


def test_a_cycle_is_found_wherever_it_closes():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == {("a", "b", "c")}
    assert cycles({"a": {"b"}, "b": set()}) == set()


def test_no_module_imports_a_module_that_imports_it_back():
    assert cycles(import_graph()) == set()


def test_every_room_stands_on_a_floor():
    assert {room(m) for m in modules()} == set().union(*FLOORS)


def test_no_room_imports_from_a_room_above_it():
    upward = sorted((a, b) for a, targets in import_graph().items() for b in targets
                    if floor_of(b) > floor_of(a))
    assert upward == []
