"""Samples: what a task family builds, and the one way every context is fitted to a length.

A sample is a pure function of ``(family, parameters, length, unit, seed)`` (see
``_specs.py``): a family's builder gets a ``random.Random`` seeded with the seed alone and a
:class:`Fit` for the length, so two methods, two machines or a resumed run see byte-identical
samples.

Lengths are characters by default, which add up exactly: filler units are added until the
next one would pass the target, so a context never exceeds its length and falls short of
it by less than one unit. With a tokenizer (any ``str -> int`` counter) lengths are tokens,
which do not add up across unit boundaries: units are generated to about 1.3 times the
target by their own counts, then the number kept is found by bisection on the whole text's
count, as RULER fits its haystacks. ``Sample.achieved`` is the whole context's measure.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rlm_sdk import ConfigurationError

__all__ = [
    "Built",
    "Family",
    "Fit",
    "Sample",
    "ScorerName",
    "Tokenizer",
    "Unit",
    "length_label",
    "parse_length",
    "parse_task",
]

Unit = Literal["chars", "tokens"]
ScorerName = Literal["recall", "oolong", "pairs_f1", "exact", "choice"]
Tokenizer = Callable[[str], int]
"""Counts the tokens of a text (``len(enc.encode(text))`` for a tokenizer you trust)."""

_SUFFIXES = {"k": 1024, "m": 1024 * 1024}
MIN_LENGTH = 1024


def parse_length(text: str | int) -> int:
    """``"8k"`` is 8,192 and ``"4M"`` 4,194,304 (powers of two, as the papers count); digits
    are taken as they are."""
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", text)
        if m is None:
            raise ConfigurationError(f"a length is a number with an optional k or M, not {text!r}")
        value = int(float(m.group(1)) * _SUFFIXES.get(m.group(2).lower(), 1))
    if value < MIN_LENGTH:
        raise ConfigurationError(f"a length must be at least {MIN_LENGTH:,}, not {value:,}")
    return value


def length_label(length: int) -> str:
    """The short name of a length: ``8k``, ``4M``, or the digits when it is not a round one."""
    for suffix, size in (("M", 1024 * 1024), ("k", 1024)):
        if length % size == 0:
            return f"{length // size}{suffix}"
    return str(length)


class Sample(BaseModel):
    """One task instance: the context, the query, and the gold answer to score against."""

    model_config = ConfigDict(frozen=True)

    id: str
    """Stable: a hash of the family, parameters, length, unit and seed."""
    family: str
    params: dict[str, Any]
    """Every parameter of the family, defaults filled in."""
    seed: int
    index: int
    """The sample's number in its cell (family, length)."""
    length: int
    """The target length, in ``unit``."""
    unit: Unit
    achieved: int
    """The context's measured length, in ``unit`` (at most ``length``)."""
    context: str
    query: str
    gold: list[str]
    """The gold answer: values, names, pairs (``"a,b"``), or one answer."""
    scorer: ScorerName
    answer_type: str = "text"
    """What kind of answer the query asks for (``number``, ``label``, ``month``, ...)."""
    choices: list[str] = Field(default_factory=list)
    """The options of a multiple-choice question, in order (A, B, C, D)."""
    kind: str = ""
    """The question's variant within its family (``count``, ``user_count``, ``2-hop`` ...)."""


@dataclass
class Built:
    """What a family's builder returns; :meth:`SampleSpec.build` adds the rest."""

    context: str
    query: str
    gold: list[str]
    answer_type: str = "text"
    choices: list[str] = field(default_factory=list)
    kind: str = ""


