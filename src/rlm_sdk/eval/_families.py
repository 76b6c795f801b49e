"""The task families by name: each one's builder, scoring rule and parameters."""

from __future__ import annotations

from collections.abc import Mapping

from rlm_sdk import ConfigurationError

from ._code import CODE_QUESTIONS, build_code
from ._docs import build_docs
from ._haystack import build_chains, build_niah
from ._records import AGGREGATE_QUESTIONS, PAIRS_QUESTIONS, build_aggregate, build_pairs
from ._sample import Family

__all__ = ["FAMILIES", "get_family"]

FAMILIES: Mapping[str, Family] = {
    f.name: f
    for f in (
        Family(
            "niah",
            build_niah,
            "recall",
            {"needles": 1, "values": 1, "queries": 1, "haystack": "noise", "value_type": "number"},
            {
                "haystack": ("noise", "prose", "distractor"),
                "value_type": ("number", "word", "uuid"),
            },
            "find the values hidden for one or more keys (RULER's needle in a haystack)",
        ),
        Family(
            "aggregate",
            build_aggregate,
            "oolong",
            {"question": "any"},
            {"question": ("any", *AGGREGATE_QUESTIONS)},
            "classify every record, then count (OOLONG's counting, user and timeline questions)",
        ),
        Family(
            "pairs",
            build_pairs,
            "pairs_f1",
            {"question": "any"},
            {"question": ("any", *PAIRS_QUESTIONS)},
            "list every pair of users meeting a condition on their records (OOLONG-Pairs)",
        ),
        Family(
            "chains",
            build_chains,
            "recall",
            {"hops": 4, "chains": 2, "haystack": "noise"},
            {"haystack": ("noise", "prose")},
            "follow variables assigned from one another (RULER's variable tracking)",
        ),
        Family(
            "docs_multihop",
            build_docs,
            "exact",
            {"hops": 3, "decoys": True},
            {"hops": (2, 3, 4)},
            "chain facts across many documents, past hard negatives (like BrowseComp-Plus)",
        ),
        Family(
            "code_lookup",
            build_code,
            "choice",
            {"question": "any"},
            {"question": ("any", *CODE_QUESTIONS)},
            "four-option questions about a generated code base (like LongBench-v2 CodeQA)",
        ),
    )
}
"""Every task family, by name."""


def get_family(name: str) -> Family:
    """The family called ``name``.

    Raises:
        ConfigurationError: no such family; the message lists the known ones.
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown task family {name!r}; known: {', '.join(FAMILIES)}"
        ) from None
