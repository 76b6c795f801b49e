"""Reading a model's reply: the code to run, the final answer, and what to keep of it.

Real models do not all write the dialect the system prompt asks for, so the rules below
absorb the dialects seen in real runs (``docs/concepts/repl.md`` lists them, one rule each):

* reasoning in ``<think>`` / ``<thinking>`` blocks is set aside before anything is read;
* code sits in fenced blocks tagged ``repl``; a closing fence glued to the end of the last
  code line closes the block;
* with no ``repl`` block and no final answer, ``python`` / ``py`` blocks run, else bare
  fenced blocks, else a reply whose first line is only ``repl`` (or ``python``) and that
  has no fence at all;
* tool-call markup written as text (``<function_calls><invoke name="repl">`` or
  ``<tool_call>{"name": "repl", ...}</tool_call>``) is read as a call of the REPL when the
  reply has no ``repl`` block; a call of anything else is answered with a reminder;
* ``FINAL(text)`` / ``FINAL_VAR(name)`` at the start of a line outside fences give the final
  answer; a whole answer that is one quoted string literal loses its quotes; ``FINAL(name)``
  of a bare identifier may name a REPL variable (the run decides, it knows the variables);
* what goes back into the history is the reply up to its last block that ran: text written
  after it (an imitation of the output, an early ``FINAL``) was written before the code ran.

Everything here is linear in the reply's length, so a 10 MB reply costs milliseconds.
"""

from __future__ import annotations

import ast
import json
import keyword
import re
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "FenceKind",
    "FinalAnswer",
    "MAX_HISTORY_REPLY_CHARS",
    "ParsedReply",
    "parse_reply",
    "split_reasoning",
]

FenceKind = Literal["repl", "python", "py", "bare", "unfenced", "tool_markup"]
"""Where the code that runs came from: a fence's tag, a bare fence, a reply whose first line
is only ``repl``, or tool-call markup written as text."""

MAX_HISTORY_REPLY_CHARS = 100_000
"""A reply is kept in the history up to this many characters (head and tail)."""
MAX_BLOCKS = 256
"""Fenced blocks (and markup blocks) read from one reply; the rest of the reply is not."""
MAX_FINAL_CANDIDATES = 1_000
"""Lines starting with ``FINAL(`` or ``FINAL_VAR(`` read from one reply."""

_FENCE = r"^[ \t]{0,3}(?P<fence>`{3,}+|~{3,}+)(?P<info>[^\n`]*+)$"
_FENCE_OPEN = re.compile(_FENCE, re.MULTILINE)
_OPENER = re.compile(_FENCE + r"|<(?:[\w-]+:)?(?P<markup>function_calls|tool_call)>", re.MULTILINE)
_FINAL_START = re.compile(r"^[ \t]*(?P<kw>FINAL_VAR|FINAL)[ \t]*\(", re.MULTILINE)
_PARENS = re.compile(r"[()]")
_MAX_QUOTED_SCANS = 2
_CLOSE = {
    # a run of three or more at the end of a line, matched from its first character only
    # (the literal comes first so that the search jumps to candidates)
    "`": re.compile(r"(```(?<!````)`*+)[ \t]*+$", re.MULTILINE),
    "~": re.compile(r"(~~~(?<!~~~~)~*+)[ \t]*+$", re.MULTILINE),
}
_QUOTES = "\"'"
_PYTHON_TAGS: dict[str, FenceKind] = {
    "python": "python",
    "python3": "python",
    "py": "py",
    "py3": "py",
}
_UNFENCED_TAGS = frozenset({"repl", "python", "py"})
_THINK_OPEN = re.compile(r"^[ \t]*<(think|thinking)>", re.MULTILINE | re.IGNORECASE)
_THINK_CLOSE_ONLY = re.compile(r"^[ \t]*</(think|thinking)>[ \t]*$", re.MULTILINE | re.IGNORECASE)
_INVOKE = re.compile(
    r"<(?:[\w-]+:)?invoke\s+name=\"(?P<name>[^\"]*)\"\s*>(?P<body>.*?)</(?:[\w-]+:)?invoke>",
    re.DOTALL,
)
_PARAMETER = re.compile(
    r"<(?:[\w-]+:)?parameter\s+name=\"(?P<name>[^\"]*)\"\s*>(?P<value>.*?)</(?:[\w-]+:)?parameter>",
    re.DOTALL,
)
_REPL_TOOL_NAMES = frozenset(
    {"repl", "python", "run_python", "execute_python", "execute_code", "run_code", "ipython"}
)
_FINAL_TOOL_NAMES = frozenset({"final_answer", "final", "submit"})
_SET_ASIDE = "[{n:,} characters written after the code, before its output was seen, were set aside]"
_FENCE_SET_ASIDE = "[a fenced block that did not run was set aside]"


