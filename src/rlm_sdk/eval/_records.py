"""OOLONG-style records: ``aggregate`` (counting, user and timeline questions) and ``pairs``
(listing pairs of users), over the same kind of generated records.

Each line is ``Date: <Mon DD, YYYY> || User: <id> || Instance: <question>``. Every instance
is a generated question whose answer type is its hidden label, one of six (numeric value,
entity, location, description and abstract concept, abbreviation, human being): "Who wrote
..." asks for a human being, "What does NASA stand for" for an abbreviation. The labels are
never written down, so a model must classify every record (with sub-calls) and then
aggregate. Four users in five records come from one user in five, and the labels' shares
differ from sample to sample, so "most common" has a different answer each time.

Questions are drawn until their answer is unique (no tie for "most common", for the user
with most, or for the peak month); pairs questions choose thresholds from the data so that
a handful of users qualify.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._sample import Built, Fit
from ._words import ADJECTIVES, NOUNS, make_name

__all__ = [
    "LABELS",
    "MONTHS",
    "Record",
    "build_aggregate",
    "build_pairs",
    "format_date",
    "make_instance",
]

LABELS = (
    "numeric value",
    "entity",
    "location",
    "description and abstract concept",
    "abbreviation",
    "human being",
)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
_START = dt.date(2022, 1, 1)
_DAYS = 730

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "numeric value": (
        "How many {noun}s live in {place}?",
        "What year was the {adj} {noun} bridge in {place} built?",
        "How tall is the {noun} tower of {place}?",
        "How much does a {adj} {noun} cost in {place}?",
    ),
    "entity": (
        "What animal is painted on the flag of {place}?",
        "Which instrument does the {adj} {noun} band play?",
        "What food is {place} famous for?",
        "What is the name of the {adj} {noun} ship?",
    ),
    "location": (
        "Where is the {adj} {noun} monument?",
        "What city is the {cap} {noun} company based in?",
        "In which country is the town of {place}?",
        "Where can you find {adj} {noun}s in the wild?",
    ),
    "description and abstract concept": (
        "What does the word {word} mean?",
        "Why do {noun}s gather near {place} in winter?",
        "How does a {adj} {noun} keep warm?",
        "What is the meaning of the {adj} {noun} festival?",
    ),
    "abbreviation": (
        "What does {acronym} stand for?",
        "What is the abbreviation for the {cap} {noun} Society?",
        "What is {acronym} short for?",
    ),
    "human being": (
        "Who invented the {adj} {noun} lamp?",
        "Who wrote the novel The {cap} {noun}?",
        "Who was the first mayor of {place}?",
        "Who founded the {cap} {noun} guild?",
    ),
}


@dataclass(frozen=True)
class Record:
    """One generated record and its hidden label."""

    day: int
    """Days after 1 Jan 2022."""
    user: str
    label: str
    text: str

    @property
    def date(self) -> dt.date:
        return _START + dt.timedelta(days=self.day)

    def line(self) -> str:
        return f"Date: {format_date(self.date)} || User: {self.user} || Instance: {self.text}"


def format_date(day: dt.date) -> str:
    """``Mar 04, 2023``, without the locale strftime would use."""
    return f"{MONTHS[day.month - 1]} {day.day:02d}, {day.year}"


def make_instance(rng: random.Random, label: str) -> str:
    """A question whose answer type is ``label``."""
    template = rng.choice(_TEMPLATES[label])
    return template.format(
        noun=rng.choice(NOUNS),
        adj=rng.choice(ADJECTIVES),
        cap=rng.choice(ADJECTIVES).capitalize(),
        place=make_name(rng, 2),
        word=make_name(rng, 3).lower(),
        acronym="".join(rng.choice("ABCDEFGHIJKLMNOPRSTUVW") for _ in range(rng.randint(3, 5))),
    )


def _users(rng: random.Random, count: int) -> list[str]:
    ids: set[str] = set()
    while len(ids) < count:
        ids.add(str(rng.randrange(10_000, 100_000)))
    return sorted(ids)


def _records(rng: random.Random, users: Sequence[str], out: list[Record]) -> Iterator[str]:
    """Endless records (each appended to ``out``): 80 % of them from 20 % of the users."""
    heavy = list(users[: max(1, len(users) // 5)])
    light = list(users[len(heavy) :]) or heavy
    weights = [rng.uniform(0.4, 2.0) for _ in LABELS]
    while True:
        for label in rng.choices(LABELS, weights=weights, k=1024):
            user = rng.choice(heavy) if rng.random() < 0.8 else rng.choice(light)
            record = Record(rng.randrange(_DAYS), user, label, make_instance(rng, label))
            out.append(record)
            yield record.line()


def _fill_records(rng: random.Random, fit: Fit, users: int) -> tuple[str, list[Record]]:
    made: list[Record] = []
    context, used = fit.fill(_records(rng, _users(rng, users), made))
    return context, made[:used]


_INTRO = (
    "Each line of the context is a record: a date, a user id, and an instance, which is a "
    "question. Every instance can be labelled with the kind of answer it asks for, one of: "
    + ", ".join(LABELS)
    + ". The labels are not given in the context; work them out from the questions."
)


def _unique_top(counts: Mapping[Any, int]) -> Any | None:
    ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def _month(day: dt.date) -> str:
    return f"{MONTH_NAMES[day.month - 1]} {day.year}"


AGGREGATE_QUESTIONS = (
    "count",
    "most_common",
    "least_common",
    "compare",
    "user_count",
    "top_user",
    "peak_month",
    "after_date",
)


def _aggregate_question(
    rng: random.Random, kind: str, records: Sequence[Record]
) -> tuple[str, str, str] | None:
    """(question, gold answer, answer type) or None when this draw has no unique answer."""
    label = rng.choice(LABELS)
    by_label = Counter(r.label for r in records)
    if kind == "count":
        return f"How many instances would be labelled {label}?", str(by_label[label]), "number"
    if kind in ("most_common", "least_common"):
        counts = {x: by_label[x] for x in LABELS}
        if kind == "least_common":
            counts = {x: -c for x, c in counts.items()}
        top = _unique_top(counts)
        word = "most" if kind == "most_common" else "least"
        if top is None:
            return None
        return f"Which label is the {word} common among the instances?", str(top), "label"
    if kind == "compare":
        other = rng.choice([x for x in LABELS if x != label])
        a, b = by_label[label], by_label[other]
        gold = "more common than" if a > b else "less common than" if a < b else "same frequency as"
        question = (
            f"Is the label {label} more common than, less common than, or the same frequency as "
            f"the label {other}? Answer with one of: more common than, less common than, same "
            "frequency as."
        )
        return question, gold, "comparison"
    if kind == "user_count":
        user = rng.choice(records).user
        n = sum(1 for r in records if r.user == user and r.label == label)
        return f"How many instances from user {user} would be labelled {label}?", str(n), "number"
    if kind == "top_user":
        top = _unique_top(Counter(r.user for r in records if r.label == label))
        if top is None:
            return None
        return f"Which user has the most instances labelled {label}?", str(top), "user"
    if kind == "peak_month":
        top = _unique_top(Counter(_month(r.date) for r in records if r.label == label))
        if top is None:
            return None
        question = (
            f"In which month do the instances labelled {label} peak? "
            "Answer with the month and year, like March 2023."
        )
        return question, str(top), "month"
    cut = _START + dt.timedelta(days=rng.randrange(60, _DAYS - 60))
    n = sum(1 for r in records if r.label == label and r.date > cut)
    question = f"How many instances labelled {label} are dated after {format_date(cut)}?"
    return question, str(n), "number"


def build_aggregate(rng: random.Random, fit: Fit, params: Mapping[str, Any]) -> Built:
    """Records up to the length, then one counting, user or timeline question about them."""
    users = max(4, min(400, fit.target // 3000))
    context, records = _fill_records(rng, fit, users)
    wanted = str(params["question"])
    for _ in range(200):
        kind = rng.choice(AGGREGATE_QUESTIONS) if wanted == "any" else wanted
        drawn = _aggregate_question(rng, kind, records)
        if drawn is not None:
            break
    else:  # every draw tied: a count always has an answer
        kind = "count"
        drawn = _aggregate_question(rng, kind, records)
        assert drawn is not None
    question, gold, answer_type = drawn
    query = f"{_INTRO}\n\n{question}\n\nEnd your answer with a line of the form 'Answer: ...'."
    return Built(context, query, [gold], answer_type=answer_type, kind=kind)


def _threshold(counts: Mapping[str, int], rng: random.Random) -> tuple[int, set[str]] | None:
    """A count t such that between 2 and 8 users have at least t (and t >= 1)."""
    ranked = sorted(counts.values(), reverse=True)
    options = [
        k for k in range(2, min(9, len(ranked) + 1))
        if ranked[k - 1] >= 1 and (k == len(ranked) or ranked[k - 1] > ranked[k])
    ]  # fmt: skip
    if not options:
        return None
    t = ranked[rng.choice(options) - 1]
    return t, {u for u, c in counts.items() if c >= t}


def _pairs_question(
    rng: random.Random, kind: str, records: Sequence[Record]
) -> tuple[str, list[str]] | None:
    users = sorted({r.user for r in records})

    def counts(labels: set[str], after: dt.date | None = None) -> dict[str, int]:
        c = Counter(
            r.user for r in records if r.label in labels and (after is None or r.date > after)
        )
        return {u: c[u] for u in users}

    if kind in ("both", "both_after"):
        a, b = rng.sample(LABELS, 2)
        after = (
            _START + dt.timedelta(days=rng.randrange(90, _DAYS // 2))
            if kind == "both_after"
            else None
        )
        found = _threshold(counts({a, b}, after), rng)
        if found is None:
            return None
        t, chosen = found
        dated = f" dated after {format_date(after)}" if after else ""
        question = (
            f"List all pairs of user ids where each of the two users has at least {t} "
            f"instances{dated} labelled {a} or {b}."
        )
        pairs = {(x, y) for x in chosen for y in chosen if x < y}
    else:
        x_label, y_label = rng.sample(LABELS, 2)
        cx = counts({x_label})
        values = Counter(cx.values())
        exact = [v for v, n in values.items() if 1 <= n <= 4 and v >= 1]
        found = _threshold(counts({y_label}), rng)
        if not exact or found is None:
            return None
        e = rng.choice(sorted(exact))
        t, q = found
        p = {u for u, c in cx.items() if c == e}
        pairs = {(min(u, v), max(u, v)) for u in p for v in q if u != v}
        question = (
            f"List all pairs of user ids where one user has exactly {e} instances labelled "
            f"{x_label} and the other has at least {t} instances labelled {y_label}."
        )
    return question, [f"{x},{y}" for x, y in sorted(pairs)]


PAIRS_QUESTIONS = ("both", "both_after", "one_and_other")


def build_pairs(rng: random.Random, fit: Fit, params: Mapping[str, Any]) -> Built:
    """Records up to the length, then a question whose answer is a list of pairs of users."""
    users = max(6, min(60, fit.target // 4000))
    context, records = _fill_records(rng, fit, users)
    wanted = str(params["question"])
    drawn = None
    kind = wanted
    for _ in range(200):
        kind = rng.choice(PAIRS_QUESTIONS) if wanted == "any" else wanted
        drawn = _pairs_question(rng, kind, records)
        if drawn is not None and drawn[1]:
            break
    if drawn is None:  # pragma: no cover - every record set has some threshold pair
        raise RuntimeError("no pairs question could be drawn")
    question, gold = drawn
    query = (
        f"{_INTRO}\n\n{question}\n\nAnswer with one pair per line, written (id1, id2) with the "
        "smaller id first and no pair twice; answer [] if there is none."
    )
    return Built(context, query, gold, answer_type="pairs", kind=kind)