@dataclass(frozen=True)
class Fit:
    """A target length and how to measure text against it."""

    target: int
    measure: Callable[[str], int]

    def fill(
        self,
        filler: Iterator[str],
        inserts: Sequence[tuple[float, str]] = (),
        sep: str = "\n",
    ) -> tuple[str, int]:
        """Filler units up to the target, with ``inserts`` placed at their depths (0 to 1).

        Inserts keep their order when their depths are sorted (a chain stays in order).
        Returns the text and how many filler units it used.

        Raises:
            ConfigurationError: the inserts alone do not fit the target.
        """
        sep_cost = self.measure(sep)
        needed = sum(self.measure(text) + sep_cost for _, text in inserts)
        budget = self.target - needed
        if budget < 0:
            raise ConfigurationError(
                f"a length of {self.target:,} is too short for this task's parts ({needed:,})"
            )
        exact = self.measure is len  # characters add up exactly; tokens only roughly
        limit = budget if exact else int(budget * 1.3) + 64
        units: list[str] = []
        total = -sep_cost  # n units are joined by n - 1 separators
        measure = self.measure
        for unit in filler:
            cost = measure(unit) + sep_cost
            if total + cost > limit:
                break
            units.append(unit)
            total += cost
        ordered = sorted(inserts, key=lambda pair: pair[0])
        n = len(units)
        if not exact:  # the most units whose whole text fits, by bisection (RULER's way)
            lo, hi = 0, n
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if measure(_merge(units[:mid], ordered, sep)) <= self.target:
                    lo = mid
                else:
                    hi = mid - 1
            n = lo
        return _merge(units[:n], ordered, sep), n


def _merge(units: Sequence[str], ordered: Sequence[tuple[float, str]], sep: str) -> str:
    """``units`` with each insert placed at its depth (inserts sorted by depth)."""
    n = len(units)
    positions = [min(n, max(0, round(depth * n))) for depth, _ in ordered]
    merged: list[str] = []
    j = 0
    for i, unit in enumerate(units):
        while j < len(ordered) and positions[j] <= i:
            merged.append(ordered[j][1])
            j += 1
        merged.append(unit)
    merged.extend(text for _, text in ordered[j:])
    return sep.join(merged)


Builder = Callable[[random.Random, Fit, Mapping[str, Any]], Built]


@dataclass(frozen=True)
class Family:
    """A task family: its builder, its parameters with their defaults, its scoring rule."""

    name: str
    build: Builder
    scorer: ScorerName
    defaults: Mapping[str, Any]
    choices: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    """Allowed values of parameters that take one of a few."""
    summary: str = ""

    def params(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """``given`` over the defaults, each value coerced to its default's type.

        Raises:
            ConfigurationError: an unknown parameter, or a value of the wrong kind.
        """
        merged = dict(self.defaults)
        for key, value in (given or {}).items():
            if key not in self.defaults:
                known = ", ".join(sorted(self.defaults))
                raise ConfigurationError(f"{self.name} has no parameter {key!r} (it has: {known})")
            merged[key] = _coerce(self.name, key, value, self.defaults[key])
            allowed = self.choices.get(key)
            if allowed is not None and merged[key] not in allowed:
                raise ConfigurationError(
                    f"{self.name}: {key} is one of {', '.join(map(str, allowed))}, not {value!r}"
                )
        return merged


def _coerce(family: str, key: str, value: Any, default: Any) -> Any:
    kind = type(default)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    try:
        if kind is int:
            return int(str(value))
        if kind is float:
            return float(str(value))
    except ValueError:
        raise ConfigurationError(
            f"{family}: {key} must be a {kind.__name__}, not {value!r}"
        ) from None
    if kind is bool:
        if str(value).lower() in ("1", "true", "yes"):
            return True
        if str(value).lower() in ("0", "false", "no"):
            return False
        raise ConfigurationError(f"{family}: {key} must be true or false, not {value!r}")
    return str(value)


def parse_task(text: str) -> tuple[str, dict[str, str]]:
    """``"niah:needles=4,haystack=prose"`` -> ``("niah", {"needles": "4", "haystack": "prose"})``."""
    name, _, rest = text.strip().partition(":")
    params: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigurationError(f"a task parameter is key=value, not {part!r} in {text!r}")
        params[key.strip()] = value.strip()
    return name.strip(), params