@dataclass(frozen=True, slots=True)
class FinalAnswer:
    """A final answer found in a reply: literal text, or the name of a REPL variable.

    ``name`` is set for ``FINAL(name)`` where ``name`` is a bare identifier: if the REPL has
    a variable of that name, the variable's value is the answer.
    """

    kind: Literal["text", "var"]
    value: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedReply:
    """What a reply asks for: code blocks to run (in order) and a final answer, if any.

    Attributes:
        code_blocks: the code to run, in order.
        final: the final answer the reply gives, if any.
        problems: what the model should be told (an unclosed fence, an unclosed ``FINAL(``,
            a tool called by text that does not exist), so a malformed reply costs one turn
            rather than the run.
        fence: where ``code_blocks`` came from (``None`` when nothing runs).
        reasoning: the text of ``<think>`` blocks, set aside.
        notes: the dialect rules this reply needed (for events and the trajectory).
        history: the reply as it goes back into the history.
        empty: the reply has nothing but whitespace (reasoning aside).
    """

    code_blocks: tuple[str, ...]
    final: FinalAnswer | None
    problems: tuple[str, ...] = ()
    fence: FenceKind | None = None
    reasoning: str | None = None
    notes: tuple[str, ...] = ()
    history: str = ""
    empty: bool = False


@dataclass(slots=True)
class _Block:
    """A fenced block: its tag, its code, and the offsets of its opening line's start and of
    the end of its closing line (the end of the text when it never closed)."""

    tag: str
    code: str
    start: int
    end: int
    closed: bool
    glued: bool = False


@dataclass(slots=True)
class _Markup:
    """Tool-call markup written as text: the calls it holds and the offsets it spans."""

    calls: list[tuple[str, dict[str, str]]]
    start: int
    end: int


@dataclass(slots=True)
class _Scan:
    text: str
    blocks: list[_Block] = field(default_factory=list)
    markup: list[_Markup] = field(default_factory=list)
    prose: str = ""
    truncated: bool = False


def split_reasoning(text: str) -> tuple[str, str | None]:
    """``text`` without its reasoning blocks, and the reasoning (``None`` if there was none).

    A ``<think>`` (or ``<thinking>``) block starts at the start of a line and ends at its
    closing tag; one never closed runs to the end of the reply. A closing tag on a line of
    its own with no opening one before it, and before any fence (templates that put
    ``<think>`` in the prompt), makes everything before it reasoning.
    """
    if "<" not in text:
        return text, None
    opening = _THINK_OPEN.search(text)
    if opening is None:
        close = _THINK_CLOSE_ONLY.search(text)
        fence = text.find("```")
        if close is None or (fence != -1 and fence < close.start()):
            return text, None
        return text[close.end() :].lstrip("\n"), text[: close.start()].strip() or None
    kept: list[str] = []
    thoughts: list[str] = []
    pos = 0
    m: re.Match[str] | None = opening
    while m is not None:
        kept.append(text[pos : m.start()])
        closing = re.compile(rf"</{m.group(1)}>", re.IGNORECASE).search(text, m.end())
        if closing is None:
            thoughts.append(text[m.end() :].strip())
            pos = len(text)
            break
        thoughts.append(text[m.end() : closing.start()].strip())
        pos = closing.end()
        m = _THINK_OPEN.search(text, pos)
    kept.append(text[pos:])
    return "".join(kept).lstrip("\n"), "\n\n".join(t for t in thoughts if t) or None


