"""MkDocs hooks for the rlm_sdk docs (loaded through ``hooks:`` in mkdocs.yml; not a page).

* ``<!-- cli-help -->`` in a page becomes the ``--help`` text of ``rlm-sdk`` and of each of its
  commands, produced at build time from the real argument parser (``rlm_sdk.cli._parser``),
  so the reference can never drift from the code.
* ``<!-- events-table -->`` becomes one table per event type, built from the pydantic models
  in ``rlm_sdk._events`` (the fields and their types come from the code; the one-line
  meanings come from ``FIELD_DOCS`` below, which tests/test_docs.py keeps complete).
* ``<!-- error-tree -->`` becomes the error tree drawn in ``rlm_sdk._exceptions``'s docstring.
* ``<!-- context-windows -->`` becomes the table of known models' context windows
  (``rlm_sdk._window.KNOWN_CONTEXT_WINDOWS``).
* Docstrings use Sphinx roles (``:class:`Foo```); mkdocstrings renders them as literal text.
  The role prefix is dropped from the HTML, leaving the name as code.
"""

from __future__ import annotations

import argparse
import os
import re
import types
import typing
from typing import Any

CLI_MARKER = "<!-- cli-help -->"
EVENTS_MARKER = "<!-- events-table -->"
ERROR_TREE_MARKER = "<!-- error-tree -->"
CONTEXT_WINDOWS_MARKER = "<!-- context-windows -->"
HELP_WIDTH = 72

_ROLE = re.compile(
    r":(?:py:)?(?:class|meth|func|mod|data|attr|exc|obj|const):<code>~?([^<]*)</code>"
)


