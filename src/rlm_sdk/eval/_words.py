"""Word banks and name makers for the generated tasks.

Everything a task says is built from these lists with a seeded ``random.Random``, so a task
is a pure function of its seed and nothing is downloaded. Names that must be unique (people,
companies, cities) come from a syllable generator with far more combinations than any task
needs; the lists are plain vocabulary.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = [
    "ADJECTIVES",
    "NOUNS",
    "PROSE_SUBJECTS",
    "PROSE_VERBS",
    "PROSE_OBJECTS",
    "PROSE_TAILS",
    "make_name",
    "unique_names",
]

ADJECTIVES = (
    "amber", "ancient", "bitter", "bold", "brave", "brisk", "calm", "clever", "crimson",
    "curious", "dapper", "distant", "dusty", "eager", "early", "electric", "fancy", "fierce",
    "fragile", "gentle", "gilded", "glassy", "golden", "grand", "hidden", "hollow", "humble",
    "icy", "idle", "jolly", "keen", "lively", "lonely", "lucky", "mellow", "misty", "modest",
    "narrow", "noble", "olive", "pale", "patient", "proud", "quiet", "rapid", "rosy", "rustic",
    "sandy", "scarlet", "shiny", "silent", "silver", "sleepy", "smoky", "solemn", "spicy",
    "steady", "stormy", "sturdy", "sunny", "swift", "tame", "tender", "tidy", "urban",
    "velvet", "vivid", "wandering", "wary", "wild", "windy", "wise", "witty", "young", "zesty",
)  # fmt: skip

NOUNS = (
    "anchor", "badger", "beacon", "bison", "bramble", "breeze", "canyon", "castle", "cedar",
    "comet", "coral", "crane", "creek", "dolphin", "dune", "eagle", "ember", "falcon", "fern",
    "fjord", "forest", "fossil", "garden", "glacier", "harbor", "hazel", "heron", "island",
    "jaguar", "kettle", "lagoon", "lantern", "lemur", "lotus", "maple", "meadow", "mirror",
    "nebula", "oasis", "orchid", "otter", "panther", "pebble", "pepper", "pigeon", "prairie",
    "quarry", "quartz", "raven", "reef", "ridge", "river", "saddle", "salmon", "spruce",
    "summit", "tangle", "thistle", "thunder", "tiger", "timber", "tulip", "tundra", "valley",
    "violet", "walrus", "willow", "wombat", "yarrow", "zephyr",
)  # fmt: skip

PROSE_SUBJECTS = (
    "The old ferryman", "A travelling merchant", "The village council", "My grandmother",
    "The night watchman", "A young apprentice", "The harbour master", "Our neighbour",
    "The lighthouse keeper", "A tired courier", "The schoolteacher", "The baker on the corner",
    "A wandering musician", "The mayor's clerk", "The retired sailor", "A quiet librarian",
)  # fmt: skip

PROSE_VERBS = (
    "carried", "mended", "painted", "counted", "remembered", "described", "collected",
    "sketched", "repaired", "ordered", "measured", "watched", "polished", "sorted", "traded",
    "borrowed", "forgot", "followed", "studied", "praised",
)  # fmt: skip

PROSE_OBJECTS = (
    "the broken lanterns", "a basket of winter apples", "the maps of the coast",
    "three crates of copper nails", "the letters from the mountains", "a pair of leather boots",
    "the harvest ledger", "the bells of the chapel", "an old brass compass",
    "the fishing nets", "a jar of wild honey", "the weather reports", "the wooden toys",
    "a stack of faded postcards", "the bridge's iron railings", "the orchard's fences",
)  # fmt: skip

PROSE_TAILS = (
    "before the first snow fell.", "while the tide went out.", "without saying a word.",
    "as the bells rang noon.", "long after everyone had gone home.", "under a grey sky.",
    "with great patience.", "for the spring market.", "in the small hours of the morning.",
    "because nobody else would.", "just as the rain began.", "near the old stone bridge.",
)  # fmt: skip

_ONSETS = (
    "b", "br", "c", "d", "dr", "f", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "pr", "r",
    "s", "st", "t", "tr", "v", "w", "z", "th", "sh", "kl", "fl",
)  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "ei")
_CODAS = ("", "n", "r", "l", "s", "th", "nd", "rk", "m", "x", "st", "v")


def make_name(rng: random.Random, syllables: int) -> str:
    """A pronounceable capitalised word of ``syllables`` syllables."""
    parts = [
        rng.choice(_ONSETS)
        + rng.choice(_VOWELS)
        + (rng.choice(_CODAS) if i == syllables - 1 else "")
        for i in range(syllables)
    ]
    return "".join(parts).capitalize()


def unique_names(
    rng: random.Random,
    count: int,
    make: Callable[[random.Random], str],
    taken: set[str] | None = None,
) -> list[str]:
    """``count`` distinct names from ``make(rng)`` that are not in ``taken`` (which grows)."""
    seen = taken if taken is not None else set()
    names: list[str] = []
    while len(names) < count:
        name = make(rng)
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names
