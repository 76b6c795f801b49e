"""The RLM protocol as pure functions: prompts, parsing replies, describing contexts.

No I/O here, so every rule can be tested exhaustively and the orchestrator stays a loop.

Replies follow the conventions RLM prompts and models already use:

* code to run sits in fenced blocks whose info string is ``repl``;
* ``FINAL(text)`` at the start of a line, outside any fenced block, ends the run with
  ``text`` (read with balanced parentheses; quotes are kept);
* ``FINAL_VAR(name)`` at the start of a line ends the run with the value of the REPL
  variable ``name``; it wins over ``FINAL`` in the same reply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "FinalAnswer",
    "ParsedReply",
    "build_system_prompt",
    "build_user_prompt",
    "describe_context",
    "final_call_prompt",
    "format_cell_feedback",
    "no_code_reminder",
    "parse_reply",
    "truncate_middle",
    "unknown_variable_feedback",
]

_FENCE_OPEN = re.compile(r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*?)[ \t]*$")
_FINAL_START = re.compile(r"^[ \t]*(?P<kw>FINAL_VAR|FINAL)[ \t]*\(")
_QUOTES = "\"'"


@dataclass(frozen=True, slots=True)
class FinalAnswer:
    """A final answer found in a reply: literal text, or the name of a REPL variable."""

    kind: Literal["text", "var"]
    value: str


@dataclass(frozen=True, slots=True)
class ParsedReply:
    """What a reply asks for: code blocks to run (in order) and a final answer, if any.

    ``problems`` lists what the model should be told (an unclosed fence, an unclosed
    ``FINAL(``), so a malformed reply costs one turn rather than the run.
    """

    code_blocks: tuple[str, ...]
    final: FinalAnswer | None
    problems: tuple[str, ...] = ()


def parse_reply(text: str) -> ParsedReply:
    """Split a model reply into ``repl`` code blocks and a final answer.

    Line endings are normalised first (CRLF and CR become LF). A fence closes on a line of
    the same character, at least as long, and nothing else, so a block may contain shorter
    runs of backticks. A block that is never closed is not run: the model is told instead.
    ``FINAL(...)`` inside any fenced block is code, not an answer.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[str] = []
    problems: list[str] = []
    prose: list[str] = []  # lines outside fences, blanked inside them to keep positions
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if m is None:
            prose.append(lines[i])
            i += 1
            continue
        fence, info = m.group("fence"), m.group("info").strip().lower()
        close = re.compile(rf"^[ \t]{{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if j == len(lines):
            if info.split(" ")[0] == "repl":
                problems.append(
                    f"The ```repl block opened on line {i + 1} was never closed, so it did not run."
                )
            # An unclosed fence swallows the rest of the reply: nothing after it is an answer.
            prose.extend("" for _ in range(j - i))
            break
        if info.split(" ")[0] == "repl":
            blocks.append("\n".join(lines[i + 1 : j]))
        prose.extend("" for _ in range(j - i + 1))
        i = j + 1
    final, final_problem = _find_final("\n".join(prose))
    if final_problem:
        problems.append(final_problem)
    return ParsedReply(tuple(blocks), final, tuple(problems))


def _find_final(prose: str) -> tuple[FinalAnswer | None, str | None]:
    """The reply's final answer (``FINAL_VAR`` first), and a problem to report if malformed."""
    found: dict[str, str] = {}
    problem: str | None = None
    for start, line in _line_starts(prose):
        m = _FINAL_START.match(line)
        if m is None or m.group("kw") in found:
            continue
        arg = _balanced_argument(prose, start + m.end())
        if arg is None:
            problem = (
                f"{m.group('kw')}( was opened but never closed, so it was not taken as the answer."
            )
            continue
        found[m.group("kw")] = arg
    if "FINAL_VAR" in found:
        name = found["FINAL_VAR"].strip()
        if len(name) >= 2 and name[0] == name[-1] and name[0] in _QUOTES:
            name = name[1:-1].strip()
        return FinalAnswer("var", name), None
    if "FINAL" in found:
        return FinalAnswer("text", found["FINAL"].strip()), None
    return None, problem


def _line_starts(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pos = 0
    for line in text.split("\n"):
        out.append((pos, line))
        pos += len(line) + 1
    return out


def _balanced_argument(text: str, pos: int) -> str | None:
    """The text from ``pos`` up to the parenthesis that closes the one just before it.

    When the argument starts with a quote, parentheses inside that quoted string do not
    count (``FINAL("a (b")``); otherwise quotes are ordinary text, since prose is full of
    apostrophes. Returns ``None`` when the parenthesis never closes.
    """
    depth = 1
    i = pos
    n = len(text)
    while i < n and text[i] in " \t":
        i += 1
    if i < n and text[i] in _QUOTES:
        quote = text[i]
        end = text.find(quote, i + 1)
        if end != -1:
            i = end + 1
    while i < n:
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return text[pos:i]
        i += 1
    return None


# --- describing the context -----------------------------------------------------------

_MAX_LISTED_PARTS = 12
_LINE_COUNT_MAX = 1_000_000


def describe_context(context: Any) -> str:
    """A short description of the context for the root prompt: its type and sizes, never its text.

    Cheap even for a 100 MB context: only lengths are read.
    """
    if isinstance(context, str):
        if len(context) > _LINE_COUNT_MAX:  # counting lines would delay the first model call
            return f"a str of {len(context):,} characters"
        return f"a str of {len(context):,} characters ({context.count(chr(10)) + 1:,} lines)"
    if isinstance(context, bytes | bytearray):
        return f"bytes of length {len(context):,}"
    if isinstance(context, Mapping):
        keys = list(context)
        shown = ", ".join(repr(k) for k in keys[:_MAX_LISTED_PARTS])
        more = (
            f", ... ({len(keys) - _MAX_LISTED_PARTS:,} more)"
            if len(keys) > _MAX_LISTED_PARTS
            else ""
        )
        return f"a dict with {len(keys):,} keys: {shown}{more}"
    if isinstance(context, Sequence):
        lengths = [_length(part) for part in context]
        total = sum(lengths)
        if len(lengths) > _MAX_LISTED_PARTS:
            head = ", ".join(f"{n:,}" for n in lengths[: _MAX_LISTED_PARTS // 2])
            tail = ", ".join(f"{n:,}" for n in lengths[-_MAX_LISTED_PARTS // 2 :])
            parts = f"[{head}, ... {len(lengths) - _MAX_LISTED_PARTS:,} more ..., {tail}]"
        else:
            parts = "[" + ", ".join(f"{n:,}" for n in lengths) + "]"
        return (
            f"a list of {len(lengths):,} items, {total:,} characters in all; item lengths: {parts}"
        )
    return f"a {type(context).__name__}"


def _length(part: Any) -> int:
    if isinstance(part, str | bytes | bytearray | Sequence | Mapping):
        return len(part)
    return len(str(part))


# --- prompts ---------------------------------------------------------------------------

_SYSTEM_PROMPT = """\
You answer a query about a context that is far too large to read in one go. The context is \
not in this conversation. It is stored in a Python REPL as the variable `context` ({description}).

Work by writing Python in fenced code blocks tagged `repl`:
```repl
print(len(context))
print(context[:500])
```
Every repl block in your reply runs, in order, in one persistent namespace; you then see what \
it printed (long output is cut, so print summaries rather than whole chunks). Look at the \
context's structure first, then search it, slice it, and keep intermediate results in variables.

Inside the REPL you can also call language models:
- `llm_query(prompt: str) -> str` asks a sub-model ({sub_model}); it can read about {sub_chars} \
characters per call, so give it chunks of the context together with an instruction.
- `llm_query_batched(prompts: list[str]) -> list[str]` asks several prompts concurrently and \
returns the answers in order; prefer it to a loop of `llm_query` calls.
- `rlm_query(prompt: str) -> str` and `rlm_query_batched(prompts)` hand a sub-task to a model \
that gets its own REPL with the prompt as its context{rlm_note}.
- `SHOW_VARS()` lists the variables you have defined.{tool_lines}
A failed sub-call returns a string that starts with "Error:".

When you know the answer, give it on a line of its own, outside any code block:
FINAL(your answer)
or, to answer with the value of a REPL variable you built:
FINAL_VAR(variable_name)
Do not give a final answer before you have looked at the context. Be concise between code blocks.\
"""


def build_system_prompt(
    description: str,
    *,
    sub_model: str,
    can_recurse: bool,
    tools: Mapping[str, str] | None = None,
    sub_chars: int = 400_000,
) -> str:
    """The root's system prompt for a run whose context is described by ``description``.

    ``tools`` maps each custom tool's call signature (``lookup(key)``) to a one-line
    description, so the model knows it can call them.
    """
    tool_lines = "".join(f"\n- `{sig}`: {doc}" for sig, doc in (tools or {}).items())
    rlm_note = (
        "; use it for sub-tasks that need their own exploration"
        if can_recurse
        else " (at this depth it is a plain model call, like `llm_query`)"
    )
    return _SYSTEM_PROMPT.format(
        description=description,
        sub_model=sub_model,
        sub_chars=f"{sub_chars:,}",
        rlm_note=rlm_note,
        tool_lines=tool_lines,
    )


def build_user_prompt(query: str | None) -> str:
    """The first user message: the query (never the context)."""
    if query is None or not query.strip():
        return (
            "No separate query was given: the context itself states the task. "
            "Start by reading the beginning of `context` in the REPL."
        )
    return (
        f"The query: {query}\n\n"
        "You have not looked at the context yet. Start by exploring it in the REPL."
    )


def no_code_reminder(problems: Sequence[str] = ()) -> str:
    """What the model is told after a reply with neither code to run nor a final answer."""
    head = " ".join(problems)
    return (
        (head + " " if head else "")
        + "Your reply had no ```repl block to run and no final answer. Continue working in the "
        "REPL, or answer with FINAL(...) or FINAL_VAR(name) on a line of its own."
    )


def unknown_variable_feedback(name: str, variables: Mapping[str, str]) -> str:
    """FINAL_VAR named a variable that does not exist: say which ones do."""
    listing = ", ".join(f"{k} ({v})" for k, v in variables.items()) or "none"
    return (
        f"FINAL_VAR({name}) is not an answer: there is no REPL variable named {name!r}. "
        f"Variables defined now: {listing}. Create it, or answer with FINAL(...)."
    )


def final_call_prompt() -> str:
    """The last message when the iteration limit is reached."""
    return (
        "You have used every turn you had. Do not write more code. Give your best final answer "
        "now, from what you have found, as FINAL(your answer) on a line of its own."
    )


def truncate_middle(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, keeping its head and tail."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n... [{cut:,} characters cut] ...\n{text[len(text) - tail :]}"


def format_cell_feedback(
    cells: Sequence[Mapping[str, Any]], problems: Sequence[str], *, limit: int
) -> str:
    """The user message after a turn's cells ran: each cell's output, bounded in total.

    Each item of ``cells`` has ``stdout``, ``stderr``, ``error`` (text or None) and
    ``restarted``; the whole message stays within about ``limit`` characters.
    """
    per_cell = max(500, limit // max(1, len(cells)))
    parts: list[str] = []
    for n, cell in enumerate(cells, start=1):
        body: list[str] = []
        if cell.get("notice"):
            body.append("[notice] " + str(cell["notice"]))
        if cell.get("stdout"):
            body.append(str(cell["stdout"]).rstrip("\n"))
        if cell.get("stderr"):
            body.append("[stderr]\n" + str(cell["stderr"]).rstrip("\n"))
        if cell.get("error"):
            body.append("[error]\n" + str(cell["error"]).rstrip("\n"))
        if cell.get("restarted"):
            body.append("[the REPL was restarted: every variable was lost; `context` is back]")
        text = "\n".join(body) if body else "(no output)"
        label = f"Output of repl block {n}:" if len(cells) > 1 else "REPL output:"
        parts.append(f"{label}\n{truncate_middle(text, per_cell)}")
    parts.extend(problems)
    return "\n\n".join(parts)
