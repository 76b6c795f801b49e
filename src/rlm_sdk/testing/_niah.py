"""The needle-in-a-haystack demo: a haystack generator and an offline stand-in for the model.

``niah_policy`` is a TEST/DEMO DOUBLE, not a language model: it plays the root model's part
with the program a capable model writes for this task (find the line, read it, answer from
what the REPL printed). It never sees the needle except through the REPL's output, so a run
that answers right has really searched the context in the worker.
"""

from __future__ import annotations

import random
import re
from typing import Any

__all__ = ["NIAH_QUERY", "make_haystack", "niah_policy"]

NIAH_QUERY = "I'm looking for a magic number. What is it?"

_WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "ember",
    "lantern",
    "meadow",
    "copper",
    "violet",
    "harbor",
    "quiet",
    "thunder",
    "pepper",
    "marble",
    "orbit",
    "willow",
    "canyon",
    "falcon",
    "velvet",
    "cinder",
    "maple",
    "frostbite",
    "garnet",
    "island",
    "jasper",
    "kettle",
    "lemon",
    "mosaic",
    "nectar",
    "obsidian",
    "pillow",
    "quartz",
    "ravenous",
    "saffron",
    "tundra",
    "umber",
    "informal",
    "wander",
]


def make_haystack(lines: int = 1_000_000, *, seed: int | None = None) -> tuple[str, int]:
    """A haystack of ``lines`` lines of random words with one magic number in the middle.

    Returns the text and the number, so a caller can check an answer; the needle sits at a
    random line between 40 % and 60 % of the way down.
    """
    rng = random.Random(seed)
    number = rng.randrange(1_000_000, 10_000_000)
    choices, randint = rng.choices, rng.randint
    body = [" ".join(choices(_WORDS, k=randint(3, 8))) for _ in range(lines)]
    body[rng.randrange(int(lines * 0.4), max(int(lines * 0.6), int(lines * 0.4) + 1))] = (
        f"The magic number is {number}"
    )
    return "\n".join(body), number


_SEARCH = """\
Let me look at the context and search it for the phrase.
```repl
print(f"context: {type(context).__name__} of {len(context):,} characters")
pos = context.find("magic number")
if pos == -1:
    print("no line mentions a magic number")
else:
    start = context.rfind("\\n", 0, pos) + 1
    end = context.find("\\n", pos)
    print(f"at character {pos:,}:", repr(context[start : end if end != -1 else len(context)]))
```"""

_FALLBACK = """\
The phrase did not appear verbatim; let me ask a sub-model to scan the context in chunks.
```repl
size = 200_000
chunks = [context[i : i + size] for i in range(0, len(context), size)]
answers = llm_query_batched([f"Quote any line that mentions a magic number, or say NONE:\\n{c}" for c in chunks])
found = [a for a in answers if "NONE" not in a]
print(found[:5] or "nothing found")
```"""


def niah_policy(request: Any) -> str:
    """The scripted model's reply to a chat request (see the module docstring).

    ``request`` is a :class:`~rlm_sdk.providers.CompletionRequest` (or anything with
    ``messages`` whose items have ``role`` and ``content``).
    """
    messages = request.messages
    if messages[0].role != "system":  # a sub-call: answer from the chunk it was given
        m = re.search(r"^.*magic number.*$", messages[-1].content, re.MULTILINE | re.IGNORECASE)
        return m.group(0) if m and "NONE" not in m.group(0) else "NONE"
    turns = sum(1 for m in messages if m.role == "assistant")
    seen = "\n".join(m.content for m in messages[2:] if m.role == "user")
    m = re.search(r"magic number is (\d+)", seen)
    if m:
        return f"The REPL found the line.\nFINAL({m.group(1)})"
    if turns == 0:
        return _SEARCH
    if turns == 1:
        return _FALLBACK
    return "I could not find it.\nFINAL(no magic number found)"
