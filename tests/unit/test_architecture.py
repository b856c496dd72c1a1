"""The import rules of docs/architecture.md, checked on the source: which room may import which,
which third-party libraries only one room may import, and no import cycles between modules."""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "qbit_consumer"

#: What the two paths (commands, tracking) stand on: the adapters and everything below them.
PATH_MAY_IMPORT = {
    "broker",
    "config",
    "contract",
    "counters",
    "errors",
    "model",
    "qbit",
    "redact",
    "threads",
}

#: Each room (a top-level module or package of qbit_consumer) and the rooms it may import.
#: The floors: the domain and the wire format at the bottom, the adapters above them, the two
#: paths (commands, tracking) above the adapters and independent of each other, the
#: composition root and the command line on top.
MAY_IMPORT: dict[str, set[str]] = {
    "model": set(),
    "errors": set(),
    "threads": {"errors"},
    "counters": set(),
    "contract": {"errors", "model"},
    "config": {"contract", "errors"},
    "redact": {"config"},
    "logs": {"config", "redact"},
    "broker": {"config", "contract", "errors", "redact"},
    "qbit": {"config", "errors", "model", "redact"},
    "commands": PATH_MAY_IMPORT,
    "tracking": PATH_MAY_IMPORT,
    "history": {"contract", "errors", "model"},
    "health": {"config", "threads"},
    "status": {"__init__", "config", "contract", "counters", "model"},
    "rebuilding": {
        "broker",
        "config",
        "contract",
        "errors",
        "history",
        "model",
        "qbit",
        "tracking",
    },
    "service": {
        "commands",
        "config",
        "counters",
        "errors",
        "health",
        "qbit",
        "rebuilding",
        "status",
        "threads",
        "tracking",
    },
    "cli": {
        "broker",
        "commands",
        "config",
        "contract",
        "errors",
        "health",
        "history",
        "logs",
        "qbit",
        "redact",
        "service",
        "tracking",
    },
    "__main__": {"cli"},
    "__init__": set(),
}

#: Third-party libraries that only one room may import: their errors are translated there.
OWNED_BY: dict[str, str] = {
    "pika": "broker",
    "qbittorrentapi": "qbit",
    "requests": "qbit",
    "ijson": "qbit",
    "urllib3": "qbit",
    "fastbencode": "contract",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path, known: set[str]) -> Iterator[str]:
    """Every module ``path`` imports, ours resolved to the module (``from qbit_consumer.x
    import y`` is the module ``qbit_consumer.x.y`` when that is one), at any depth of the file
    (a function-level import is an import too)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                nested = f"{node.module}.{alias.name}"
                yield nested if nested in known else node.module


@functools.cache
def files() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    return {
        module: {name for name in imports_of(path, set(files())) if name != "__future__"}
        for module, path in files().items()
    }


def test_the_rules_name_every_room_of_the_package():
    rooms = {room_of(module) for module in import_graph()}
    assert rooms == set(MAY_IMPORT), "a new room needs its row in MAY_IMPORT (and in the docs)"


def test_each_room_imports_only_the_rooms_below_it():
    broken = sorted(
        f"{module} imports {name}"
        for module, names in import_graph().items()
        for name in names
        if name.startswith("qbit_consumer.")
        and room_of(name) != room_of(module)
        and room_of(name) not in MAY_IMPORT[room_of(module)]
    )
    assert broken == []


@pytest.mark.parametrize("library", sorted(OWNED_BY))
def test_a_third_party_library_is_imported_by_its_own_room_only(library):
    importers = sorted(
        module
        for module, names in import_graph().items()
        if any(name == library or name.startswith(f"{library}.") for name in names)
    )
    assert importers, f"nothing imports {library}: the rule is stale"
    assert {room_of(module) for module in importers} == {OWNED_BY[library]}, importers


def test_there_are_no_import_cycles_between_modules():
    graph = {
        module: {name for name in names if name in files()}
        for module, names in import_graph().items()
    }
    # A package imports its own modules from its __init__ to re-export them: not a cycle.
    for module, names in graph.items():
        names -= {name for name in list(names) if module != name and name.startswith(module + ".")}
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for name in sorted(graph[module]):
            if state.get(name) == 1:
                cycles.append([*path[path.index(name) :], name])
            elif name not in state:
                visit(name, [*path, name])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
