"""The oracle doubles: their sub-model labels every generated question right, and they
reject failures they do not know."""

from __future__ import annotations

import random

import pytest

from rlm_sdk.eval import generate, oracle_policy
from rlm_sdk.eval._oracles import classify_question, solve_program
from rlm_sdk.eval._records import LABELS, make_instance


def test_the_sub_model_labels_every_kind_of_question() -> None:
    """The double's sub-model gives each generated question the label it was generated with."""
    rng = random.Random(3)
    for label in LABELS:
        for _ in range(200):
            assert classify_question(make_instance(rng, label)) == label


@pytest.mark.parametrize(
    "family", ["niah", "aggregate", "pairs", "chains", "docs_multihop", "code_lookup"]
)
def test_every_family_has_a_program_that_never_names_the_gold(family: str) -> None:
    """The double writes a program for each family's query, and the program holds no gold answer."""
    sample = generate(family, "8k", seed=2)
    program = solve_program(sample.query)
    assert program is not None and "answer" in program
    if family not in ("code_lookup",):  # a letter is too short to check
        assert not any(g in program for g in sample.gold)


def test_unknown_queries_and_failures() -> None:
    """A query of no known family gets no program; an unknown failure mode is refused."""
    assert solve_program("What is the capital of France?") is None
    with pytest.raises(ValueError, match="first_only"):
        oracle_policy("slightly_wrong")
