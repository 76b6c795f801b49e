"""``docs_multihop``: a question answered by chaining facts from several generated documents.

An offline stand-in for BrowseComp-Plus: a seeded graph of people, companies and cities,
each rendered as a short profile document among thousands of others. The question composes
2 to 4 hops (a person's mentor, the mentor's employer, the employer's city, the city's
founding year), and each document on the path has a hard negative: an entity whose name
extends the real one ("Mara Quell" and "Mara Quellan") with a different fact, so a loose
search finds two candidates. Answers are generated names and years, scored by normalised
exact match.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any

from ._sample import Built, Fit
from ._words import ADJECTIVES, NOUNS, make_name

__all__ = ["build_docs"]

_PROFESSIONS = (
    "an engineer", "a botanist", "an accountant", "a pilot", "a chemist", "a carpenter",
    "a journalist", "a surveyor", "a violinist", "a cartographer", "a nurse", "a geologist",
)  # fmt: skip
_SUFFIXES = ("Labs", "Works", "Holdings", "Foundry", "Systems", "Trading", "Mills", "Partners")
_PRODUCTS = (
    "ceramic tiles", "river barges", "weather balloons", "garden tools", "printing presses",
    "bicycle frames", "glass lenses", "wool blankets", "solar kettles", "paper lanterns",
)  # fmt: skip
_HOBBIES = (
    "collects old maps", "plays chess on Sundays", "keeps bees", "restores clocks",
    "sails small boats", "paints seascapes", "grows tomatoes", "writes short poems",
)  # fmt: skip
_SIGHTS = (
    "a covered market", "a stone lighthouse", "a botanical garden", "an old observatory",
    "a clock tower", "a salt marsh", "a railway museum", "a granite quarry",
)  # fmt: skip


def _person(rng: random.Random) -> str:
    return f"{make_name(rng, 2)} {make_name(rng, 2)}"


def _company(rng: random.Random) -> str:
    return f"{make_name(rng, 2)} {rng.choice(_SUFFIXES)}"


def _city(rng: random.Random) -> str:
    return make_name(rng, 3)


def _year(rng: random.Random) -> str:
    return str(rng.randrange(1450, 1950))


def _person_doc(rng: random.Random, name: str, employer: str, mentor: str) -> str:
    return (
        f"## {name}\n{name} is {rng.choice(_PROFESSIONS)} who {rng.choice(_HOBBIES)}. "
        f"{name} works for {employer}. {name} was mentored by {mentor}."
    )


def _company_doc(rng: random.Random, name: str, city: str) -> str:
    return (
        f"## {name}\n{name} makes {rng.choice(_PRODUCTS)} and employs "
        f"{rng.randrange(20, 5000)} people. {name} is headquartered in {city}."
    )


def _city_doc(rng: random.Random, name: str, year: str) -> str:
    return (
        f"## {name}\n{name} is known for {rng.choice(_SIGHTS)} and its "
        f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} fair. {name} was founded in {year}."
    )


def _fresh(rng: random.Random, make: Any, taken: set[str]) -> str:
    while True:
        name = str(make(rng))
        if name not in taken:
            taken.add(name)
            return name


def _decoy(rng: random.Random, name: str, taken: set[str]) -> str:
    """A name that extends ``name`` (a hard negative for a loose search)."""
    while True:
        extended = name + rng.choice(("an", "er", "ith", "ova", "son", "ley"))
        if extended not in taken:
            taken.add(extended)
            return extended


def _filler(rng: random.Random, taken: set[str]) -> Iterator[str]:
    """Documents about other people, companies and cities, forever."""
    while True:
        kind = rng.randrange(3)
        if kind == 0:
            yield _person_doc(
                rng,
                _fresh(rng, _person, taken),
                _fresh(rng, _company, taken),
                _fresh(rng, _person, taken),
            )
        elif kind == 1:
            yield _company_doc(rng, _fresh(rng, _company, taken), _fresh(rng, _city, taken))
        else:
            yield _city_doc(rng, _fresh(rng, _city, taken), _year(rng))


def build_docs(rng: random.Random, fit: Fit, params: Mapping[str, Any]) -> Built:
    """A chain of ``hops`` facts across documents, with hard negatives, among filler documents."""
    hops = min(4, max(2, int(params["hops"])))
    decoys = bool(params["decoys"])
    taken: set[str] = set()
    person, mentor = _fresh(rng, _person, taken), _fresh(rng, _person, taken)
    company, city, year = _fresh(rng, _company, taken), _fresh(rng, _city, taken), _year(rng)
    start = mentor if hops < 4 else person
    docs = [
        _person_doc(rng, mentor, company, _fresh(rng, _person, taken)),
        _company_doc(rng, company, city),
    ]
    if hops >= 3:
        docs.append(_city_doc(rng, city, year))
    if hops == 4:
        docs.append(_person_doc(rng, person, _fresh(rng, _company, taken), mentor))
    if decoys:  # the same kind of fact, for a name that extends the real one
        docs.append(
            _person_doc(
                rng,
                _decoy(rng, mentor, taken),
                _fresh(rng, _company, taken),
                _fresh(rng, _person, taken),
            )
        )
        docs.append(_company_doc(rng, _decoy(rng, company, taken), _fresh(rng, _city, taken)))
        if hops >= 3:
            docs.append(
                _city_doc(rng, _decoy(rng, city, taken), str(int(year) + rng.randrange(1, 40)))
            )
        if hops == 4:
            docs.append(
                _person_doc(rng, _decoy(rng, person, taken), company, _fresh(rng, _person, taken))
            )
    inserts = [(rng.random(), doc) for doc in docs]
    context, _ = fit.fill(_filler(rng, taken), inserts, sep="\n\n")
    if hops == 2:
        question = f"In which city is the company that {start} works for headquartered?"
        gold = city
    elif hops == 3:
        question = (
            f"In what year was the city founded in which the company that {start} works for "
            "is headquartered?"
        )
        gold = year
    else:
        question = (
            f"{start} was mentored by someone. In what year was the city founded in which the "
            "company that this mentor works for is headquartered?"
        )
        gold = year
    query = (
        "The context is a collection of short documents, each starting with '## ' and a name. "
        f"{question} Use only facts stated in the documents; names must match exactly. "
        "Answer with the name or year alone."
    )
    return Built(
        context, query, [gold], answer_type="name" if hops == 2 else "year", kind=f"{hops}-hop"
    )
