"""Imports flow one way: no module of charlm imports, even from inside a function, a module that
imports it back. Measured from the code's own import statements (``ast``), not from a list."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "charlm"

# The compressor's one known cycle: kernel.py races its builds by running the whole compressor
# (kernel -> streaming -> codec -> kernel, and codec -> deepnet -> kernel with it). Issue 30 ("Rooms")
# takes it apart with a timing callback; until then it is the only cycle allowed, and this test fails
# when it is gone, so that the entry goes with it. (textfiles <-> corpora, the other, is gone.)
KNOWN_CYCLES = {("compression.codec", "compression.deepnet", "compression.kernel", "compression.streaming")}


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
    assert "corpora" in graph["dataset"]            # from .corpora import ... at the top
    assert "machine" in graph["compression.kernel"]  # from .. import machine, native_build
    assert "compression.streaming" in graph["compression.kernel"]  # inside _seconds()


def test_a_cycle_is_found_wherever_it_closes():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == {("a", "b", "c")}
    assert cycles({"a": {"b"}, "b": set()}) == set()


def test_no_module_imports_a_module_that_imports_it_back():
    assert cycles(import_graph()) == KNOWN_CYCLES
