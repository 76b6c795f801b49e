"""What the model is told: the context's description, the prompts, reminders and cell output.

Pure text in, text out; the turn loop decides when each one is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ._reply import FinalAnswer

__all__ = [
    "build_system_prompt",
    "build_user_prompt",
    "compaction_prompt",
    "compacted_history_note",
    "confirm_final_prompt",
    "describe_context",
    "empty_reply_problem",
    "final_call_prompt",
    "format_cell_feedback",
    "no_code_reminder",
    "output_final_note",
    "output_format_prompt",
    "output_rejected_feedback",
    "truncate_middle",
    "unknown_variable_feedback",
]


# --- describing the context -----------------------------------------------------------

_MAX_LISTED_PARTS = 12
_LINE_COUNT_MAX = 1_000_000


def describe_context(context: Any) -> str:
    """A short description of the context for the root prompt: its type and sizes, never its text.

    Cheap even for a 100 MB context: only lengths are read. Files on disk (a ``Corpus``)
    describe themselves: their count, size and a few names.
    """
    describe = getattr(context, "describe", None)
    if callable(describe):
        return str(describe())
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

{how}

Inside the REPL you can also call language models:
- `llm_query(prompt: str) -> str` asks a sub-model ({sub_model}); it can read about {sub_chars} \
characters per call, so give it chunks of the context together with an instruction.
- `llm_query_batched(prompts: list[str]) -> list[str]` asks several prompts concurrently and \
returns the answers in order; prefer it to a loop of `llm_query` calls.
- `rlm_query(prompt: str) -> str` and `rlm_query_batched(prompts)` hand a sub-task to a model \
that gets its own REPL with the prompt as its context{rlm_note}.
- `SHOW_VARS()` lists the variables you have defined.{tool_lines}
A failed sub-call returns a string that starts with "Error:".

{answer}\
"""

_HOW_FENCED = """\
Work by writing Python in fenced code blocks tagged `repl`:
```repl
print(len(context))
print(context[:500])
```
Every repl block in your reply runs, in order, in one persistent namespace; you then see what \
it printed (long output is cut, so print summaries rather than whole chunks). End your reply \
after your code: never write its output yourself, the real output comes in the next message. \
Look at the context's structure first, then search it, slice it, and keep intermediate results \
in variables."""

_ANSWER_FENCED = """\
When you know the answer, give it on a line of its own, outside any code block:
FINAL(your answer)
or, to answer with the value of a REPL variable you built:
FINAL_VAR(variable_name)
Do not give a final answer before you have looked at the context. Be concise between code blocks."""

_HOW_TOOLS = """\
Work by calling the `repl` tool with Python code, for example {{"code": "print(len(context))"}}. \
Every call runs in one persistent namespace, in the order you make them, and its result is \
what the code printed (long output is cut, so print summaries rather than whole chunks). Look \
at the context's structure first, then search it, slice it, and keep intermediate results in \
variables."""

_ANSWER_TOOLS = """\
When you know the answer, call `final_answer` with {{"answer": "your answer"}}, or with \
{{"variable": "name"}} to answer with the value of a REPL variable you built. Do not give a \
final answer before you have looked at the context. Be concise."""


