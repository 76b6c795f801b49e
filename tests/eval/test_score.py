"""Scoring rules as tables: each family's published rule, and the strict variants."""

from __future__ import annotations

import pytest

from rlm_sdk.eval import generate, score, score_answer
from rlm_sdk.eval._score import choice_letter, normalise, parse_pairs


@pytest.mark.parametrize(
    ("gold", "answer", "expected"),
    [
        ("12", "Answer: 12", 1.0),
        ("12", "Answer: 13", 0.75),
        ("12", "Answer: 14", 0.5625),  # a count off by 2
        ("12", "Answer: 10", 0.5625),
        ("12", "I counted carefully. Answer: **15**", 0.421875),
        ("1200", "Answer: 1,200", 1.0),
        ("12", "Answer: twelve", 0.0),
        ("12", "12", 1.0),  # no colon: the whole answer is read
    ],
)
def test_oolong_numbers_score_three_quarters_per_unit_off(
    gold: str, answer: str, expected: float
) -> None:
    """A number scores 0.75 ** |gold - answer|, read after the last colon with * [ ] stripped."""
    assert score_answer("oolong", [gold], answer, answer_type="number").score == pytest.approx(
        expected
    )


@pytest.mark.parametrize(
    ("gold", "answer_type", "answer", "expected"),
    [
        ("more common than", "comparison", "Answer: more common than", 1.0),
        ("more common than", "comparison", "Answer: less common than", 0.0),
        ("same frequency as", "comparison", "Label: [same frequency as]", 1.0),
        ("location", "label", "Answer: Location.", 1.0),
        ("location", "label", "Answer: entity", 0.0),
        ("human being", "label", "answer: human being", 1.0),
        ("48213", "user", "User: 48213", 1.0),
        ("48213", "user", "User: 48214", 0.0),
        ("March 2023", "month", "Answer: March 2023", 1.0),
        ("March 2023", "month", "Answer: Mar 2023", 1.0),
        ("March 2023", "month", "Answer: 2023-03", 1.0),
        ("March 2023", "month", "Answer: April 2023", 0.0),
    ],
)
def test_oolong_labels_comparisons_users_and_months(
    gold: str, answer_type: str, answer: str, expected: float
) -> None:
    """Labels, users and comparison phrases must match; months match as dates."""
    assert score_answer("oolong", [gold], answer, answer_type=answer_type).score == expected


@pytest.mark.parametrize(
    ("gold", "answer", "recall", "strict"),
    [
        (["4821937"], "4821937", 1.0, 1.0),
        (["4821937"], "The number is 4821937.", 1.0, 0.0),
        (["4821937", "1112223"], "4821937", 0.5, 0.0),
        (["4821937", "1112223"], "1112223, 4821937", 1.0, 1.0),
        (["4821937", "1112223"], "Answer: 1112223 and 4821937", 1.0, 1.0),
        (["quiet falcon"], "QUIET FALCON", 1.0, 1.0),
        (["4821937"], "4821937, 9999999", 1.0, 0.0),  # recall never penalises extra output
        (["4821937"], "", 0.0, 0.0),
    ],
)
def test_needle_recall_and_its_strict_set_match(
    gold: list[str], answer: str, recall: float, strict: float
) -> None:
    """Recall is the share of gold values found; strict is 1 only for exactly the gold set."""
    got = score_answer("recall", gold, answer, answer_type="values")
    assert (got.score, got.strict) == (pytest.approx(recall), strict)


def test_variable_tracking_strict_is_f1_over_five_letter_names() -> None:
    """For chains, the strict variant is F1 over the five-letter names written."""
    gold = ["ABCDE", "FGHIJ", "KLMNO", "PQRST"]
    got = score_answer("recall", gold, "ABCDE, FGHIJ, ZZZZZ", answer_type="names")
    assert got.score == 0.5
    assert got.strict == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


@pytest.mark.parametrize(
    ("gold", "answer", "expected"),
    [
        (["1,2", "3,4"], "(1, 2)\n(3, 4)", 1.0),
        (["1,2", "3,4"], "(2, 1)\n(4, 3)\n(2, 1)", 1.0),  # order within a pair and repeats ignored
        (["1,2", "3,4"], "(1, 2)", 2 * 1 * 0.5 / 1.5),
        (["1,2", "3,4"], "(1, 2)\n(5, 6)", 0.5),
        (["1,2"], "[]", 0.0),
        ([], "[]", 1.0),
        ([], "(1, 2)", 0.0),
        (["10,20"], "Answer: ('10', '20')", 1.0),
    ],
)
def test_pairs_f1(gold: list[str], answer: str, expected: float) -> None:
    """F1 over the set of pairs; both empty scores 1, an empty prediction against pairs 0."""
    assert score_answer("pairs_f1", gold, answer).score == pytest.approx(expected)


@pytest.mark.parametrize(
    ("gold", "answer", "expected"),
    [
        ("Joucoubork", "Joucoubork", 1.0),
        ("Joucoubork", "joucoubork.", 1.0),
        ("Joucoubork", "Answer: Joucoubork", 1.0),
        ("Klecu Works", "the Klecu Works", 1.0),
        ("Joucoubork", "It is Joucoubork", 0.0),
        ("1481", "1482", 0.0),
    ],
)
def test_normalised_exact_match(gold: str, answer: str, expected: float) -> None:
    """Case, punctuation, articles and spaces are ignored; nothing else is."""
    assert score_answer("exact", [gold], answer).score == expected


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("B", "B"),
        ("(B)", "B"),
        ("Answer: C", "C"),
        ("D) 245", "D"),
        ("The answer is A.", "A"),
        ("none", None),
    ],
)
def test_choice_letters(answer: str, letter: str | None) -> None:
    """The option letter is read from the usual ways of writing it."""
    assert choice_letter(answer) == letter


def test_choice_by_option_text_and_accuracy() -> None:
    """An answer that repeats an option's text counts as that option; only the gold one scores."""
    options = ["load_x", "parse_y", "sync_z", "scan_w"]
    assert choice_letter("sync_z", options) == "C"
    assert score_answer("choice", ["C"], "sync_z", choices=options).score == 1.0
    assert score_answer("choice", ["C"], "Answer: B", choices=options).score == 0.0


@pytest.mark.parametrize("rule", ["recall", "oolong", "pairs_f1", "exact", "choice"])
def test_no_answer_scores_zero(rule: str) -> None:
    """A missing answer scores 0 under every rule, strict included."""
    got = score_answer(rule, ["1"], None, answer_type="number")  # type: ignore[arg-type]
    assert (got.score, got.strict) == (0.0, 0.0)


def test_score_uses_the_samples_own_rule() -> None:
    """score(sample, answer) applies the family's rule to the sample's gold answer."""
    s = generate("niah", "8k", seed=1)
    assert score(s, f"It is {s.gold[0]}").score == 1.0
    assert score(s, "no idea").score == 0.0


def test_helpers() -> None:
    """Normalisation drops articles and punctuation; pairs parse in any order."""
    assert normalise("  The Quick, brown  fox! ") == "quick brown fox"
    assert parse_pairs("(b, a) and (c, d)") == {("a", "b"), ("c", "d")}
