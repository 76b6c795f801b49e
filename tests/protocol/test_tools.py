"""The REPL as a tool: the two functions offered, every call read into an action (broken ones
into errors, never exceptions), and a history of calls rewritten as fenced text."""

from __future__ import annotations

import pytest

from rlm_sdk import ChatMessage, ToolCall
from rlm_sdk._protocol import (
    FINAL_TOOL,
    REPL_TOOL,
    FinalAnswer,
    read_tool_calls,
    refuses_tools,
    to_fenced,
)


def call(name: str, arguments: str) -> ToolCall:
    return ToolCall(id="c", name=name, arguments=arguments)


def test_the_tools_offered() -> None:
    """repl takes a required code string; final_answer takes answer or variable."""
    assert REPL_TOOL.parameters["required"] == ["code"]
    assert set(FINAL_TOOL.parameters["properties"]) == {"answer", "variable"}


@pytest.mark.parametrize(
    ("made", "code", "final"),
    [
        (call("repl", '{"code": "print(1)"}'), "print(1)", None),
        (call("final_answer", '{"answer": " 42 "}'), None, FinalAnswer("text", "42")),
        (call("final_answer", '{"variable": "total"}'), None, FinalAnswer("var", "total")),
        (call("final_answer", '{"answer": "x", "variable": "v"}'), None, FinalAnswer("var", "v")),
        (call("final_answer", '{"answer": 7}'), None, FinalAnswer("text", "7")),
    ],
)
def test_calls_read_as_actions(made: ToolCall, code: str | None, final: FinalAnswer | None) -> None:
    """Code to run, a text answer, a variable's answer (the variable wins over text)."""
    (action,) = read_tool_calls([made])
    assert (action.code, action.final, action.error) == (code, final, None)


@pytest.mark.parametrize(
    ("made", "error"),
    [
        (call("repl", '{"code": "x'), "are not valid JSON"),
        (call("repl", ""), "called with no arguments"),
        (call("repl", "   "), "called with no arguments"),
        (call("repl", "[1]"), "must be a JSON object"),
        (call("repl", '{"code": 3}'), 'needs a "code" argument'),
        (call("search", "{}"), "there is no tool `search`"),
        (call("", "{}"), "a function with no name"),
        (call("final_answer", "{}"), 'needs "answer"'),
    ],
)
def test_broken_calls_become_errors_that_say_how_to_call(made: ToolCall, error: str) -> None:
    """Invalid JSON, no arguments, a wrong shape, an unknown function: an error, not a raise."""
    (action,) = read_tool_calls([made])
    assert action.code is None and action.final is None
    assert action.error is not None and error in action.error


def test_a_refusal_of_tools_is_recognised() -> None:
    """A 400 naming tools or tool_choice refuses tools; another 400 does not."""
    assert refuses_tools("openai answered 400: tools are not supported | param=tools")
    assert refuses_tools(
        "openai answered 400: 'tool_choice' is only allowed when 'tools' are specified"
    )
    assert not refuses_tools("openai answered 400: unknown model 'x'")


def test_a_history_of_calls_becomes_fenced_text() -> None:
    """Calls become repl blocks and FINAL lines; consecutive results one user message."""
    calls = (
        ToolCall(id="a", name="repl", arguments='{"code": "x = 1"}'),
        ToolCall(id="b", name="final_answer", arguments='{"variable": "x"}'),
    )
    history = [
        ChatMessage(role="user", content="q"),
        ChatMessage(role="assistant", content="Let me see.", tool_calls=calls),
        ChatMessage(role="tool", content="REPL output:\n(no output)", tool_call_id="a"),
        ChatMessage(role="tool", content="Not taken.", tool_call_id="b"),
    ]
    assert to_fenced(history) == [
        ChatMessage(role="user", content="q"),
        ChatMessage(role="assistant", content="Let me see.\n```repl\nx = 1\n```\nFINAL_VAR(x)"),
        ChatMessage(role="user", content="REPL output:\n(no output)\n\nNot taken."),
    ]