def build_system_prompt(
    description: str,
    *,
    sub_model: str,
    can_recurse: bool,
    tools: Mapping[str, str] | None = None,
    sub_chars: int = 400_000,
    protocol: Literal["fenced", "tools"] = "fenced",
) -> str:
    """The root's system prompt for a run whose context is described by ``description``.

    ``tools`` maps each custom tool's call signature (``lookup(key)``) to a one-line
    description, so the model knows it can call them. ``protocol`` says how the model runs
    code and answers: fenced ``repl`` blocks and ``FINAL``, or the ``repl`` and
    ``final_answer`` tools.
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
        how=_HOW_TOOLS.format() if protocol == "tools" else _HOW_FENCED,
        answer=_ANSWER_TOOLS.format() if protocol == "tools" else _ANSWER_FENCED,
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


def no_code_reminder(
    problems: Sequence[str] = (), *, empty: bool = False, answered: bool = False
) -> str:
    """What the model is told after a reply with neither code to run nor a final answer
    (``answered``: its final answer was not taken, and ``problems`` say why)."""
    head = " ".join(problems)
    if answered:
        return (head + " " if head else "") + (
            "Continue working in the REPL, or answer again with FINAL(...) or FINAL_VAR(name) "
            "on a line of its own."
        )
    if empty:
        return (head + " " if head else "") + (
            "Write Python in a ```repl block to continue, or answer with FINAL(...) or "
            "FINAL_VAR(name) on a line of its own."
        )
    return (
        (head + " " if head else "")
        + "Your reply had no ```repl block to run and no final answer. Continue working in the "
        "REPL, or answer with FINAL(...) or FINAL_VAR(name) on a line of its own."
    )


def empty_reply_problem(in_a_row: int, limit: int) -> str:
    """What is said of an empty reply (the run ends at ``limit`` of them in a row)."""
    if in_a_row == 1:
        return "Your reply was empty."
    return f"Your reply was empty again ({in_a_row} in a row; the run ends at {limit})."


_CONFIRM_SHOWN = 300


def confirm_final_prompt(final: FinalAnswer) -> str:
    """The answer a reply gave together with code was not taken: ask the model to confirm it."""
    if final.kind == "var":
        given = f"FINAL_VAR({final.value})"
    else:
        given = f"FINAL({truncate_middle(final.value, _CONFIRM_SHOWN)})"
    return (
        f"Your reply also gave a final answer, {given}, but it was written before you saw "
        "the output above, so it was not taken. If the output confirms it, reply with the "
        "final answer again, on a line of its own and with no code; otherwise continue."
    )


def unknown_variable_feedback(name: str, variables: Mapping[str, str]) -> str:
    """FINAL_VAR named a variable that does not exist: say which ones do."""
    listing = ", ".join(f"{k} ({v})" for k, v in variables.items()) or "none"
    return (
        f"FINAL_VAR({name}) is not an answer: there is no REPL variable named {name!r}. "
        f"Variables defined now: {listing}. Create it, or answer with FINAL(...)."
    )


def final_call_prompt(protocol: Literal["fenced", "tools"] = "fenced") -> str:
    """The last message when the iteration limit is reached."""
    how = (
        "by calling final_answer"
        if protocol == "tools"
        else "as FINAL(your answer) on a line of its own"
    )
    return (
        "You have used every turn you had. Do not write more code. Give your best final answer "
        f"now, from what you have found, {how}."
    )


# --- typed answers (output_type) --------------------------------------------------------

_MAX_LISTED_PROBLEMS = 20


def output_format_prompt(name: str, schema: str, protocol: Literal["fenced", "tools"]) -> str:
    """What follows the query when the answer must match a JSON Schema (``schema``, as text).

    It goes with the query, not the system prompt, so runs with and without a type share
    one system prompt (and a provider's prompt cache).
    """
    how = (
        'call final_answer with {"variable": "name"}'
        if protocol == "tools"
        else "answer with FINAL_VAR(name)"
    )
    return (
        f"\n\nYour final answer must be a JSON value matching this JSON Schema ({name}):\n"
        f"```json\n{schema}\n```\n"
        f"Build it in the REPL as a Python value (a dict, a list, a number, ...) and {how}; "
        "JSON text as the answer works too. An answer that does not match is sent back to "
        "you with the reasons."
    )


def output_final_note(name: str) -> str:
    """Added to the last call's prompt when the answer must match a JSON Schema."""
    return f" It must be JSON matching the JSON Schema given with the query ({name})."


def output_rejected_feedback(
    problems: Sequence[str], tries_left: int, protocol: Literal["fenced", "tools"] = "fenced"
) -> str:
    """A final answer did not match the schema: every reason, and how many tries are left."""
    listed = "\n".join(f"- {p}" for p in problems[:_MAX_LISTED_PROBLEMS])
    if len(problems) > _MAX_LISTED_PROBLEMS:
        listed += f"\n- ... and {len(problems) - _MAX_LISTED_PROBLEMS} more"
    how = "call final_answer again" if protocol == "tools" else "answer again with FINAL_VAR(name)"
    tries = "1 more try" if tries_left == 1 else f"{tries_left} more tries"
    return (
        "Your final answer was not taken: it does not match the required JSON Schema.\n"
        f"{listed}\nFix the value in the REPL and {how} ({tries})."
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


# --- compaction ------------------------------------------------------------------------


def compaction_prompt(turns: int, variable: str) -> str:
    """The request for a summary of the conversation's older turns (the root model writes it)."""
    return (
        f"This conversation is about to outgrow your context window, so its first {turns} "
        f"turns will be replaced by your summary of them (their full text stays in the REPL as "
        f"`{variable}`). Write that summary now, with no code and no final answer: what you "
        "learnt about the context, the REPL variables you made and what each holds, what "
        "worked and what failed, and what is left to do. Be concise: at most 300 words."
    )


def compacted_history_note(turns: int, summary: str, variable: str) -> str:
    """What replaces the older turns in the history: where they went, and their summary."""
    return (
        f"[Turns 1-{turns} of this conversation were summarised to keep it within your "
        f"context window. Their full text is in the REPL variable `{variable}`, a list of "
        '{"role": ..., "content": ...} messages; print parts of it if you need them.]\n\n'
        f"Summary of those turns:\n{summary.strip()}"
    )