def parse_reply(text: str) -> ParsedReply:
    """Split a model reply into the code to run and a final answer, by the module's rules.

    Line endings are normalised first (CRLF and CR become LF). A fence closes on a line of
    the same character, at least as long, and nothing else (so a block may contain shorter
    runs of backticks), or glued to the end of a code line. A block never closed does not
    run: the model is told instead. ``FINAL(...)`` inside any fenced block is code, not an
    answer.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
    text, reasoning = split_reasoning(text)
    notes: list[str] = []
    if reasoning is not None:
        notes.append("reasoning set aside")
    if not text.strip():
        return ParsedReply((), None, (), None, reasoning, tuple(notes), "", empty=True)
    scan = _scan(text)
    problems: list[str] = []
    final, final_problem = _find_final(scan.prose) if "FINAL" in scan.prose else (None, None)
    repl = [b for b in scan.blocks if b.tag == "repl" and b.closed]
    markup_code, markup_final, markup_problems = _read_markup(scan.markup)
    if final is None and markup_final is not None:
        final = markup_final
    run: list[_Block] = []
    fence: FenceKind | None = None
    code: list[str] = []
    if repl:
        run, fence = repl, "repl"
    elif markup_code:
        fence = "tool_markup"
        code = markup_code
        notes.append("tool-call markup written as text was read as a call of the REPL")
    elif final is None:
        python = [b for b in scan.blocks if b.tag in _PYTHON_TAGS and b.closed]
        bare = [b for b in scan.blocks if b.tag == "" and b.closed]
        if python:
            run, fence = python, _PYTHON_TAGS[python[0].tag]
        elif bare:
            run, fence = bare, "bare"
        elif not scan.blocks and not scan.markup:
            unfenced = _unfenced_code(text)
            if unfenced is not None:
                code, fence = [unfenced], "unfenced"
                notes.append("a reply whose first line is its language, with no fence, ran")
        if run:
            notes.append(f"no ```repl block: the ```{run[0].tag} blocks ran")
    if run:
        code = [b.code for b in run]
        if any(b.glued for b in run):
            notes.append("a closing fence glued to the last line of code closed its block")
    if not markup_code:
        problems.extend(markup_problems)
    if scan.truncated:
        problems.append(
            f"Your reply has more than {MAX_BLOCKS:,} fenced blocks; only the first "
            f"{MAX_BLOCKS:,} were read."
        )
    for b in scan.blocks:
        if not b.closed and (b.tag == "repl" or (not code and final is None and _runnable(b))):
            line = text.count("\n", 0, b.start) + 1
            problems.append(
                f"The ```{b.tag} block opened on line {line} was never closed, so it did not run."
            )
    if final_problem:
        problems.append(final_problem)
    if final is not None and final.kind == "text" and final.name is not None:
        notes.append("FINAL of a bare name: a REPL variable of that name is the answer")
    history = _history(scan, run, markup_code, text)
    return ParsedReply(tuple(code), final, tuple(problems), fence, reasoning, tuple(notes), history)


def _runnable(block: _Block) -> bool:
    return block.tag in _PYTHON_TAGS or block.tag == ""


# --- fences and markup ------------------------------------------------------------------------


def _scan(text: str) -> _Scan:
    """Find the fenced blocks and the tool-call markup; the prose is the rest, blanked in place.

    One pass: a fence opened outside markup is a block (markup inside it is code), and
    markup opened outside fences is read as calls (fences inside it are its text). Searches
    jump from one candidate to the next, so the cost is linear in the reply's length.
    """
    scan = _Scan(text)
    has_markup = "<function_calls>" in text or "<tool_call>" in text or ":function_calls>" in text
    if "```" not in text and "~~~" not in text and not has_markup:
        scan.prose = text
        return scan
    opener = _OPENER if has_markup else _FENCE_OPEN
    pieces: list[str] = []
    pos = 0
    while (m := opener.search(text, pos)) is not None:
        if len(scan.blocks) + len(scan.markup) >= MAX_BLOCKS:
            scan.truncated = True
            pieces.append(text[pos : m.start()])
            pos = len(text)
            break
        pieces.append(text[pos : m.start()])
        if m.group("fence") is None:
            tag = m.group("markup")
            name = m.group(0)[1:-1]
            close = text.find(f"</{name}>", m.end())
            end = len(text) if close == -1 else close + len(name) + 3
            body = text[m.end() : end]
            calls = _invokes(body) if tag == "function_calls" else _hermes_call(body, name)
            scan.markup.append(_Markup(calls, m.start(), end))
        else:
            tag = m.group("info").strip().lower().split(" ")[0]
            block = _close(text, m.start(), m.end() + 1, m.group("fence"), tag)
            scan.blocks.append(block)
            end = block.end
        pieces.append("\n" * text.count("\n", m.start(), end))
        pos = end
    pieces.append(text[pos:])
    scan.prose = "".join(pieces)
    return scan


def _close(text: str, start: int, body: int, fence: str, tag: str) -> _Block:
    """The block whose opening fence starts at ``start`` and whose code starts at ``body``.

    It closes on a line of the fence's character, at least as long, indented by at most
    three spaces; or, for backticks, on a run at least as long glued to the end of a code
    line, which is then the block's last line.
    """
    char, width = fence[0], len(fence)
    n = len(text)
    if body > n:
        return _Block(tag, "", start, n, False)
    for m in _CLOSE[char].finditer(text, body):
        run = m.group(1)
        if len(run) < width:
            continue
        line_start = text.rfind("\n", body - 1, m.start()) + 1
        head = text[line_start : m.start()]
        code_end = max(body, line_start - 1)
        if not head.strip(" \t"):
            if len(head) <= 3:
                return _Block(tag, text[body:code_end], start, m.end(), True)
        elif char == "`":
            return _Block(tag, text[body : m.start()], start, m.end(), True, glued=True)
    return _Block(tag, text[body:], start, n, False)


def _unfenced_code(text: str) -> str | None:
    """A reply whose first non-blank line is only ``repl`` (or ``python``): the rest is code."""
    first, _, rest = text.lstrip().partition("\n")
    if first.strip().lower() not in _UNFENCED_TAGS:
        return None
    code = rest.strip("\n")
    return code if code.strip() else None


# --- tool-call markup written as text ----------------------------------------------------------


def _invokes(body: str) -> list[tuple[str, dict[str, str]]]:
    calls: list[tuple[str, dict[str, str]]] = []
    for invoke in _INVOKE.finditer(body):
        params = {p.group("name"): p.group("value") for p in _PARAMETER.finditer(invoke["body"])}
        calls.append((invoke.group("name").strip(), params))
    if not calls and "invoke" in body:
        calls.append(("", {}))  # markup we could not read: the model hears about it
    return calls


def _hermes_call(body: str, tag: str) -> list[tuple[str, dict[str, str]]]:
    inner = body[: -len(tag) - 3] if body.endswith(f"</{tag}>") else body
    try:
        data = json.loads(inner.strip())
    except ValueError:
        return [("", {})]
    if not isinstance(data, dict):
        return [("", {})]
    args = data.get("arguments", data.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            args = {"code": args}
    if not isinstance(args, dict):
        args = {}
    return [(str(data.get("name", "")), {str(k): _as_text(v) for k, v in args.items()})]


def _as_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _read_markup(
    markup: list[_Markup],
) -> tuple[list[str], FinalAnswer | None, list[str]]:
    """The code the markup's REPL calls carry, its final answer, and what to tell the model."""
    code: list[str] = []
    final: FinalAnswer | None = None
    problems: list[str] = []
    for block in markup:
        for name, params in block.calls:
            key = name.lower()
            if key in _REPL_TOOL_NAMES:
                value = params.get("code")
                if value is None and len(params) == 1:
                    value = next(iter(params.values()))
                if value is None or not value.strip():
                    problems.append(
                        f"Your reply wrote a call of `{name}` as text with no `code` argument, "
                        "so nothing ran."
                    )
                    continue
                code.append(value.strip("\n"))
            elif key in _FINAL_TOOL_NAMES and final is None:
                variable = params.get("variable") or params.get("name")
                answer = params.get("answer") or params.get("text")
                if variable:
                    final = FinalAnswer("var", variable.strip())
                elif answer is not None:
                    final = FinalAnswer("text", answer.strip())
            else:
                shown = f"`{name}`" if name else "a tool"
                problems.append(
                    f"Your reply wrote a call of {shown} as text. Tools are not called that way "
                    "here: write Python in a ```repl block (your REPL has `context`, "
                    "`llm_query`, `rlm_query` and the other functions the system prompt lists), "
                    "or answer with FINAL(...)."
                )
    return code, final, problems


