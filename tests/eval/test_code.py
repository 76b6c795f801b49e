"""code_lookup: the generated package is real Python; each gold letter is re-derived by parsing
it with ``ast`` and by importing and calling it."""

from __future__ import annotations

import ast
import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlm_sdk.eval import Sample, generate
from rlm_sdk.eval._code import CODE_QUESTIONS


def files(sample: Sample) -> dict[str, str]:
    """Every file of the package, by its path."""
    parts = re.split(r"^# ===== file: (\S+) =====\n", sample.context, flags=re.M)
    assert parts[0] == ""
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def options(sample: Sample) -> dict[str, str]:
    return dict(re.findall(r"^([A-D])\) (.+)$", sample.query, re.M))


def graph(sources: dict[str, str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Each function's callees (by bare name) and the config keys it reads, from the syntax trees."""
    calls: dict[str, set[str]] = {}
    keys: dict[str, set[str]] = {}
    for source in sources.values():
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and node.name != "get":
                callees, read = set(), set()
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Call):
                        name = (
                            sub.func.attr
                            if isinstance(sub.func, ast.Attribute)
                            else getattr(sub.func, "id", "")
                        )
                        if name == "get":
                            read.add(sub.args[0].value)  # type: ignore[attr-defined]
                        elif name != "len":
                            callees.add(name)
                assert node.name not in calls, "function names are unique"
                calls[node.name], keys[node.name] = callees, read
    return calls, keys


def reach(calls: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = list(calls[start])
    while stack:
        f = stack.pop()
        if f not in seen:
            seen.add(f)
            stack.extend(calls[f])
    return seen


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path for a generated package, removed (with its modules) afterwards."""
    sys.path.insert(0, str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in set(sys.modules) - before:
        del sys.modules[name]


def entry(sample: Sample) -> tuple[str, str]:
    m = re.search(r"(\w+)\.(\w+)\(\)", sample.query)
    assert m
    return m.group(1), m.group(2)


@pytest.mark.parametrize("question", CODE_QUESTIONS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_gold_letter_matches_the_code(question: str, seed: int, installed: Path) -> None:
    """The gold option is the one the package's real call graph, config reads or return value pick."""
    s = generate("code_lookup", "24k", seed=seed, params={"question": question})
    assert s.kind == question and len(s.choices) == 4 and len(set(s.choices)) == 4
    sources = files(s)
    pkg = next(iter(sources)).split("/")[0]
    for path, source in sources.items():
        target = installed / path
        target.parent.mkdir(exist_ok=True)
        target.write_text(source, encoding="utf-8")
    (installed / pkg / "__init__.py").write_text("", encoding="utf-8")
    calls, keys = graph(sources)
    opts = options(s)
    if question == "call_path":
        hit = reach(calls, entry(s)[1])
        right = [letter for letter, name in opts.items() if name in hit]
    elif question == "return_value":
        module, function = entry(s)
        value = getattr(importlib.import_module(f"{pkg}.{module}"), function)()
        right = [letter for letter, text in opts.items() if text == str(value)]
    elif question == "config_key":
        start = entry(s)[1]
        read = {k for f in reach(calls, start) | {start} for k in keys[f]}
        right = [letter for letter, key in opts.items() if key in read]
    else:
        called = {c for cs in calls.values() for c in cs}
        right = [letter for letter, name in opts.items() if name not in called]
    assert right == s.gold


def test_every_file_parses_and_the_package_imports(installed: Path) -> None:
    """Every module of a long sample is valid Python and imports (no import cycles)."""
    s = generate("code_lookup", "64k", seed=4)
    sources = files(s)
    assert len(sources) > 20
    pkg = next(iter(sources)).split("/")[0]
    (installed / pkg).mkdir()
    (installed / pkg / "__init__.py").write_text("", encoding="utf-8")
    for path, source in sources.items():
        (installed / path).write_text(source, encoding="utf-8")
    for path in sources:
        importlib.import_module(path[:-3].replace("/", "."))


@pytest.mark.parametrize("seed", [10_075, 10_103, *range(20)])
def test_every_generated_package_is_valid_python(seed: int) -> None:
    """Every file of every package parses, including a config module with no setting (the
    seeds 10,075 and 10,103 draw a core that reads none)."""
    s = generate("code_lookup", "8k", seed=seed)
    for path, source in files(s).items():
        ast.parse(source, filename=path)
    assert "SETTINGS = {\n}" in s.context or re.search(r'SETTINGS = \{\n    "', s.context)
