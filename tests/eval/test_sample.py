"""Samples: lengths, fitting, stable ids, parameters, determinism, and the tokenizer hook."""

from __future__ import annotations

import hashlib

import pytest

from rlm_sdk import ConfigurationError, estimate_tokens
from rlm_sdk.eval import FAMILIES, SampleSpec, generate, get_family, parse_length, specs
from rlm_sdk.eval._sample import Fit, length_label, parse_task

ALL = sorted(FAMILIES)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8k", 8192),
        ("512k", 524_288),
        ("4M", 4_194_304),
        ("1.5k", 1536),
        ("20000", 20_000),
        (4096, 4096),
    ],
)
def test_lengths_parse_in_powers_of_two(text: str | int, value: int) -> None:
    """k and M count in powers of two, as the papers do; digits are taken as they are."""
    assert parse_length(text) == value


@pytest.mark.parametrize("bad", ["", "eight", "8x", "100"])
def test_bad_lengths_are_refused(bad: str) -> None:
    """A length that is not a number with k or M, or is below 1k, is a configuration error."""
    with pytest.raises(ConfigurationError):
        parse_length(bad)


def test_length_labels_round_trip() -> None:
    """A round length is named as it was written; others by their digits."""
    assert [length_label(parse_length(x)) for x in ("8k", "64k", "4M")] == ["8k", "64k", "4M"]
    assert length_label(20_000) == "20000"


@pytest.mark.parametrize("family", ALL)
@pytest.mark.parametrize("length", ["8k", "20k"])
def test_every_family_fits_its_length_closely(family: str, length: str) -> None:
    """A context never passes its length and falls short by less than one filler unit."""
    sample = generate(family, length, seed=3)
    target = parse_length(length)
    assert sample.achieved == len(sample.context) <= target
    assert sample.achieved > target - 2_000  # the largest unit (a code module) is shorter
    assert sample.query and sample.gold


@pytest.mark.parametrize("family", ALL)
def test_samples_are_pure_functions_of_their_spec(family: str) -> None:
    """The same family, parameters, length and seed give a byte-identical sample; another seed does not."""
    a, b, c = (generate(family, "8k", seed=s) for s in (11, 11, 12))
    assert a == b
    assert a.context != c.context


def test_ids_are_stable_hashes_of_everything_a_sample_depends_on() -> None:
    """An id is pinned for a spec (it must not change between versions), and changes with each input."""
    spec = SampleSpec(family="niah", params=get_family("niah").params(None), length=8192, seed=1)
    assert spec.id == "niah-8k-000-" + spec.id.rsplit("-", 1)[1]
    assert spec.id == SampleSpec.model_validate(spec.model_dump()).id
    changed = [
        spec.model_copy(update={"seed": 2}),
        spec.model_copy(update={"length": 8193}),
        spec.model_copy(update={"params": {**spec.params, "needles": 2}}),
        spec.model_copy(update={"unit": "tokens"}),
    ]
    assert len({spec.id, *(s.id for s in changed)}) == 5


PINNED = {
    # family: (id, first 16 hex digits of the context's SHA-256, gold) at 8k, seed 7
    "niah": ("niah-8k-000-8ee18cc536", "b726f183b14d108e", ["7624039"]),
    "aggregate": ("aggregate-8k-000-94523b04a0", "41e90b2c16a8eb73", ["more common than"]),
    "pairs": ("pairs-8k-000-9706986015", "4ef39ebc83399e1e", ["16328,29772", "16328,52445"]),
    "chains": ("chains-8k-000-9cea754d30", "b4528cd71d0f6283", ["KEMUB", "CRDLS"]),
    "docs_multihop": ("docs_multihop-8k-000-a402c1ec23", "7397eabec8927996", ["1949"]),
    "code_lookup": ("code_lookup-8k-000-811251dc66", "01c7f4fef31acf83", ["A"]),
}


@pytest.mark.parametrize("family", ALL)
def test_pinned_ids_and_contexts_do_not_drift(family: str) -> None:
    """A known spec gives a known id, context and gold answer, so a results file stays
    resumable and comparable across releases; a change here is a change of every eval's
    samples and must be deliberate."""
    sample = generate(family, "8k", seed=7)
    sample_id, digest, gold = PINNED[family]
    assert sample.id == sample_id
    assert hashlib.sha256(sample.context.encode()).hexdigest()[:16] == digest
    assert sample.gold[:2] == gold


def test_specs_give_each_cell_n_distinct_seeds_in_order() -> None:
    """specs() walks task by task and length by length, with n samples of distinct seeds each."""
    made = specs(["niah", "chains:hops=3"], ["8k", "16k"], 3, seed=5)
    assert [(s.family, s.length, s.index) for s in made[:4]] == [
        ("niah", 8192, 0), ("niah", 8192, 1), ("niah", 8192, 2), ("niah", 16384, 0),
    ]  # fmt: skip
    assert len(made) == 12 and len({s.id for s in made}) == 12
    assert made[6].params["hops"] == 3
    assert specs(["niah"], ["8k"], 3, seed=5)[0].seed != specs(["niah"], ["8k"], 3, seed=6)[0].seed


def test_parameters_are_coerced_checked_and_listed() -> None:
    """String parameters become their default's type; unknown keys and values are refused by name."""
    assert get_family("niah").params({"needles": "4", "haystack": "prose"})["needles"] == 4
    assert get_family("docs_multihop").params({"decoys": "false"})["decoys"] is False
    with pytest.raises(ConfigurationError, match="needles"):
        get_family("niah").params({"needle": 2})
    with pytest.raises(ConfigurationError, match="noise, prose, distractor"):
        get_family("niah").params({"haystack": "poetry"})
    with pytest.raises(ConfigurationError, match="known: niah"):
        get_family("trivia")
    assert parse_task("niah:needles=4, haystack=prose") == (
        "niah",
        {"needles": "4", "haystack": "prose"},
    )
    with pytest.raises(ConfigurationError):
        parse_task("niah:needles")


def test_lengths_in_tokens_use_the_tokenizer() -> None:
    """With unit=tokens, the context is fitted and measured with the given tokenizer."""
    spec = specs(["niah"], ["8k"], 1, unit="tokens")[0]
    sample = spec.build(estimate_tokens)
    assert sample.unit == "tokens"
    assert 8192 - 200 < sample.achieved == estimate_tokens(sample.context) <= 8192
    assert len(sample.context) > 3 * 8192
    with pytest.raises(ConfigurationError, match="tokenizer"):
        spec.build()


def test_fit_places_inserts_at_their_depths_in_order() -> None:
    """Inserts land at their depth among the filler, in depth order, and the total stays within the target."""
    fit = Fit(1000, len)
    text, used = fit.fill(
        iter(["x" * 9] * 1000), [(0.5, "MID"), (0.0, "FIRST"), (1.0, "LAST"), (0.5, "MID2")]
    )
    lines = text.split("\n")
    assert lines[0] == "FIRST" and lines[-1] == "LAST"
    assert lines.index("MID") + 1 == lines.index("MID2")
    assert abs(lines.index("MID") - len(lines) / 2) <= 2
    assert len(text) <= 1000 and used == len(lines) - 4
    with pytest.raises(ConfigurationError, match="too short"):
        Fit(10, len).fill(iter(["a"]), [(0.5, "x" * 20)])
