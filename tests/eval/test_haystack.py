"""niah and chains: the gold answer re-derived by brute force from the context text alone."""

from __future__ import annotations

import re
import uuid

import pytest

from rlm_sdk.eval import generate

NEEDLE = re.compile(r"^The hidden (\w+) that belongs to ([a-z]+-[a-z]+) is (.+)\.$", re.M)


def brute_niah(context: str, query: str) -> list[str]:
    """Every value the context gives for the keys the query names."""
    keys = re.search(r"belongs? to (.+?)\? ", query)
    assert keys is not None
    asked = keys.group(1).split(" and ")
    return [value for _, key, value in NEEDLE.findall(context) if key in asked]


@pytest.mark.parametrize("haystack", ["noise", "prose", "distractor"])
@pytest.mark.parametrize("value_type", ["number", "word", "uuid"])
@pytest.mark.parametrize("seed", [1, 2])
def test_niah_gold_is_what_the_context_says(haystack: str, value_type: str, seed: int) -> None:
    """The gold values are exactly the context's values for the asked key, for every haystack and value type."""
    s = generate("niah", "16k", seed=seed, params={"haystack": haystack, "value_type": value_type})
    assert sorted(brute_niah(s.context, s.query)) == sorted(s.gold)
    assert s.gold[0] not in s.query
    if value_type == "number":
        assert re.fullmatch(r"\d{7}", s.gold[0])
    elif value_type == "uuid":
        assert uuid.UUID(s.gold[0]).version == 4
    needles = NEEDLE.findall(s.context)
    assert len(needles) == (1 if haystack != "distractor" else len(needles))
    if haystack == "distractor":
        assert len(needles) > 50  # the haystack is made of needle-shaped lines


def test_multi_key_multi_value_multi_query() -> None:
    """Several keys, values and asked keys: the gold lists every value of the asked keys only."""
    s = generate("niah", "16k", seed=4, params={"needles": 4, "values": 3, "queries": 2})
    assert len(s.gold) == 6
    assert sorted(brute_niah(s.context, s.query)) == sorted(s.gold)
    assert len(NEEDLE.findall(s.context)) == 12


def test_needle_depths_vary_with_the_seed() -> None:
    """The needle sits at different depths for different seeds (40 evenly spaced points)."""
    depths = set()
    for seed in range(12):
        s = generate("niah", "8k", seed=seed)
        depths.add(round(s.context.index("The hidden") / len(s.context), 1))
    assert len(depths) >= 4


def brute_chains(context: str, query: str) -> list[str]:
    """Resolve every variable to its value; keep those equal to the asked value."""
    value = re.search(r"assigned the value (\d+)", query)
    assert value is not None
    assigned = dict(re.findall(r"^VAR ([A-Z]{5}) = (.+)$", context, re.M))

    def resolve(name: str) -> str:
        seen = set()
        v = assigned[name]
        while v.startswith("VAR "):
            assert name not in seen
            seen.add(name)
            name = v[4:]
            v = assigned[name]
        return v

    return [n for n in assigned if resolve(n) == value.group(1)]


@pytest.mark.parametrize(("hops", "chains"), [(1, 1), (4, 2), (6, 3)])
def test_chains_gold_is_every_variable_resolving_to_the_value(hops: int, chains: int) -> None:
    """The gold names are exactly the variables whose chain ends at the asked value, assigned in order."""
    s = generate(
        "chains", "16k", seed=hops, params={"hops": hops, "chains": chains, "haystack": "prose"}
    )
    assert sorted(brute_chains(s.context, s.query)) == sorted(s.gold)
    assert len(s.gold) == hops
    assert len(re.findall(r"^VAR ", s.context, re.M)) == hops * chains
    lines = s.context.splitlines()
    order = [
        next(i for i, line in enumerate(lines) if line.startswith(f"VAR {n} =")) for n in s.gold
    ]
    assert order == sorted(order)  # each assignment comes after the one it copies
