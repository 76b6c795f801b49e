"""Retrieval in a haystack: ``niah`` (needles holding values) and ``chains`` (variables that
point at each other), both built as filler lines with a few lines inserted at chosen depths.

The haystacks follow RULER's three kinds: ``noise`` (a few fixed sentences over and over),
``prose`` (generated sentences, so the filler reads like text) and ``distractor`` (lines
shaped like needles, for keys that are never asked about). Depths are drawn from 40 evenly
spaced points between the start and the end of the context.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from ._sample import Built, Fit
from ._words import (
    ADJECTIVES,
    NOUNS,
    PROSE_OBJECTS,
    PROSE_SUBJECTS,
    PROSE_TAILS,
    PROSE_VERBS,
)

__all__ = ["build_chains", "build_niah", "needle_line"]

DEPTHS = tuple(i / 39 for i in range(40))
_NOISE = (
    "The wind moved over the grass and the fields stayed green.",
    "Nothing much happened in the valley that day, nor the day after.",
    "Somewhere a kettle whistled, and then the house was quiet again.",
)
_KINDS = {"number": "number", "word": "word", "uuid": "identifier"}


def needle_line(kind: str, key: str, value: str) -> str:
    """One needle: which value a key holds (also the shape of a distractor)."""
    return f"The hidden {kind} that belongs to {key} is {value}."


def _key(rng: random.Random) -> str:
    return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"


def _value(rng: random.Random, value_type: str) -> str:
    if value_type == "number":
        return str(rng.randrange(1_000_000, 10_000_000))
    if value_type == "word":
        return f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _distinct(rng: random.Random, count: int, make: Any, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        item = make(rng)
        if item not in taken:
            taken.add(item)
            out.append(item)
    return out


def noise() -> Iterator[str]:
    """The noise haystack: the same three sentences, round and round."""
    return itertools.cycle(_NOISE)


def prose(rng: random.Random) -> Iterator[str]:
    """The prose haystack: endless generated sentences, one to three to a line."""
    choice, randint = rng.choice, rng.randint
    while True:
        yield " ".join(
            f"{choice(PROSE_SUBJECTS)} {choice(PROSE_VERBS)} {choice(PROSE_OBJECTS)} {choice(PROSE_TAILS)}"
            for _ in range(randint(1, 3))
        )


def _distractors(
    rng: random.Random, kind: str, value_type: str, keys: set[str], values: set[str]
) -> Iterator[str]:
    """Needle-shaped lines for keys never asked about, with values never the gold ones."""
    while True:
        key = _key(rng)
        value = _value(rng, value_type)
        if key in keys or value in values:
            continue
        yield needle_line(kind, key, value)


def _filler(rng: random.Random, haystack: str) -> Iterator[str]:
    return noise() if haystack == "noise" else prose(rng)


def build_niah(rng: random.Random, fit: Fit, params: Mapping[str, Any]) -> Built:
    """Needles (``needles`` keys with ``values`` values each) in a haystack; ask ``queries`` keys."""
    value_type = str(params["value_type"])
    kind = _KINDS[value_type]
    n_keys = max(1, int(params["needles"]))
    n_values = max(1, int(params["values"]))
    asked = min(n_keys, max(1, int(params["queries"])))
    taken: set[str] = set()
    keys = _distinct(rng, n_keys, _key, taken)
    values = {k: _distinct(rng, n_values, lambda r: _value(r, value_type), taken) for k in keys}
    inserts = [
        (rng.choice(DEPTHS), needle_line(kind, key, value)) for key in keys for value in values[key]
    ]
    haystack = str(params["haystack"])
    filler = (
        _distractors(rng, kind, value_type, set(keys), set(taken))
        if haystack == "distractor"
        else _filler(rng, haystack)
    )
    context, _ = fit.fill(filler, inserts)
    asked_keys = keys[:asked]
    gold = [v for k in asked_keys for v in values[k]]
    names = " and ".join(asked_keys)
    if len(gold) == 1:
        query = f"What is the hidden {kind} that belongs to {names}? Answer with the {kind} alone."
    else:
        query = (
            f"What are all the hidden {kind}s that belong to {names}? "
            f"Answer with every one of them, separated by commas."
        )
    variant = "single" if len(inserts) == 1 else f"{n_keys}k{n_values}v{asked}q"
    return Built(context, query, gold, answer_type="values", kind=f"{haystack}-{variant}")


def _var_name(rng: random.Random) -> str:
    return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))


def build_chains(rng: random.Random, fit: Fit, params: Mapping[str, Any]) -> Built:
    """``chains`` chains of ``hops`` variables each; ask which variables hold the first value."""
    hops = max(1, int(params["hops"]))
    n_chains = max(1, int(params["chains"]))
    names: set[str] = set()
    numbers: set[str] = set()
    inserts: list[tuple[float, str]] = []
    gold: list[str] = []
    value = ""
    for c in range(n_chains):
        chain = _distinct(rng, hops, _var_name, names)
        number = _distinct(rng, 1, lambda r: str(r.randrange(10_000, 100_000)), numbers)[0]
        lines = [f"VAR {chain[0]} = {number}"]
        lines += [f"VAR {chain[i]} = VAR {chain[i - 1]}" for i in range(1, hops)]
        depths = sorted(rng.choice(DEPTHS) for _ in lines)
        inserts += list(zip(depths, lines, strict=True))
        if c == 0:
            gold, value = chain, number
    context, _ = fit.fill(_filler(rng, str(params["haystack"])), inserts)
    query = (
        f"Which variables are assigned the value {value}, either directly or through other "
        "variables? Answer with all of their names, separated by commas."
    )
    return Built(context, query, gold, answer_type="names", kind=f"{hops}-hop")
