"""The import rules that keep the layout readable (issue 9), checked on the source with ``ast``.

- The standard layer (``dicomframes.standard``) imports nothing of dicomframes above it (only
  itself and the leaf module ``dicomframes.errors``), and no HTTP, web or DataFrame library.
- The server imports the standard layer, ``errors`` and itself only: never the client side.
- The converters (``dicomframes.convert``) import the standard layer, ``errors`` and themselves
  only: no HTTP, no server, no client.
- The top level holds only what users import; the layers live in their folders.
- No module imports another module's underscore names, nor reads them as attributes.
- No import cycles between modules, function-local imports included.
- No module is much over 600 lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dicomframes"
MAX_LINES = 600
# Third-party libraries the standard layer must not use: it has no HTTP, no web server, no
# DataFrames and no database.
STANDARD_FORBIDDEN = ("requests", "urllib3", "pandas", "starlette", "uvicorn", "sqlite3",
                      "ipywidgets", "matplotlib", "dask", "pyarrow")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@dataclass(frozen=True)
class Import:
    """One import statement's target: the module and the names taken from it."""

    importer: str
    target: str  # a dicomframes module, or a third-party top-level name
    names: tuple[str, ...]
    line: int


def resolve(importer: str, level: int, module: str | None) -> str:
    """The absolute module name of a (possibly relative) import in ``importer``."""
    if level == 0:
        return module or ""
    is_package = MODULES[importer].name == "__init__.py"
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(name: str) -> Iterator[Import]:
    """Every import in a module, function-local ones included."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, (), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, node.level, node.module)
            names = tuple(a.name for a in node.names)
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            if submodules:  # ``from . import tables`` imports the module dicomframes.convert.tables
                for sub in submodules:
                    yield Import(name, sub, (), node.lineno)
                rest = tuple(n for n in names if f"{target}.{n}" not in MODULES)
                if rest:
                    yield Import(name, target, rest, node.lineno)
            else:
                yield Import(name, target, names, node.lineno)


ALL_IMPORTS = [imp for name in MODULES for imp in imports_of(name)]


def internal(imp: Import) -> bool:
    return imp.target == "dicomframes" or imp.target.startswith("dicomframes.")


def in_layer(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def test_the_package_is_found() -> None:
    assert "dicomframes.standard.dicomjson" in MODULES
    assert "dicomframes.server" in MODULES
    assert len(ALL_IMPORTS) > 100


def test_standard_layer_imports_nothing_above_it() -> None:
    bad = [f"{i.importer}:{i.line} imports {i.target}" for i in ALL_IMPORTS
           if in_layer(i.importer, "dicomframes.standard") and internal(i)
           and not in_layer(i.target, "dicomframes.standard")
           and i.target != "dicomframes.errors"]
    assert not bad, "the standard layer must not import the layers above it:\n" + "\n".join(bad)


def test_standard_layer_has_no_http_web_or_dataframes() -> None:
    bad = [f"{i.importer}:{i.line} imports {i.target}" for i in ALL_IMPORTS
           if in_layer(i.importer, "dicomframes.standard")
           and i.target.split(".")[0] in STANDARD_FORBIDDEN]
    assert not bad, "\n".join(bad)


def test_server_never_imports_the_client_side() -> None:
    allowed = ("dicomframes.standard", "dicomframes.server")
    bad = [f"{i.importer}:{i.line} imports {i.target}" for i in ALL_IMPORTS
           if in_layer(i.importer, "dicomframes.server") and internal(i)
           and not any(in_layer(i.target, a) for a in allowed)
           and i.target != "dicomframes.errors"]
    assert not bad, "the server may import the standard layer only:\n" + "\n".join(bad)


def test_converters_import_only_the_standard_layer() -> None:
    allowed = ("dicomframes.standard", "dicomframes.convert")
    bad = [f"{i.importer}:{i.line} imports {i.target}" for i in ALL_IMPORTS
           if in_layer(i.importer, "dicomframes.convert") and internal(i)
           and not any(in_layer(i.target, a) for a in allowed)
           and i.target != "dicomframes.errors"]
    assert not bad, "the converters may import the standard layer only:\n" + "\n".join(bad)


def test_converters_have_no_http_or_server() -> None:
    forbidden = ("requests", "urllib3", "starlette", "uvicorn", "sqlite3", "ipywidgets")
    bad = [f"{i.importer}:{i.line} imports {i.target}" for i in ALL_IMPORTS
           if in_layer(i.importer, "dicomframes.convert")
           and i.target.split(".")[0] in forbidden]
    assert not bad, "\n".join(bad)


#: What users import, at the top of the package; everything else lives in a layer's folder.
TOP_LEVEL = {"dicomframes", "dicomframes.__main__", "dicomframes.errors",
             "dicomframes.accessor", "dicomframes.plotting", "dicomframes.dask",
             "dicomframes.cli", "dicomframes.imaging"}


def test_top_level_holds_only_what_users_import() -> None:
    top = {name for name in MODULES if name.count(".") <= 1
           and MODULES[name].parent == PACKAGE}
    assert top <= TOP_LEVEL, f"modules at the top that belong in a layer: {sorted(top - TOP_LEVEL)}"


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_module_imports_another_modules_underscore_names() -> None:
    bad = [f"{i.importer}:{i.line} takes {', '.join(filter(private, i.names))} from {i.target}"
           for i in ALL_IMPORTS
           if internal(i) and i.target != i.importer and any(map(private, i.names))]
    assert not bad, "\n".join(bad)


def module_aliases(name: str) -> dict[str, str]:
    """Local names bound to dicomframes modules in ``name`` (``from . import pixels``)."""
    aliases: dict[str, str] = {}
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = resolve(name, node.level, node.module)
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{target}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    aliases[alias.asname] = alias.name
    return aliases


def test_no_module_reads_another_modules_underscore_attributes() -> None:
    bad = []
    for name, path in MODULES.items():
        aliases = module_aliases(name)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and private(node.attr)
                    and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and aliases[node.value.id] != name):
                bad.append(f"{name}:{node.lineno} reads {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in ALL_IMPORTS:
        if imp.target in MODULES and imp.target != imp.importer:
            graph[imp.importer].add(imp.target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles (function-local imports count):\n" + "\n".join(
        " <-> ".join(c) for c in found)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_600_lines(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by concern"
