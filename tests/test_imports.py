"""The package's import structure: no cycles, front ends on the public API, every import declared."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "rlm_sdk"
FRONT_END_ALLOWED = {
    "rlm_sdk",
    "rlm_sdk.providers",
    "rlm_sdk.repl",
    "rlm_sdk.testing",
    "rlm_sdk.otel",  # public; the server imports it only with tracing on
    "rlm_sdk._frontend",
    "rlm_sdk.server",  # the CLI's `serve` command is the server's public entry point
    "rlm_sdk.eval",  # the CLI's `eval` command is the eval harness's public entry point
    "rlm_sdk.ray",  # the CLI's `batch --engine ray` runs on the public Ray module
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, *, type_checking: bool = False) -> Iterator[str]:
    """Absolute names of every module ``path`` imports, lazy ones too; with ``type_checking``,
    those only the type checker sees too."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def _sibling(name: str) -> str:
        """A script's plain import of a module beside it (``import _wire``) is that module."""
        top = name.split(".")[0]
        return f"{package}.{name}" if (path.parent / f"{top}.py").exists() else name

    def walk(nodes: list[ast.stmt]) -> Iterator[str]:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node) and not type_checking:
                yield from walk(node.orelse)
                continue
            if isinstance(node, ast.Import):
                yield from (_sibling(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = _sibling(node.module or "")
                yield target
                for alias in node.names:  # `from . import _wire` imports a module
                    yield f"{target}.{alias.name}"
            yield from walk([c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)])

    tree = ast.parse(path.read_text(encoding="utf-8"))
    yield from walk(tree.body)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def _graph() -> dict[str, set[str]]:
    modules = _sources()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in _imports(path, type_checking=True):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles() -> None:
    """No module imports itself back through others, not even for the type checker."""
    graph = _graph()
    # A package's __init__ re-exports its modules; that edge is the package, not a cycle.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    assert _cycle(graph) is None


@pytest.mark.parametrize("front_end", ["cli", "server", "eval"])
def test_front_ends_use_the_public_api(front_end: str) -> None:
    """cli/, server/ and the eval extension import the SDK only through its public modules and
    rlm_sdk._frontend."""
    own = f"rlm_sdk.{front_end}"
    bad = set()
    for path in (SRC / front_end).rglob("*.py"):
        for target in _imports(path):
            top = target.split(".")[0]
            if top != "rlm_sdk" or target == own or target.startswith(own + "."):
                continue
            if (
                target not in FRONT_END_ALLOWED
                and target.rpartition(".")[0] not in FRONT_END_ALLOWED
            ) or (target.rpartition(".")[2].startswith("_") and target != "rlm_sdk._frontend"):
                bad.add(f"{path.relative_to(SRC)}: {target}")
    assert not bad


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    return {_normalise(re.split(r"[\s<>=!~\[;]", spec, maxsplit=1)[0]) for spec in specs}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_declared() -> None:
    """Each third-party package imported under src/ is a dependency or an extra in pyproject.toml."""
    distributions = importlib.metadata.packages_distributions()
    imported = set()
    for path in SRC.rglob("*.py"):
        for target in _imports(path):
            top = target.split(".")[0]
            if top and top != "rlm_sdk" and top not in sys.stdlib_module_names:
                imported.add(top)
    declared = _declared()
    missing = {
        top: distributions.get(top, [top])
        for top in imported
        if not any(_normalise(d) in declared for d in distributions.get(top, [top]))
    }
    assert not missing
