"""The layout's rules, checked on the source (docs/ARCHITECTURE.md states them):

- at most 10 modules sit in ``pipeline/`` outside its packages;
- no import cycle among modules (module-level imports; ``TYPE_CHECKING`` ones excepted);
- an import inside a function only for what is optional or costly to load (Ray, the emulator's
  server), never to dodge a cycle;
- no module imports an underscore name from another module;
- no class inherits from more than one class of the project;
- the emulator imports nothing of the rest of the pipeline;
- comments cite the repo's own ``docs/``, never a document a clone does not have (a "SPEC n"),
  and every ``docs/<page>.md#<anchor>`` they cite exists.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "pipeline"
TOP_LEVEL_MAX = 10
# Loaded on first use, and why: each of these is optional or slow to import.
LAZY_ALLOWED = {
    "pipeline.distributed.driver": "Ray is an optional extra; without --ray none of it loads",
    "pipeline.emulator": "only --emulator needs the server and its image code",
    "pipeline.review.server": "aiohttp's web server: only `pipeline review` serves the page",
}


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    top_imports: set[str] = field(default_factory=set)  # pipeline modules, module level
    lazy_imports: set[str] = field(default_factory=set)  # pipeline modules, inside functions
    underscore_imports: list[str] = field(default_factory=list)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Module]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        found[_module_name(path)] = Module(_module_name(path), path, ast.parse(path.read_text()))
    for module in found.values():
        _collect(module, found)
    return found


def _targets(node: ast.Import | ast.ImportFrom, module: Module, known: set[str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names if alias.name.startswith("pipeline"))
        return
    base = node.module or ""
    if node.level:  # relative: from the module's package
        package = module.name.split(".")
        if module.path.name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, *([node.module] if node.module else [])])
    if not base.startswith("pipeline"):
        return
    yield base
    for alias in node.names:  # ``from pipeline.images import masks`` imports a module
        if f"{base}.{alias.name}" in known:
            yield f"{base}.{alias.name}"


def _collect(module: Module, known: dict[str, Module]) -> None:
    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            function = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            checking = type_checking or (
                isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            )
            if isinstance(child, ast.Import | ast.ImportFrom):
                for target in _targets(child, module, set(known)):
                    if function:
                        module.lazy_imports.add(target)
                    elif not checking:
                        module.top_imports.add(target)
                if isinstance(child, ast.ImportFrom) and child.module != "__future__":
                    module.underscore_imports += [
                        f"{child.module}.{alias.name}"
                        for alias in child.names
                        if alias.name.startswith("_") and not alias.name.startswith("__")
                    ]
            visit(child, function, checking)

    visit(module.tree, False, False)


MODULES = _modules()


def test_few_modules_outside_packages() -> None:
    loose = sorted(path.name for path in ROOT.glob("*.py"))
    assert len(loose) <= TOP_LEVEL_MAX, loose


def test_no_import_cycle() -> None:
    graph = {
        name: {t for t in module.top_imports if t in MODULES and t != name}
        for name, module in MODULES.items()
    }
    cycle = _find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := walk(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


def test_imports_inside_functions_are_only_for_optional_or_costly_modules() -> None:
    unexpected = sorted(
        f"{module.name} imports {target} inside a function"
        for module in MODULES.values()
        for target in module.lazy_imports
        if not any(target == lazy or target.startswith(lazy + ".") for lazy in LAZY_ALLOWED)
    )
    assert unexpected == []


def test_no_underscore_name_crosses_a_module() -> None:
    crossing = sorted(
        f"{module.name}: {name}"
        for module in MODULES.values()
        for name in module.underscore_imports
    )
    assert crossing == []


def test_no_class_has_two_project_parents() -> None:
    project_classes = {
        node.name
        for module in MODULES.values()
        for node in ast.walk(module.tree)
        if isinstance(node, ast.ClassDef)
    }
    mixed = sorted(
        f"{module.name}.{node.name}"
        for module in MODULES.values()
        for node in ast.walk(module.tree)
        if isinstance(node, ast.ClassDef)
        and sum(isinstance(b, ast.Name) and b.id in project_classes for b in node.bases) > 1
    )
    assert mixed == []


@pytest.mark.parametrize(
    "name", sorted(n for n in MODULES if n.startswith("pipeline.emulator")), ids=str
)
def test_the_emulator_imports_nothing_of_the_pipeline(name: str) -> None:
    outside = {
        target
        for target in MODULES[name].top_imports | MODULES[name].lazy_imports
        if not target.startswith("pipeline.emulator")
    }
    assert outside == set()


def test_the_checker_sees_a_cycle_and_a_lazy_import() -> None:
    # The rules above must be able to fail: a cycle and a lazy import are found when present.
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    assert "pipeline.distributed.driver" in MODULES["pipeline.runner.session"].lazy_imports


REPO = ROOT.parent
CITED = re.compile(r"docs/([a-z-]+\.md)#([a-z0-9-]+)")
OUTSIDE_DOC = re.compile(r"(?<![A-Z])SPEC\b")


def _sources() -> Iterator[Path]:
    this = Path(__file__).resolve()  # it names what it looks for
    for folder in ("pipeline", "tests", "bench"):
        yield from (path for path in sorted((REPO / folder).rglob("*.py")) if path != this)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to -."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_comments_cite_the_repos_own_docs() -> None:
    outside = [
        f"{path.relative_to(REPO)}:{number}"
        for path in _sources()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE_DOC.search(line)
    ]
    assert outside == [], "cite docs/<page>.md#<anchor> instead"
    anchors: dict[str, set[str]] = {}
    broken = []
    for path in _sources():
        for page, anchor in CITED.findall(path.read_text()):
            known = anchors.setdefault(page, _anchors(REPO / "docs" / page))
            if anchor not in known:
                broken.append(f"{path.relative_to(REPO)}: docs/{page}#{anchor}")
    assert broken == []