def _help(parser: argparse.ArgumentParser) -> str:
    """``parser``'s help at a fixed width, whatever the terminal of the build."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH + 2)  # argparse subtracts 2
    try:
        return parser.format_help().rstrip()
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def cli_reference() -> str:
    """Markdown for the command line: the top-level help, then one section per command."""
    from rlm_sdk.cli import _parser

    parser = _parser()
    parts = ["```text", "$ rlm-sdk --help", _help(parser), "```"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                parts += ["", f"## `rlm-sdk {name}`", "", "```text"]
                parts += [f"$ rlm-sdk {name} --help", _help(sub), "```"]
    return "\n".join(parts) + "\n"


FIELD_DOCS: dict[str, str] = {
    # Keyed by "EventName.field" where the meaning is specific, else by field name.
    "type": "The event's name; the discriminator when reading JSON.",
    "model": "The model, as the run names it (`openai:gpt-5-mini`).",
    "sub_model": "The model behind `llm_query` and child runs.",
    "query": "The query, or `None` when the context states the task.",
    "context_description": "What the model is told about the context (type and sizes).",
    "max_iterations": "Turns this run may take.",
    "max_depth": "Levels of runs the tree may have.",
    "iteration": "The turn's number in its run, from 1.",
    "feedback": "What the model is told next (cell output or a reminder); `None` when the turn answered.",
    "final_answer": "The answer, when this turn or cell gave one.",
    "messages": "How many messages the request carries.",
    "purpose": "`turn` (a root or child turn), `final` (the last call after `max_iterations`), `sub_call`, or `compaction` (a summary of older turns).",
    "text": "The reply's text.",
    "finish_reason": "Why the model stopped, as the provider said: `stop`, or `length` when `max_tokens` cut the reply short.",
    "response_model": "The model that answered, as the provider named it (may be more exact than `model`).",
    "latency_s": "Seconds the call took.",
    "prompt_tokens": "Prompt tokens, as the provider reported them.",
    "completion_tokens": "Completion tokens, as the provider reported them.",
    "cost": "US dollars, when the provider reported a cost.",
    "cell": "The block's index in the reply, from 0.",
    "code": "The code of the block.",
    "stdout": "What the block printed (bounded).",
    "stderr": "What the block wrote to standard error (bounded).",
    "error_type": "The exception's class name, if the block failed.",
    "CellFinished.error": "The error and the tail of its traceback, if the block failed.",
    "duration_s": "Seconds it took (a cell's time includes its sub-calls).",
    "restarted": "The worker was restarted: every variable was lost.",
    "timed_out": "The block ran past `cell_timeout`.",
    "notice": "Something the model was told that is not an error of this block (a restart before it).",
    "call_id": "Pairs a sub-call's start and finish (and its child run).",
    "ModelRequest.call_id": "The sub-call this request serves (`purpose` `sub_call`); `None` for the run's own requests.",
    "ModelResponse.call_id": "The sub-call this reply serves (`purpose` `sub_call`); `None` for the run's own requests.",
    "RetryScheduled.call_id": "The sub-call whose request is retried; `None` for the run's own request.",
    "kind": "`llm` for `llm_query*`, `rlm` for `rlm_query*`.",
    "prompt": "The prompt the code sent.",
    "response": "The answer returned to the code (`Error: ...` if it failed).",
    "SubCallFinished.error": "Why the sub-call failed, if it did.",
    "SubCallFinished.cached": "Answered by the cache (`RecursiveLM(cache=...)`) with no model call: no `ModelRequest` / `ModelResponse`, and zero tokens and cost.",
    "child_run_id": "The run id of the child run.",
    "answer": "The final answer.",
    "source": "How the answer was given: a stop reason (`final_answer`, `final_var`, ...).",
    "limit": "The budget that ran out (`model_calls`, `tokens`, `cost`, `wall_time`).",
    "detail": "A sentence saying how far the run got.",
    "provider": "The provider's name (`openai`, `anthropic`).",
    "attempt": "The attempt that failed, from 1.",
    "delay_s": "Seconds until the retry.",
    "reason": "Why: a status (`status 429`), `timeout` or `connection_error`; for a restart, the cause.",
    "result": "The run's `RLMResult` (partial, if a budget ran out).",
    "reasoning": "Reasoning kept out of the reply: the provider's reasoning field and `<think>` blocks, joined; `None` if there was none.",
    "fence": "Where the code that runs came from: `repl`, `python`, `py`, `bare`, `unfenced` or `tool_markup`; `None` when nothing runs.",
    "code_blocks": "How many code blocks the reply has to run.",
    "ReplyParsed.final": "The kind of final answer the reply gives (`text` or `var`), if any.",
    "notes": "The dialect rules the reply needed (a glued fence, a `python` block, reasoning set aside, ...).",
    "problems": "What the model is told was wrong with its reply (an unclosed fence, an empty reply, ...).",
    "ConfirmationAsked.answer": "The answer written together with code, not taken until the model confirms it.",
    "OutputRejected.answer": "The rejected answer's text (its middle cut when long).",
    "OutputRejected.errors": "Every way the answer breaks `output_type`, as `$.field: message`.",
    "OutputRejected.attempt": "Answers rejected so far in this run, this one included.",
    "retries_left": "Answers the model may still give; `0`: the run raises `OutputValidationError`.",
    "HistoryCompacted.turns": "Turns summarised so far in this run (turns 1 to this one).",
    "messages_before": "Messages in the history before the compaction.",
    "messages_after": "Messages in the history after it.",
    "tokens_before": "The history's estimated tokens before the compaction.",
    "tokens_after": "Its estimated tokens after.",
    "window": "The model's context window, in tokens (or the size the provider's refusal implied).",
    "variable": "The REPL list holding the summarised turns in full; `None` when messages were only cut.",
    "tool_calls": "The tools the model called, in order (`protocol=\"tools\"`): id, name and arguments as written.",
    "from_protocol": "The protocol the run used until then (`tools`).",
    "to_protocol": "The protocol it goes on with (`fenced`).",
    "ProtocolSwitched.reason": "The server's refusal, as the provider reported it.",
    "summary": "The model's summary of the older turns, which replaced them; `None` when messages were only cut.",
}


def event_classes() -> list[type[Any]]:
    """Every event type, in the order of the ``Event`` union."""
    from rlm_sdk._events import Event

    union = typing.get_args(Event)[0]
    return list(typing.get_args(union))


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f'`"{v}"`' for v in typing.get_args(annotation))
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "`None`"
    return f"`{getattr(annotation, '__name__', str(annotation))}`"


def field_doc(event: str, field: str) -> str | None:
    """The one-line meaning of ``event.field``, if ``FIELD_DOCS`` has one."""
    return FIELD_DOCS.get(f"{event}.{field}") or FIELD_DOCS.get(field)


def events_reference() -> str:
    """Markdown: one section per event type with its own fields (not the common ones)."""
    from rlm_sdk._events import EventBase

    parts: list[str] = []
    for cls in event_classes():
        name = cls.__name__
        tag = typing.get_args(cls.model_fields["type"].annotation)[0]
        parts += [f"### `{name}`", "", f'`type: "{tag}"`', ""]
        parts += ["| Field | Type | Meaning |", "|---|---|---|"]
        for field, info in cls.model_fields.items():
            if field in EventBase.model_fields or field == "type":
                continue
            doc = field_doc(name, field) or ""
            parts.append(f"| `{field}` | {_type_name(info.annotation)} | {doc} |")
        parts.append("")
    return "\n".join(parts)


def error_tree() -> str:
    """The tree drawn in the docstring of ``rlm_sdk._exceptions``, as a text block."""
    from rlm_sdk import _exceptions

    doc = _exceptions.__doc__ or ""
    lines = doc.split("::", 1)[1].split("\n\n", 2)[1].splitlines()
    tree = "\n".join(line[4:] for line in lines)
    return f"```text\n{tree}\n```\n"


def context_windows_table() -> str:
    """Markdown: the known models' context windows, from ``rlm_sdk._window``."""
    from rlm_sdk._window import KNOWN_CONTEXT_WINDOWS

    rows = [f"| `{name}` | {tokens:,} |" for name, tokens in KNOWN_CONTEXT_WINDOWS.items()]
    return "\n".join(["| Model name starts with | Tokens |", "|---|---|", *rows]) + "\n"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Expand the markers: CLI help, the events tables, the error tree, the known windows."""
    if CONTEXT_WINDOWS_MARKER in markdown:
        markdown = markdown.replace(CONTEXT_WINDOWS_MARKER, context_windows_table())
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if EVENTS_MARKER in markdown:
        markdown = markdown.replace(EVENTS_MARKER, events_reference())
    if ERROR_TREE_MARKER in markdown:
        markdown = markdown.replace(ERROR_TREE_MARKER, error_tree())
    return markdown


def _short(match: re.Match[str]) -> str:
    name = match.group(1)
    full = match.group(0)
    if "~" in full.split("<code>", 1)[1][:1]:
        name = name.rsplit(".", 1)[-1]
    return f"<code>{name}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    """Drop Sphinx role prefixes that docstrings carry (``:class:`` and friends)."""
    return _ROLE.sub(_short, html)