# --- the final answer --------------------------------------------------------------------------


def _find_final(prose: str) -> tuple[FinalAnswer | None, str | None]:
    """The reply's final answer (``FINAL_VAR`` first), and a problem to report if malformed."""
    found: dict[str, str] = {}
    problem: str | None = None
    matches: dict[int, int] | None = None
    quoted_failures = 0
    for seen, m in enumerate(_FINAL_START.finditer(prose)):
        if seen >= MAX_FINAL_CANDIDATES:
            problem = problem or (
                f"Only the first {MAX_FINAL_CANDIDATES:,} lines starting with FINAL were read."
            )
            break
        kw = m.group("kw")
        if kw in found:
            continue
        start = m.end()
        i = start
        while i < len(prose) and prose[i] in " \t":
            i += 1
        if i < len(prose) and prose[i] in _QUOTES:
            # each scan may read to the end: a few unclosed ones are all we try
            arg = (
                None if quoted_failures >= _MAX_QUOTED_SCANS else _quoted_argument(prose, start, i)
            )
            quoted_failures += arg is None
        else:
            if matches is None:
                matches = _matching_parens(prose, m.start())
            close = matches.get(start - 1)
            arg = None if close is None else prose[start:close]
        if arg is None:
            problem = f"{kw}( was opened but never closed, so it was not taken as the answer."
            continue
        found[kw] = arg
        if "FINAL_VAR" in found:
            break
    if "FINAL_VAR" in found:
        name = found["FINAL_VAR"].strip()
        if len(name) >= 2 and name[0] == name[-1] and name[0] in _QUOTES:
            name = name[1:-1].strip()
        return FinalAnswer("var", name), None
    if "FINAL" in found:
        return _text_answer(found["FINAL"].strip()), None
    return None, problem


