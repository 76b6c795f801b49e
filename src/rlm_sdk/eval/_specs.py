"""Sample specs: the name of a sample, cheap to hold, and the one way to build it.

A spec's id is a hash of everything the sample depends on, so a results file can be resumed
and two methods are compared on the same samples; its context (up to millions of
characters) is built only when it runs.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from rlm_sdk import ConfigurationError

from ._families import get_family
from ._sample import Fit, Sample, Tokenizer, Unit, length_label, parse_length, parse_task

__all__ = ["SampleSpec", "cell_seed", "specs"]


class SampleSpec(BaseModel):
    """Names one sample without building it: cheap to hold, hash it, or send anywhere."""

    model_config = ConfigDict(frozen=True)

    family: str
    params: dict[str, Any]
    length: int
    unit: Unit = "chars"
    seed: int
    index: int = 0

    @property
    def id(self) -> str:
        """``family-length-index-hash``; the hash covers everything the sample depends on."""
        key = json.dumps(
            [self.family, self.params, self.length, self.unit, self.seed],
            sort_keys=True,
            separators=(",", ":"),
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        return f"{self.family}-{length_label(self.length)}-{self.index:03d}-{digest}"

    def build(self, tokenizer: Tokenizer | None = None) -> Sample:
        """The sample itself: context, query and gold answer, from the seed alone.

        Raises:
            ConfigurationError: ``unit`` is ``tokens`` and no tokenizer was given, or the
                family is unknown.
        """
        family = get_family(self.family)
        if self.unit == "tokens" and tokenizer is None:
            raise ConfigurationError("a length in tokens needs a tokenizer (a str -> int counter)")
        measure: Callable[[str], int] = tokenizer if self.unit == "tokens" and tokenizer else len
        built = family.build(random.Random(self.seed), Fit(self.length, measure), self.params)
        return Sample(
            id=self.id,
            family=self.family,
            params=self.params,
            seed=self.seed,
            index=self.index,
            length=self.length,
            unit=self.unit,
            achieved=measure(built.context),
            context=built.context,
            query=built.query,
            gold=built.gold,
            scorer=family.scorer,
            answer_type=built.answer_type,
            choices=built.choices,
            kind=built.kind,
        )


def cell_seed(base: int, family: str, params: Mapping[str, Any], length: int, index: int) -> int:
    """The seed of one sample, from the eval's base seed (stable across Python versions)."""
    key = json.dumps([base, family, dict(params), length, index], sort_keys=True)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def specs(
    tasks: Iterable[str | tuple[str, Mapping[str, Any]]],
    lengths: Iterable[str | int],
    n: int,
    *,
    seed: int = 0,
    unit: Unit = "chars",
) -> list[SampleSpec]:
    """Every sample of an eval, in a fixed order: task by task, length by length, ``n`` each.

    ``tasks`` are family names, ``"family:key=value,..."`` strings, or ``(family, params)``.
    """
    if n < 1:
        raise ConfigurationError(f"n (samples per cell) must be at least 1, not {n}")
    sizes = [parse_length(x) for x in lengths]
    out: list[SampleSpec] = []
    for task in tasks:
        name, given = parse_task(task) if isinstance(task, str) else (task[0], dict(task[1]))
        params = get_family(name).params(given)
        for size in sizes:
            out += [
                SampleSpec(
                    family=name,
                    params=params,
                    length=size,
                    unit=unit,
                    seed=cell_seed(seed, name, params, size, i),
                    index=i,
                )
                for i in range(n)
            ]
    return out
