"""Scripted stand-in models for the benchmarks (TEST/DEMO doubles: no language model).

Each policy maps a chat request body to the reply a capable model would give. Answers come
from what the REPL printed or from the text a sub-call was given, never from the bench's own
knowledge of the right answer, so a correct answer proves the run really did the work.
"""

from __future__ import annotations

import re
from typing import Any

from rlm_sdk import CompletionRequest
from rlm_sdk.testing import niah_policy

FANOUT = 32

_FANOUT_CODE = f"""\
```repl
lines = context.split("\\n")
size = -(-len(lines) // {FANOUT})
chunks = ["\\n".join(lines[i * size : (i + 1) * size]) for i in range({FANOUT})]
answers = llm_query_batched(["How many lines mention 'ember'? Reply with a number.\\n" + c for c in chunks])
total = sum(int(a) for a in answers)
print("total:", total)
```"""


def fanout_policy(body: dict[str, Any]) -> str:
    """Root: fan the context out to 32 sub-calls, then answer from the printed total."""
    request = CompletionRequest.model_validate(body)
    messages = request.messages
    if messages[0].role != "system":
        text = messages[-1].content.split("\n", 1)[1]
        return str(sum(1 for line in text.split("\n") if "ember" in line))
    seen = "\n".join(m.content for m in messages[2:] if m.role == "user")
    m = re.search(r"total: (\d+)", seen)
    return f"FINAL({m.group(1)})" if m else _FANOUT_CODE


def niah(body: dict[str, Any]) -> str:
    """The demo's needle-in-a-haystack policy, over the wire."""
    return niah_policy(CompletionRequest.model_validate(body))


def count_policy(body: dict[str, Any]) -> str:
    """Each query (the first, or a session's follow-up): print ``len(context)`` in the REPL,
    then answer with what was printed."""
    messages = CompletionRequest.model_validate(body).messages
    asked = max(
        i
        for i, m in enumerate(messages)
        if m.role == "user" and m.content.startswith(("The query:", "A follow-up query"))
    )
    printed = re.search(r"chars: (\d+)", "\n".join(m.content for m in messages[asked + 1 :]))
    if printed:
        return f"FINAL({printed.group(1)})"
    return '```repl\nprint("chars:", len(context))\n```'


POLICIES = {"niah": niah, "fanout": fanout_policy, "count": count_policy}
