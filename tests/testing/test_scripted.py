"""ScriptedProvider, the offline test/demo double: replies in order, functions, failures, records."""

from __future__ import annotations

import time

import anyio
import pytest

import rlm_sdk.testing
from rlm_sdk._exceptions import APIResponseError, RateLimitError
from rlm_sdk.providers import (
    ChatMessage,
    CompletionRequest,
    CompletionResponse,
    Provider,
    TokenUsage,
)
from rlm_sdk.testing import ScriptedProvider


def chat(text: str = "Hi", model: str = "m") -> CompletionRequest:
    return CompletionRequest(model=model, messages=[ChatMessage(role="user", content=text)])


async def test_replies_in_order_and_requests_recorded() -> None:
    """Scripted texts come back in order, each under the request's model, and every request is kept."""
    provider = ScriptedProvider(["first", "second"])
    first = await provider.acomplete(chat("a", model="gpt-x"))
    second = await provider.acomplete(chat("b"))
    assert (first.text, first.model, second.text, second.model) == ("first", "gpt-x", "second", "m")
    assert [r.messages[0].content for r in provider.requests] == ["a", "b"]
    assert (first.request_id, first.finish_reason) == ("scripted-1", "stop")


async def test_usage_is_estimated_and_cost_optional() -> None:
    """Usage is about four characters a token and never zero; cost only when asked for."""
    plain = await ScriptedProvider(["x" * 40]).acomplete(chat("y" * 80))
    assert plain.usage == TokenUsage(prompt_tokens=20, completion_tokens=10, cost=None)
    priced = await ScriptedProvider([""], cost_per_call=0.25).acomplete(chat(""))
    assert priced.usage == TokenUsage(prompt_tokens=1, completion_tokens=1, cost=0.25)


async def test_ran_out_of_replies() -> None:
    """A call past the end of the script raises APIResponseError saying so."""
    provider = ScriptedProvider(["only"])
    await provider.acomplete(chat())
    with pytest.raises(APIResponseError, match="ScriptedProvider ran out of replies after 1 calls"):
        await provider.acomplete(chat())
    assert len(provider.requests) == 2


async def test_script_items_of_every_kind() -> None:
    """Items may be texts, responses, exceptions, or sync or async functions of the request."""
    canned = CompletionResponse(text="canned", model="fixed")

    async def shout(request: CompletionRequest) -> str:
        return request.messages[-1].content.upper()

    provider = ScriptedProvider(
        [
            "text",
            canned,
            lambda request: f"len={len(request.messages)}",
            shout,
            RateLimitError("slow down", provider="scripted", status_code=429),
        ]
    )
    texts = [(await provider.acomplete(chat("hey"))).text for _ in range(4)]
    assert texts == ["text", "canned", "len=1", "HEY"]
    with pytest.raises(RateLimitError):
        await provider.acomplete(chat())


async def test_single_function_for_every_call() -> None:
    """One function (sync or async) answers every call, without running out."""
    echo = ScriptedProvider(lambda request: request.messages[-1].content)
    assert [(await echo.acomplete(chat(str(i)))).text for i in range(5)] == [
        "0",
        "1",
        "2",
        "3",
        "4",
    ]

    async def full(request: CompletionRequest) -> CompletionResponse:
        return CompletionResponse(text="full", model=request.model, finish_reason="length")

    reply = await ScriptedProvider(full).acomplete(chat())
    assert (reply.text, reply.finish_reason) == ("full", "length")


async def test_latency_does_not_block() -> None:
    """latency sleeps without blocking, so concurrent calls overlap."""
    provider = ScriptedProvider(lambda request: "ok", latency=0.1)
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(provider.acomplete, chat())
    assert time.perf_counter() - started < 0.5
    assert len(provider.requests) == 10


async def test_concurrent_calls_take_script_items_in_call_order() -> None:
    """Concurrent calls each get their own item, in the order the calls were made."""
    provider = ScriptedProvider([f"r{i}" for i in range(5)], latency=0.01)
    results: dict[int, str] = {}

    async def call(i: int) -> None:
        results[i] = (await provider.acomplete(chat())).text

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(call, i)
    assert results == {i: f"r{i}" for i in range(5)}


def test_a_bare_string_is_refused() -> None:
    """A str is not taken for a sequence of one-character replies."""
    with pytest.raises(TypeError, match=r"\[text\]"):
        ScriptedProvider("hello")  # type: ignore[arg-type]


async def test_is_a_provider() -> None:
    """It satisfies the Provider protocol, closes idempotently and works as a context manager."""
    provider = ScriptedProvider(["a"])
    assert isinstance(provider, Provider)
    assert provider.name == "scripted"
    async with provider:
        pass
    await provider.aclose()
    assert repr(provider) == "ScriptedProvider(1 replies, calls=0)"


def test_public_names_sorted_and_complete() -> None:
    """rlm_sdk.testing exports a sorted __all__ of names that exist."""
    names = rlm_sdk.testing.__all__
    assert names == sorted(names)
    assert all(hasattr(rlm_sdk.testing, name) for name in names)


async def test_tool_reply_scripts_calls_with_raw_or_mapped_arguments() -> None:
    """tool_reply makes a reply whose calls carry JSON arguments, or a raw string as given."""
    from rlm_sdk.testing import tool_reply

    reply = tool_reply(("repl", {"code": "x = 1"}), ("repl", "{not json"), text="Running.")
    provider = ScriptedProvider([reply])
    assert provider.supports_tools is True
    got = await provider.acomplete(CompletionRequest(model="m", messages=[]))
    assert got.text == "Running." and got.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in got.tool_calls] == [
        ("call_1", "repl", '{"code": "x = 1"}'),
        ("call_2", "repl", "{not json"),
    ]
    assert ScriptedProvider(["x"], tools=False).supports_tools is False
