"""``code_lookup``: multiple-choice questions about a generated Python package.

An offline stand-in for LongBench-v2's CodeQA: a package of modules rendered as one text,
each file under a ``# ===== file: pkg/name.py =====`` header. It is real, importable Python:
every function takes no argument and returns an int, modules import only modules generated
before them (so the package imports without cycles), and a ``config`` module answers
``config.get(key)``. A small core of three modules carries the question; the rest of the
length is other modules that never call into the core.

Questions: which function a call reaches (``call_path``), what a function returns
(``return_value``), which configuration key a call reads (``config_key``), and which
function nothing calls (``dead_code``). Four options each; chance is 25 %.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._sample import Built, Fit
from ._words import ADJECTIVES, NOUNS, make_name

__all__ = ["CODE_QUESTIONS", "FILE_HEADER", "build_code"]

FILE_HEADER = "# ===== file: {path} ====="
CODE_QUESTIONS = ("call_path", "return_value", "config_key", "dead_code")
_VERBS = ("load", "parse", "build", "sync", "check", "merge", "render", "fetch", "store", "scan")
LETTERS = "ABCD"


@dataclass
class _Fn:
    name: str
    module: str
    add: int
    calls: list[_Fn] = field(default_factory=list)
    const: tuple[str, str, int] | None = None
    """(module, NAME, value) of a constant the function adds."""
    key: str | None = None

    def value(self, settings: Mapping[str, int]) -> int:
        total = self.add + sum(c.value(settings) for c in self.calls)
        if self.const is not None:
            total += self.const[2]
        if self.key is not None:
            total += settings.get(self.key, len(self.key))
        return total

    def reach(self) -> set[str]:
        """Every function this one calls, directly or not (itself excluded)."""
        seen: set[str] = set()
        stack = list(self.calls)
        while stack:
            f = stack.pop()
            if f.name not in seen:
                seen.add(f.name)
                stack.extend(f.calls)
        return seen


class _Names:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.taken: set[str] = set()

    def fresh(self, make: Any) -> str:
        while True:
            name = str(make(self.rng))
            if name not in self.taken:
                self.taken.add(name)
                return name

    def function(self) -> str:
        return self.fresh(lambda r: f"{r.choice(_VERBS)}_{make_name(r, 2).lower()}")

    def module(self) -> str:
        return self.fresh(lambda r: f"{make_name(r, 2).lower()}_{r.choice(NOUNS)}")

    def constant(self) -> str:
        return self.fresh(
            lambda r: f"{r.choice(('MAX', 'MIN', 'BASE', 'STEP'))}_{make_name(r, 2).upper()}"
        )

    def key(self) -> str:
        return self.fresh(lambda r: f"{r.choice(NOUNS)}.{make_name(r, 2).lower()}")


def _render_fn(rng: random.Random, pkg: str, fn: _Fn) -> list[str]:
    lines = [
        f"def {fn.name}():",
        f'    """{fn.name.split("_")[0].capitalize()} the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} records."""',
        f"    total = {fn.add}",
        f'    label = "{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"',
    ]
    for callee in fn.calls:
        where = "" if callee.module == fn.module else f"{callee.module}."
        lines.append(f"    total += {where}{callee.name}()")
    if fn.const is not None:
        where = "" if fn.const[0] == fn.module else f"{fn.const[0]}."
        lines.append(f"    total += {where}{fn.const[1]}")
    if fn.key is not None:
        lines.append(f'    total += config.get("{fn.key}")')
    lines += [
        f"    steps = [{rng.randrange(10)}, {rng.randrange(10)}, len(label)]",
        "    return total",
    ]
    return lines


def _render_module(
    rng: random.Random, pkg: str, module: str, fns: Sequence[_Fn], consts: Mapping[str, int]
) -> str:
    imports = sorted(
        {c.module for f in fns for c in f.calls if c.module != module}
        | {f.const[0] for f in fns if f.const is not None and f.const[0] != module}
        | ({"config"} if any(f.key for f in fns) else set())
    )
    out = [
        FILE_HEADER.format(path=f"{pkg}/{module}.py"),
        f'"""The {module.replace("_", " ")} part of {pkg}."""',
        "",
    ]
    if imports:
        out += [f"from {pkg} import {', '.join(imports)}", ""]
    out += [f"{name} = {value}" for name, value in consts.items()]
    for fn in fns:
        out += ["", "", *_render_fn(rng, pkg, fn)]
    return "\n".join(out)


def _config_module(pkg: str, settings: Mapping[str, int]) -> str:
    """The ``config`` module: a dict of settings (maybe empty) and ``get``."""
    return "\n".join(
        [
            FILE_HEADER.format(path=f"{pkg}/config.py"),
            '"""Settings, read with get(key); a key without a setting reads as its length."""',
            "",
            "SETTINGS = {",
            *(f'    "{k}": {v},' for k, v in settings.items()),
            "}",
            "",
            "",
            "def get(key):",
            '    """The value of a setting."""',
            "    return SETTINGS.get(key, len(key))",
        ]
    )


def _filler(rng: random.Random, pkg: str, names: _Names) -> Iterator[str]:
    """Modules that call only each other (earlier ones) and the config, never the core."""
    recent: list[_Fn] = []
    while True:
        module = names.module()
        consts = {names.constant(): rng.randrange(1, 100) for _ in range(rng.randint(0, 2))}
        fns: list[_Fn] = []
        for _ in range(rng.randint(2, 5)):
            fn = _Fn(names.function(), module, rng.randrange(1, 50))
            if recent:
                fn.calls = rng.sample(recent, k=min(len(recent), rng.randint(0, 2)))
            if consts and rng.random() < 0.5:
                name = rng.choice(list(consts))
                fn.const = (module, name, consts[name])
            if rng.random() < 0.3:
                fn.key = names.key()
            fns.append(fn)
        recent = (recent + fns)[-40:]
        for f in fns:  # callees from other modules only; keep the graph module-layered
            f.calls = [c for c in f.calls if c.module != module]
        yield _render_module(rng, pkg, module, fns, consts)


def _core(
    rng: random.Random, names: _Names
) -> tuple[list[tuple[str, list[_Fn], dict[str, int]]], dict[str, int], list[_Fn]]:
    """Three layered modules of five functions; a few functions in the top two are called by
    nothing (dead code), and each leaf may add a constant or read a setting."""
    layers: list[tuple[str, list[_Fn], dict[str, int]]] = []
    settings: dict[str, int] = {}
    every: list[_Fn] = []
    for level in range(3):
        module = names.module()
        consts = {names.constant(): rng.randrange(1, 100) for _ in range(2)} if level == 0 else {}
        fns = [_Fn(names.function(), module, rng.randrange(1, 50)) for _ in range(5)]
        for fn in fns:
            if level == 0:
                if rng.random() < 0.6:
                    name = rng.choice(list(consts))
                    fn.const = (module, name, consts[name])
                if rng.random() < 0.6:
                    fn.key = names.key()
                    settings[fn.key] = rng.randrange(1, 100)
            else:
                below = [f for _, layer, _ in layers for f in layer]
                fn.calls = rng.sample(below, k=rng.randint(1, 2))
        layers.append((module, fns, consts))
        every += fns
    return layers, settings, every


def _options(rng: random.Random, gold: str, wrong: Sequence[str]) -> tuple[list[str], str] | None:
    pool = sorted(set(wrong) - {gold})
    if len(pool) < 3:
        return None
    options = [gold, *rng.sample(pool, 3)]
    rng.shuffle(options)
    return options, LETTERS[options.index(gold)]


def _question(
    rng: random.Random, kind: str, pkg: str, every: Sequence[_Fn], settings: Mapping[str, int]
) -> tuple[str, list[str], str] | None:
    called = {c.name for f in every for c in f.calls}
    tops = [f for f in every if f.calls]
    if kind == "call_path":
        entry = rng.choice(tops)
        reached = entry.reach()
        deep = sorted(reached - {c.name for c in entry.calls}) or sorted(reached)
        picked = _options(
            rng, rng.choice(deep), [f.name for f in every if f.name not in reached | {entry.name}]
        )
        if picked is None:
            return None
        question = f"Which of these functions runs, directly or indirectly, when {entry.module}.{entry.name}() is called?"
    elif kind == "return_value":
        entry = rng.choice(tops)
        value = entry.value(settings)
        near = [str(value + d) for d in (-12, -7, -3, -1, 1, 2, 5, 9, 14) if value + d > 0]
        picked = _options(rng, str(value), near)
        if picked is None:
            return None
        question = f"What does {entry.module}.{entry.name}() return?"
    elif kind == "config_key":
        entry = rng.choice(tops)
        reached = {f.name for f in every if f.name in entry.reach()}
        keys = sorted({f.key for f in every if f.name in reached and f.key})
        if len(keys) != 1:
            return None
        others = [f.key for f in every if f.key and f.name not in reached]
        picked = _options(rng, keys[0], [k for k in others if k is not None])
        if picked is None:
            return None
        question = f"Which configuration key is read when {entry.module}.{entry.name}() is called?"
    else:
        dead = [f.name for f in every if f.name not in called]
        alive = [f.name for f in every if f.name in called]
        if not dead:
            return None
        picked = _options(rng, rng.choice(dead), alive)
        if picked is None:
            return None
        question = f"Which of these functions is never called by any function of {pkg}?"
    options, letter = picked
    return question, options, letter


def build_code(rng: random.Random, fit: Fit, params: Mapping[str, Any]) -> Built:
    """A generated package up to the length, and one four-option question about its core."""
    names = _Names(rng)
    pkg = names.fresh(lambda r: f"{make_name(r, 2).lower()}kit")
    names.taken.add("config")
    wanted = str(params["question"])
    drawn = None
    kind = wanted
    for _ in range(50):  # a core that allows no such question is drawn again
        layers, settings, every = _core(rng, names)
        for _ in range(20):
            kind = rng.choice(CODE_QUESTIONS) if wanted == "any" else wanted
            drawn = _question(rng, kind, pkg, every, settings)
            if drawn is not None:
                break
        if drawn is not None:
            break
    if drawn is None:  # pragma: no cover - some core allows every kind of question
        raise RuntimeError("no code question could be drawn")
    question, options, letter = drawn
    inserts = [(rng.random(), _render_module(rng, pkg, m, fns, c)) for m, fns, c in layers]
    inserts.append((rng.random(), _config_module(pkg, settings)))
    context, _ = fit.fill(_filler(rng, pkg, names), inserts, sep="\n\n\n")
    listed = "\n".join(f"{LETTERS[i]}) {o}" for i, o in enumerate(options))
    query = (
        f"The context is the source code of the Python package {pkg}, one file after another, "
        f"each starting with a '# ===== file: ... =====' line.\n\n{question}\n{listed}\n\n"
        "Answer with the letter of the right option."
    )
    return Built(context, query, [letter], answer_type="choice", choices=options, kind=kind)
