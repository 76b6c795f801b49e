"""aggregate and pairs: gold answers re-derived by brute force, with this test's own labeller."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter

import pytest

from rlm_sdk.eval import generate
from rlm_sdk.eval._records import AGGREGATE_QUESTIONS, PAIRS_QUESTIONS

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def label_of(question: str) -> str:
    """This test's own reading of what kind of answer a generated question asks for."""
    rules = [
        (r"^Who ", "human being"),
        (r"stand for\?$|short for\?$|^What is the abbreviation", "abbreviation"),
        (r"^(Where|In which country|What city)", "location"),
        (r"^(How many|How tall|How much|What year)", "numeric value"),
        (
            r"^(What does the word|Why|How does|What is the meaning)",
            "description and abstract concept",
        ),
        (r"^(What animal|Which instrument|What food|What is the name)", "entity"),
    ]
    for pattern, label in rules:
        if re.search(pattern, question):
            return label
    raise AssertionError(f"unlabelled question {question!r}")


def parse(context: str) -> list[tuple[dt.date, str, str]]:
    """(date, user, label) for every record line."""
    out = []
    for line in context.splitlines():
        m = re.fullmatch(
            r"Date: (\w{3}) (\d{2}), (\d{4}) \|\| User: (\d+) \|\| Instance: (.+)", line
        )
        assert m, line
        day = dt.date(int(m.group(3)), MONTHS.index(m.group(1)) + 1, int(m.group(2)))
        out.append((day, m.group(4), label_of(m.group(5))))
    return out


def brute_aggregate(records: list[tuple[dt.date, str, str]], query: str) -> str:
    """The answer to an aggregate question, counted from the parsed records."""
    labels = Counter(lab for _, _, lab in records)
    if m := re.search(r"How many instances would be labelled (.+?)\?", query):
        return str(labels[m.group(1)])
    if m := re.search(r"Which label is the (most|least) common", query):
        all_labels = {
            "numeric value",
            "entity",
            "location",
            "description and abstract concept",
            "abbreviation",
            "human being",
        }
        counts = {x: labels[x] for x in all_labels}
        return (
            max(counts, key=counts.__getitem__)
            if m.group(1) == "most"
            else min(counts, key=counts.__getitem__)
        )
    if m := re.search(
        r"Is the label (.+?) more common than, less common than, or the same frequency as the label (.+?)\?",
        query,
    ):
        a, b = labels[m.group(1)], labels[m.group(2)]
        return "more common than" if a > b else "less common than" if a < b else "same frequency as"
    if m := re.search(r"How many instances from user (\d+) would be labelled (.+?)\?", query):
        return str(sum(1 for _, u, lab in records if u == m.group(1) and lab == m.group(2)))
    if m := re.search(r"Which user has the most instances labelled (.+?)\?", query):
        return Counter(u for _, u, lab in records if lab == m.group(1)).most_common(1)[0][0]
    if m := re.search(r"In which month do the instances labelled (.+?) peak\?", query):
        (y, mo), _ = Counter(
            (d.year, d.month) for d, _, lab in records if lab == m.group(1)
        ).most_common(1)[0]
        return dt.date(y, mo, 1).strftime("%B %Y")
    m = re.search(
        r"How many instances labelled (.+?) are dated after (\w{3}) (\d{2}), (\d{4})\?", query
    )
    assert m, query
    cut = dt.date(int(m.group(4)), MONTHS.index(m.group(2)) + 1, int(m.group(3)))
    return str(sum(1 for d, _, lab in records if lab == m.group(1) and d > cut))


@pytest.mark.parametrize("question", AGGREGATE_QUESTIONS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_aggregate_gold_matches_brute_force(question: str, seed: int) -> None:
    """Every question kind's gold answer equals a recount of the records with this test's labeller."""
    s = generate("aggregate", "16k", seed=seed, params={"question": question})
    assert s.kind in (question, "count")  # a tie for "least common" falls back to a count
    assert [brute_aggregate(parse(s.context), s.query)] == s.gold


def test_labels_are_never_written_in_the_context() -> None:
    """The context holds questions, never their labels."""
    s = generate("aggregate", "16k", seed=5)
    assert "numeric value" not in s.context and "human being" not in s.context


def test_most_records_come_from_a_fifth_of_the_users() -> None:
    """About 80 % of records belong to the heaviest 20 % of users."""
    records = parse(generate("aggregate", "256k", seed=6).context)
    by_user = Counter(u for _, u, _ in records).most_common()
    top = by_user[: max(1, len(by_user) // 5)]
    share = sum(c for _, c in top) / len(records)
    assert 0.7 < share < 0.9


def brute_pairs(records: list[tuple[dt.date, str, str]], query: str) -> list[str]:
    """The pairs a pairs question asks for, from the parsed records."""
    users = sorted({u for _, u, _ in records})

    def count(user: str, labels: set[str], after: dt.date | None = None) -> int:
        return sum(
            1
            for d, u, lab in records
            if u == user and lab in labels and (after is None or d > after)
        )

    if m := re.search(
        r"each of the two users has at least (\d+) instances(?: dated after (\w{3}) (\d{2}), (\d{4}))? labelled (.+?) or (.+?)\.",
        query,
    ):
        after = (
            dt.date(int(m.group(4)), MONTHS.index(m.group(2)) + 1, int(m.group(3)))
            if m.group(2)
            else None
        )
        ok = [u for u in users if count(u, {m.group(5), m.group(6)}, after) >= int(m.group(1))]
        pairs = {(a, b) for a in ok for b in ok if a < b}
    else:
        m = re.search(
            r"one user has exactly (\d+) instances labelled (.+?) and the other has at least (\d+) instances labelled (.+?)\.",
            query,
        )
        assert m, query
        p = [u for u in users if count(u, {m.group(2)}) == int(m.group(1))]
        q = [u for u in users if count(u, {m.group(4)}) >= int(m.group(3))]
        pairs = {(min(a, b), max(a, b)) for a in p for b in q if a != b}
    return [f"{a},{b}" for a, b in sorted(pairs)]


@pytest.mark.parametrize("question", PAIRS_QUESTIONS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pairs_gold_matches_brute_force(question: str, seed: int) -> None:
    """Every pairs question's gold list equals the pairs found by brute force, and is not empty."""
    s = generate("pairs", "16k", seed=seed, params={"question": question})
    assert brute_pairs(parse(s.context), s.query) == s.gold
    assert s.gold
