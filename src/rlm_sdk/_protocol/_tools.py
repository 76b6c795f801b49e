"""The REPL offered as a tool: the two functions, reading the model's calls, and going back.

With ``protocol="tools"`` the model gets ``repl(code)`` and ``final_answer(answer |
variable)`` through its provider's tool calling, instead of writing fenced blocks. A call
ends the model's turn, so it can never write past its code and imagine the output.

Every call the model makes gets a result, in order, even a broken one: arguments that are
not JSON, a function that does not exist, a call with no arguments each get an
``Error: ...`` result that says how to call it, and the run goes on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from rlm_sdk.providers import ChatMessage, ToolCall, ToolSpec

from ._reply import FinalAnswer

__all__ = [
    "FINAL_TOOL",
    "REPL_TOOL",
    "TOOLS",
    "ToolAction",
    "read_tool_calls",
    "refuses_tools",
    "to_fenced",
]

REPL_TOOL = ToolSpec(
    name="repl",
    description=(
        "Run Python code in your persistent REPL, where `context` and the sub-call functions "
        "live. Returns what the code printed (and the value of its last expression)."
    ),
    parameters={
        "type": "object",
        "properties": {"code": {"type": "string", "description": "The Python code to run."}},
        "required": ["code"],
    },
)
FINAL_TOOL = ToolSpec(
    name="final_answer",
    description=(
        "Give the final answer and end the task: `answer` is its text, or `variable` names "
        "a REPL variable whose value is the answer."
    ),
    parameters={
        "type": "object",
        "properties": {
            "answer": {"type": "string", "description": "The final answer's text."},
            "variable": {
                "type": "string",
                "description": "The name of a REPL variable holding the final answer.",
            },
        },
    },
)
TOOLS = (REPL_TOOL, FINAL_TOOL)
_USAGE = 'call repl with {"code": "<Python>"}, or final_answer with {"answer": "<text>"}'


@dataclass(frozen=True, slots=True)
class ToolAction:
    """What one call asks for: code to run, a final answer, or an error to send back."""

    call: ToolCall
    code: str | None = None
    final: FinalAnswer | None = None
    error: str | None = None


def read_tool_calls(calls: Sequence[ToolCall]) -> list[ToolAction]:
    """Each call of a reply, in order, read as an action (never raises)."""
    return [_read(call) for call in calls]


def _read(call: ToolCall) -> ToolAction:
    name = call.name.strip()
    if name not in (REPL_TOOL.name, FINAL_TOOL.name):
        shown = f"`{name}`" if name else "a function with no name"
        return ToolAction(
            call, error=f"there is no tool {shown}; the tools are repl and final_answer: {_USAGE}."
        )
    if not call.arguments.strip():
        return ToolAction(call, error=f"{name} was called with no arguments: {_USAGE}.")
    try:
        arguments = json.loads(call.arguments)
    except ValueError as err:
        return ToolAction(
            call, error=f"the arguments of {name} are not valid JSON ({err}): {_USAGE}."
        )
    if not isinstance(arguments, dict):
        return ToolAction(call, error=f"the arguments of {name} must be a JSON object: {_USAGE}.")
    if name == REPL_TOOL.name:
        code = arguments.get("code")
        if not isinstance(code, str):
            return ToolAction(call, error=f'repl needs a "code" argument holding text: {_USAGE}.')
        return ToolAction(call, code=code)
    variable = arguments.get("variable")
    answer = arguments.get("answer")
    if isinstance(variable, str) and variable.strip():
        return ToolAction(call, final=FinalAnswer("var", variable.strip()))
    if answer is not None:
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return ToolAction(call, final=FinalAnswer("text", text.strip()))
    return ToolAction(
        call,
        error='final_answer needs "answer" (the text) or "variable" (a REPL variable\'s name).',
    )


def refuses_tools(message: str) -> bool:
    """Whether a server's 400 says it does not take tools (its message names them)."""
    text = message.lower()
    return "tool" in text or "function call" in text


def to_fenced(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """A history written with tool calls, rewritten as fenced text for a run going on without
    tools: calls become ```` ```repl ```` blocks and ``FINAL`` lines, results one user message."""
    out: list[ChatMessage] = []
    results: list[str] = []

    def flush() -> None:
        if results:
            out.append(ChatMessage(role="user", content="\n\n".join(results)))
            results.clear()

    for m in messages:
        if m.role == "tool":
            results.append(m.content)
            continue
        flush()
        if m.tool_calls:
            parts = [m.content] if m.content else []
            for action in read_tool_calls(m.tool_calls):
                if action.code is not None:
                    parts.append(f"```repl\n{action.code}\n```")
                elif action.final is not None:
                    kind = "FINAL_VAR" if action.final.kind == "var" else "FINAL"
                    parts.append(f"{kind}({action.final.value})")
            out.append(ChatMessage(role="assistant", content="\n".join(parts) or "(no text)"))
        else:
            out.append(m)
    flush()
    return out
