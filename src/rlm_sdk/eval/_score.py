"""Scoring rules: each family's published rule, as pure functions of (gold, answer).

* ``recall`` (niah, chains): the share of gold values found in the answer, case-insensitive;
  extra output is never penalised. Its strict variant: for needles, 1 only when the answer
  lists exactly the gold values; for variable chains, F1 over the five-letter names written.
* ``oolong`` (aggregate): the text after the answer's last ``:`` with ``*``, ``[`` and ``]``
  removed; a number scores ``0.75 ** |gold - answer|``, a comparison phrase or a label or a
  user id must match, a month must be the same month.
* ``pairs_f1`` (pairs): F1 over the set of ``(a, b)`` pairs, order within a pair ignored; an
  empty prediction against an empty gold list scores 1.
* ``exact`` (docs_multihop): normalised exact match (case, punctuation, articles, spaces).
* ``choice`` (code_lookup): the option letter must be the gold one.

A missing answer (``None``) scores 0 under every rule.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from pydantic import BaseModel

from ._records import MONTH_NAMES
from ._sample import Sample, ScorerName

__all__ = [
    "Scored",
    "choice_letter",
    "normalise",
    "oolong_score",
    "pairs_f1",
    "parse_pairs",
    "recall",
    "score",
    "score_answer",
]


class Scored(BaseModel):
    """A score in [0, 1], and the strict variant of the rule (equal where there is none)."""

    score: float
    strict: float


def normalise(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD's normalisation)."""
    text = text.lower()
    text = "".join(" " if ch in string.punctuation else ch for ch in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def recall(gold: Sequence[str], answer: str) -> float:
    """The share of ``gold`` values that appear in ``answer`` (case-insensitive substrings)."""
    if not gold:
        return 1.0
    low = answer.lower()
    return sum(1 for g in gold if g.lower() in low) / len(gold)


def _items(answer: str) -> set[str]:
    parts = re.split(r"[,;\n]|\band\b", answer)
    return {n for n in (normalise(p) for p in parts) if n}


def _set_f1(gold: set[str], predicted: set[str]) -> float:
    if not gold and not predicted:
        return 1.0
    if not gold or not predicted:
        return 0.0
    hits = len(gold & predicted)
    if hits == 0:
        return 0.0
    precision, rec = hits / len(predicted), hits / len(gold)
    return 2 * precision * rec / (precision + rec)


def _after_last_colon(answer: str) -> str:
    tail = answer.rsplit(":", 1)[-1]
    return tail.replace("*", "").replace("[", "").replace("]", "").strip().rstrip(".").strip()


_COMPARISONS = ("more common than", "less common than", "same frequency as")
_MONTHS = {name.lower(): i for i, name in enumerate(MONTH_NAMES, 1)} | {
    name[:3].lower(): i for i, name in enumerate(MONTH_NAMES, 1)
}


def _month(text: str) -> tuple[int, int] | None:
    low = text.lower()
    m = re.search(r"\b([a-z]+)\.?\s*,?\s*(\d{4})\b", low)
    if m and m.group(1) in _MONTHS:
        return int(m.group(2)), _MONTHS[m.group(1)]
    m = re.search(r"\b(\d{4})-(\d{1,2})\b", low) or re.search(r"\b(\d{1,2})/(\d{4})\b", low)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        year, month = (a, b) if a > 31 else (b, a)
        if 1 <= month <= 12:
            return year, month
    return None


def oolong_score(gold: str, answer_type: str, answer: str) -> float:
    """OOLONG's rule for one answer (see the module docstring)."""
    text = _after_last_colon(answer)
    if answer_type == "number":
        m = re.search(r"-?\d+", text.replace(",", ""))
        if m is None:
            return 0.0
        return float(0.75 ** abs(int(gold) - int(m.group(0))))
    if answer_type == "comparison":
        found = [c for c in _COMPARISONS if c in text.lower()]
        return 1.0 if found == [gold] else 0.0
    if answer_type == "month":
        got = _month(text)
        return 1.0 if got is not None and got == _month(gold) else 0.0
    return 1.0 if normalise(text) == normalise(gold) else 0.0


def parse_pairs(answer: str) -> set[tuple[str, str]]:
    """Every ``(a, b)`` written in ``answer``, each with its smaller member first."""
    found = re.findall(r"\(\s*['\"]?(\w+)['\"]?\s*,\s*['\"]?(\w+)['\"]?\s*\)", answer)
    return {(a, b) if a <= b else (b, a) for a, b in found}


def pairs_f1(gold: Sequence[str], answer: str) -> float:
    """F1 over pairs; ``gold`` holds ``"a,b"`` strings."""
    wanted = {(a, b) if a <= b else (b, a) for a, b in (g.split(",", 1) for g in gold)}
    return _set_f1({f"{a},{b}" for a, b in wanted}, {f"{a},{b}" for a, b in parse_pairs(answer)})


def choice_letter(answer: str, choices: Sequence[str] = ()) -> str | None:
    """The option letter an answer gives: ``B``, ``(B)``, ``Answer: B``, or an option's text."""
    for text in (_after_last_colon(answer), answer):
        m = re.search(r"(?<![\w'])\(?([A-D])\)?(?![\w'])", text.strip())
        if m:
            return m.group(1)
    for i, option in enumerate(choices):
        if normalise(option) and normalise(option) == normalise(answer):
            return "ABCD"[i]
    return None


def score_answer(
    scorer: ScorerName,
    gold: Sequence[str],
    answer: str | None,
    *,
    answer_type: str = "text",
    choices: Sequence[str] = (),
) -> Scored:
    """Score ``answer`` against ``gold`` with the named rule."""
    if answer is None:
        return Scored(score=0.0, strict=0.0)
    if scorer == "recall":
        value = recall(gold, answer)
        if answer_type == "names":  # variable tracking: F1 over the five-letter names written
            strict = _set_f1(set(gold), set(re.findall(r"\b[A-Z]{5}\b", answer)))
        else:
            strict = 1.0 if _items(_strip_label(answer)) == {normalise(g) for g in gold} else 0.0
        return Scored(score=value, strict=strict)
    if scorer == "oolong":
        value = oolong_score(gold[0], answer_type, answer)
    elif scorer == "pairs_f1":
        value = pairs_f1(gold, answer)
    elif scorer == "exact":
        value = 1.0 if normalise(_strip_label(answer)) == normalise(gold[0]) else 0.0
    else:
        value = 1.0 if choice_letter(answer, choices) == gold[0] else 0.0
    return Scored(score=value, strict=value)


def _strip_label(answer: str) -> str:
    return re.sub(r"^\s*(final\s+)?answer\s*:\s*", "", answer.strip(), flags=re.IGNORECASE)


def score(sample: Sample, answer: str | None) -> Scored:
    """Score ``answer`` to ``sample`` with its family's rule."""
    return score_answer(
        sample.scorer,
        sample.gold,
        answer,
        answer_type=sample.answer_type,
        choices=sample.choices,
    )
