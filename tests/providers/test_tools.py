"""Tool calling through both wire formats: tools sent, calls read back, a history of calls
and results mapped, and the capability read the same way through routers and wrappers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import respx

from rlm_sdk._constants import DEFAULT_ANTHROPIC_BASE_URL
from rlm_sdk.providers import (
    AnthropicProvider,
    ChatMessage,
    CompletionRequest,
    ModelRouter,
    OpenAICompatibleProvider,
    RateLimitedProvider,
    ToolCall,
    ToolSpec,
    supports_tools,
)
from rlm_sdk.testing import ScriptedProvider
from tests.providers.helpers import LOCAL_URL, mock_api

TOOL = ToolSpec(
    name="repl",
    description="Run Python.",
    parameters={"type": "object", "properties": {"code": {"type": "string"}}},
)
CALL = ToolCall(id="call_1", name="repl", arguments='{"code": "print(1)"}')
HISTORY = [
    ChatMessage(role="system", content="sys"),
    ChatMessage(role="user", content="q"),
    ChatMessage(role="assistant", content="Let me look.", tool_calls=(CALL,)),
    ChatMessage(role="tool", content="1", tool_call_id="call_1"),
]


@pytest.fixture
def anthropic_api() -> Iterator[respx.MockRouter]:
    """respx in place of the Anthropic API."""
    with mock_api(DEFAULT_ANTHROPIC_BASE_URL) as router:
        yield router


async def test_openai_sends_tools_and_a_history_of_calls(local_api: respx.MockRouter) -> None:
    """tools as functions, the assistant's tool_calls and the role=tool result on the wire."""
    route = local_api.post("/chat/completions").respond(
        json={"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}
    )
    async with OpenAICompatibleProvider(base_url=LOCAL_URL) as provider:
        await provider.acomplete(CompletionRequest(model="m", messages=HISTORY, tools=[TOOL]))
    body = json.loads(route.calls.last.request.content)
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "repl",
                "description": "Run Python.",
                "parameters": TOOL.parameters,
            },
        }
    ]
    assert body["messages"][2:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "repl", "arguments": '{"code": "print(1)"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "1"},
    ]


async def test_openai_reads_tool_calls(local_api: respx.MockRouter) -> None:
    """content null with tool_calls: the calls in order, arguments as written (an object too)."""
    message = {
        "content": None,
        "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "repl", "arguments": "{bad"}},
            {
                "id": "b",
                "type": "function",
                "function": {"name": "final_answer", "arguments": {"answer": "x"}},
            },
        ],
    }
    local_api.post("/chat/completions").respond(
        json={"choices": [{"message": message, "finish_reason": "tool_calls"}]}
    )
    async with OpenAICompatibleProvider(base_url=LOCAL_URL) as provider:
        reply = await provider.acomplete(CompletionRequest(model="m", messages=HISTORY[:2]))
    assert reply.text == ""
    assert reply.tool_calls == [
        ToolCall(id="a", name="repl", arguments="{bad"),
        ToolCall(id="b", name="final_answer", arguments='{"answer": "x"}'),
    ]


async def test_anthropic_sends_tools_and_a_history_of_calls(
    anthropic_api: respx.MockRouter,
) -> None:
    """input_schema tools, tool_use blocks, and tool results merged into one user turn."""
    route = anthropic_api.post("/messages").respond(
        json={"content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn"}
    )
    broken = ToolCall(id="call_2", name="repl", arguments="not json")
    history = [
        *HISTORY[:2],
        ChatMessage(role="assistant", content="", tool_calls=(CALL, broken)),
        ChatMessage(role="tool", content="1", tool_call_id="call_1"),
        ChatMessage(role="tool", content="Error: bad arguments", tool_call_id="call_2"),
        ChatMessage(role="user", content="[a note]"),
    ]
    async with AnthropicProvider(api_key="k") as provider:
        await provider.acomplete(CompletionRequest(model="m", messages=history, tools=[TOOL]))
    body = json.loads(route.calls.last.request.content)
    assert body["tools"] == [
        {"name": "repl", "description": "Run Python.", "input_schema": TOOL.parameters}
    ]
    assert body["messages"] == [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "repl", "input": {"code": "print(1)"}},
                {"type": "tool_use", "id": "call_2", "name": "repl", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "1"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "Error: bad arguments"},
                {"type": "text", "text": "[a note]"},
            ],
        },
    ]


async def test_anthropic_reads_tool_use_blocks(anthropic_api: respx.MockRouter) -> None:
    """tool_use blocks come back as calls, their input as JSON text; the text beside them kept."""
    anthropic_api.post("/messages").respond(
        json={
            "content": [
                {"type": "text", "text": "Running it."},
                {"type": "tool_use", "id": "toolu_1", "name": "repl", "input": {"code": "x = 1"}},
            ],
            "stop_reason": "tool_use",
        }
    )
    async with AnthropicProvider(api_key="k") as provider:
        reply = await provider.acomplete(CompletionRequest(model="m", messages=HISTORY[:2]))
    assert reply.text == "Running it."
    assert reply.tool_calls == [ToolCall(id="toolu_1", name="repl", arguments='{"code": "x = 1"}')]


def test_the_capability_is_read_through_routers_and_wrappers() -> None:
    """HTTP providers support tools; a router and a rate limiter ask the provider behind them."""
    assert supports_tools(OpenAICompatibleProvider(base_url=LOCAL_URL), "m")
    assert supports_tools(AnthropicProvider(api_key="k"), "m")
    assert supports_tools(ModelRouter(), "ollama:qwen3")
    assert supports_tools(RateLimitedProvider(AnthropicProvider(api_key="k")), "m")
    assert not supports_tools(ScriptedProvider(["x"], tools=False), "m")
    assert supports_tools(ScriptedProvider(["x"]), "m")

    class Plain:
        name = "plain"

    assert not supports_tools(Plain(), "m")