def _matching_parens(text: str, start: int) -> dict[int, int]:
    """Each ``(`` from ``start`` on to its closing ``)``, in one pass (unclosed ones absent)."""
    matches: dict[int, int] = {}
    stack: list[int] = []
    for m in _PARENS.finditer(text, start):
        pos = m.start()
        if text[pos] == "(":
            stack.append(pos)
        elif stack:
            matches[stack.pop()] = pos
    return matches


def _quoted_argument(text: str, start: int, quote_at: int) -> str | None:
    """The argument of ``FINAL(`` when it starts with a quote: parentheses inside the quoted
    string do not count; after it, the first unbalanced ``)`` closes the call."""
    quote = text[quote_at]
    if text.startswith(quote * 3, quote_at):
        end = text.find(quote * 3, quote_at + 3)
        i = quote_at + 3 if end == -1 else end + 3
    else:
        end = text.find(quote, quote_at + 1)
        i = quote_at + 1 if end == -1 else end + 1
    depth = 1
    for m in _PARENS.finditer(text, i):
        depth += 1 if text[m.start()] == "(" else -1
        if depth == 0:
            return text[start : m.start()]
    return None


def _text_answer(arg: str) -> FinalAnswer:
    """``FINAL(arg)``: a whole quoted string literal loses its quotes; a bare identifier may be
    a variable's name."""
    if len(arg) >= 2 and arg[0] in _QUOTES and arg[-1] == arg[0]:
        try:
            value = ast.literal_eval(arg)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
        if isinstance(value, str):
            return FinalAnswer("text", value)
    if arg.isidentifier() and not keyword.iskeyword(arg):
        return FinalAnswer("text", arg, name=arg)
    return FinalAnswer("text", arg)


# --- what the history keeps -------------------------------------------------------------------


def _history(scan: _Scan, run: list[_Block], markup_code: list[str], text: str) -> str:
    """The reply as it goes back into the history: up to the last part that ran.

    Text after it, and fenced blocks among the parts that ran but did not run themselves,
    were written before the model saw any output (often an imitation of it): each is
    replaced by a one-line note.
    """
    if run:
        last = run[-1].end
        ran = {b.start for b in run}
        skipped = [b for b in scan.blocks if run[0].start < b.start < last and b.start not in ran]
    elif markup_code and scan.markup:
        last = max(m.end for m in scan.markup)
        skipped = []
    else:
        return _bounded(text)
    kept: list[str] = []
    pos = 0
    for block in skipped:
        kept.append(text[pos : block.start])
        kept.append(_FENCE_SET_ASIDE)
        pos = block.end
    kept.append(text[pos:last])
    tail = text[last:].strip()
    if tail:
        kept.append("\n" + _SET_ASIDE.format(n=len(tail)))
    return _bounded("".join(kept))


def _bounded(text: str) -> str:
    if len(text) <= MAX_HISTORY_REPLY_CHARS:
        return text
    head = MAX_HISTORY_REPLY_CHARS * 2 // 3
    tail = MAX_HISTORY_REPLY_CHARS - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n... [{cut:,} characters of this reply cut] ...\n{text[-tail:]}"
