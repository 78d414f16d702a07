"""The house rules of issue #19, checked by reading the source with ``ast`` (nothing is imported).

* no module in ``seqprep/`` over 800 lines;
* at most 8 ``.py`` files directly in ``seqprep/``;
* no module imports a private name (one leading underscore, not a dunder) from a public module
  (a module whose dotted path has no component starting with ``_``); importing a private
  MODULE (``from seqprep.running import _tfdata``) is a module import and allowed;
* no import circle between modules, counting imports inside functions too (a lazy import still
  ties two modules together) and following a package's lazy exports
  (``seqprep._core.lazy.attach``) to the module that defines the name.

Every check reports every offender, with its file and line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "seqprep"
MAX_LINES = 800
MAX_TOP_FILES = 8


@dataclass(frozen=True)
class Import:
    """One imported name (or module): where the import is and what it reaches."""

    file: str  # path relative to the repository
    line: int
    importer: str  # dotted module name of the importing file
    source: str  # the module named after ``from`` (or imported whole)
    name: str | None  # the name taken from ``source``; None for ``import source``


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _files() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(module: str) -> bool:
    return _files().get(module, Path()).name == "__init__.py"


def _is_private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))


def _private_name(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _absolute(node: ast.ImportFrom, importer: str) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


@cache
def _imports() -> tuple[Import, ...]:
    """Every import of a seqprep module by a seqprep module, at any depth of the file."""
    found = []
    for module, path in _files().items():
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Import):
                found += [Import(rel, node.lineno, module, a.name, None) for a in node.names
                          if a.name.split(".")[0] == "seqprep"]
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(node, module)
                if source.split(".")[0] == "seqprep":
                    found += [Import(rel, node.lineno, module, source, a.name)
                              for a in node.names]
    return tuple(found)


@cache
def _lazy_exports(package: str) -> dict[str, str]:
    """``{name: module}`` a package's ``attach(__name__, {...})`` declares; the front door
    (``seqprep``) re-exports every stage package's names."""
    path = _files().get(package)
    if path is None or path.name != "__init__.py":
        return {}
    exports: dict[str, str] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "attach"
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Dict)):
            for key, value in zip(node.args[1].keys, node.args[1].values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Constant):
                    exports[key.value] = package + value.value  # "._module" -> absolute
    if package == "seqprep":
        for stage in sorted(_files()):
            if stage.count(".") == 1 and _is_package(stage) and not _is_private(stage):
                for name, module in _lazy_exports(stage).items():
                    exports.setdefault(name, module)
    return exports


def _target(imp: Import) -> str:
    """The module an import really reaches: a submodule imported by name, the module a
    package's lazy export names, or the module named after ``from``."""
    if imp.name is None:
        return imp.source
    sub = f"{imp.source}.{imp.name}"
    if sub in _files():
        return sub
    return _lazy_exports(imp.source).get(imp.name, imp.source)


def _shown(offenders: list[str]) -> str:
    return f"{len(offenders)} offender(s):\n" + "\n".join(offenders)


def test_no_module_over_800_lines():
    long = []
    for path in _files().values():
        count = len(path.read_text().splitlines())
        if count > MAX_LINES:
            long.append(f"{path.relative_to(ROOT)}:{count}: {count} lines (limit {MAX_LINES})")
    assert not long, _shown(long)


def test_at_most_8_files_at_the_top_of_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_FILES, (
        f"{len(top)} .py files directly in seqprep/ (limit {MAX_TOP_FILES}): {top}"
    )


def _private_from_public(imports: tuple[Import, ...]) -> list[str]:
    bad = []
    for imp in imports:
        if imp.name is None or not _private_name(imp.name) or _is_private(imp.source):
            continue
        if f"{imp.source}.{imp.name}" in _files():  # a private module: a module import
            continue
        bad.append(f"{imp.file}:{imp.line}: `{imp.importer}` imports private `{imp.name}` "
                   f"from public `{imp.source}`")
    return bad


def test_no_private_name_imported_from_a_public_module():
    bad = _private_from_public(_imports())
    assert not bad, _shown(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan), in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # iterative deepening would be longer; the graph is small
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, ()):
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for group in sorted(groups):
        members, start = set(group), group[0]
        paths, queue = {start: [start]}, [start]  # shortest way back to the start
        while queue:
            v = queue.pop(0)
            for w in sorted(graph[v] & members):
                if w == start:
                    cycles.append(paths[v] + [start])
                    queue = []
                    break
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
    return cycles


def _import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], Import]]:
    graph: dict[str, set[str]] = {m: set() for m in _files()}
    where: dict[tuple[str, str], Import] = {}
    for imp in _imports():
        target = _target(imp)
        if target == imp.importer or target not in _files():
            continue
        graph[imp.importer].add(target)
        where.setdefault((imp.importer, target), imp)
    return graph, where


def test_no_import_circle():
    graph, where = _import_graph()
    assert sum(map(len, graph.values())) > 100, "the import graph was not read"
    bad = []
    for cycle in _cycles(graph):
        steps = [where[(a, b)] for a, b in zip(cycle, cycle[1:], strict=False)]
        bad.append(" -> ".join(cycle) + "\n" + "\n".join(
            f"    {s.file}:{s.line}: imports {s.source}"
            + (f" ({s.name})" if s.name else "") for s in steps))
    assert not bad, _shown(bad)


def test_the_checks_catch_what_they_look_for():
    """The rules' own helpers, on known cases (so that a check cannot pass by reading nothing)."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"a"}}) == [["a", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert _is_private("seqprep.running._tfdata") and not _is_private("seqprep.tools.demo")
    assert _private_name("_x") and not _private_name("__version__")
    assert _lazy_exports("seqprep")["BucketSampler"] == "seqprep.planning._sampler"
    assert len(_imports()) > 100
    probe = (Import("x.py", 3, "seqprep.a", "seqprep.tools.demo", "_helper"),  # offender
             Import("x.py", 4, "seqprep.a", "seqprep.running", "_tfdata"),  # a private module
             Import("x.py", 5, "seqprep.a", "seqprep.running._tfdata", "_stage"),  # private
             Import("x.py", 6, "seqprep.a", "seqprep", "__version__"))  # a dunder
    assert _private_from_public(probe) == [
        "x.py:3: `seqprep.a` imports private `_helper` from public `seqprep.tools.demo`"]
    lazy = Import("x.py", 1, "seqprep.a", "seqprep.planning", "as_boundaries")
    assert _target(lazy) == "seqprep.planning._boundaries"  # a lazy export, followed
    module = Import("x.py", 1, "seqprep.a", "seqprep.running", "_tfdata")
    assert _target(module) == "seqprep.running._tfdata"  # a submodule imported by name
