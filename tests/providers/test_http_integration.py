"""The OpenAI-compatible provider over real HTTP to a FakeChatServer on 127.0.0.1 (no respx)."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from rlm_sdk._exceptions import (
    APIConnectionError,
    APIResponseError,
    APITimeoutError,
    RateLimitError,
)
from rlm_sdk.providers import OpenAICompatibleProvider
from rlm_sdk.testing import FakeChatServer
from tests.providers.helpers import chat, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[FakeChatServer]:
    """A fake OpenAI-compatible server on an ephemeral loopback port."""
    with FakeChatServer(reply=lambda body: f"you said {body['messages'][-1]['content']}") as server:
        yield server


async def test_normal_reply(server: FakeChatServer) -> None:
    """A reply comes back over real HTTP with usage, model and the server's request id."""
    async with OpenAICompatibleProvider(base_url=server.base_url, api_key="sk-local") as provider:
        reply = await provider.acomplete(chat("ping"))
    assert (reply.text, reply.model, reply.request_id) == ("you said ping", "m", "req-fake-1")
    assert reply.usage.prompt_tokens > 0
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-local"
    assert request.json == {"model": "m", "messages": [{"role": "user", "content": "ping"}]}


async def test_rate_limited_then_served(server: FakeChatServer, sleeps: list[float]) -> None:
    """A 429 with Retry-After is waited out as asked, on the same kept-alive connection."""
    server.respond_next(429, headers={"retry-after": "1"})
    async with OpenAICompatibleProvider(base_url=server.base_url) as provider:
        reply = await provider.acomplete(chat("again"))
    assert reply.text == "you said again"
    assert sleeps == [1.0]
    assert (len(server.requests), server.total_connections) == (2, 1)


async def test_rate_limited_to_the_end_leaks_nothing(
    server: FakeChatServer, sleeps: list[float]
) -> None:
    """Persistent 429s raise RateLimitError; every response is released (one connection, reused)."""
    server.respond_next(429, headers={"retry-after": "0.01"}, times=3)
    provider = OpenAICompatibleProvider(base_url=server.base_url)
    with pytest.raises(RateLimitError) as caught:
        await provider.acomplete(chat())
    assert caught.value.status_code == 429
    assert (len(server.requests), server.total_connections, sleeps) == (3, 1, [0.01, 0.01])
    await provider.aclose()
    await wait_until(lambda: server.open_connections == 0)


async def test_body_cut_off(server: FakeChatServer, sleeps: list[float]) -> None:
    """A body cut off mid-way is retried, then raised as APIConnectionError; no connection stays open."""
    server.truncate_next(times=3)
    async with OpenAICompatibleProvider(base_url=server.base_url) as provider:
        with pytest.raises(APIConnectionError) as caught:
            await provider.acomplete(chat())
        assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
        assert len(server.requests) == 3
        await wait_until(lambda: server.open_connections == 0)


async def test_body_cut_off_once_then_served(server: FakeChatServer) -> None:
    """One broken body is retried on a new connection and the reply arrives."""
    server.truncate_next()
    async with OpenAICompatibleProvider(base_url=server.base_url) as provider:
        reply = await provider.acomplete(chat("x"))
    assert reply.text == "you said x"
    assert (len(server.requests), server.total_connections) == (2, 2)


async def test_html_with_status_200(server: FakeChatServer) -> None:
    """An HTML page with status 200 raises APIResponseError at once, with an excerpt."""
    server.respond_next(200, body="<html>login</html>", headers={"content-type": "text/html"})
    async with OpenAICompatibleProvider(base_url=server.base_url) as provider:
        with pytest.raises(APIResponseError) as caught:
            await provider.acomplete(chat())
    assert (caught.value.status_code, caught.value.body_excerpt) == (200, "<html>login</html>")
    assert len(server.requests) == 1


async def test_timeout() -> None:
    """A server slower than the timeout raises APITimeoutError."""
    with FakeChatServer(latency=2.0) as slow:
        async with OpenAICompatibleProvider(
            base_url=slow.base_url, timeout=0.2, max_retries=0
        ) as provider:
            with pytest.raises(APITimeoutError):
                await provider.acomplete(chat())


async def test_concurrent_requests_overlap(server: FakeChatServer) -> None:
    """32 concurrent requests, 200 ms each on the server, finish together, not one after another."""
    server.latency = 0.2
    started = time.perf_counter()
    async with (
        OpenAICompatibleProvider(base_url=server.base_url) as provider,
        anyio.create_task_group() as tg,
    ):
        for _ in range(32):
            tg.start_soon(provider.acomplete, chat())
    assert time.perf_counter() - started < 1.5
    assert len(server.requests) == 32


async def test_max_in_flight_over_real_http() -> None:
    """max_in_flight bounds what the server sees at once."""
    active = peak = 0

    async def reply(body: dict[str, Any]) -> str:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await anyio.sleep(0.05)
        active -= 1
        return "ok"

    with FakeChatServer(reply=reply) as server:
        provider = OpenAICompatibleProvider(base_url=server.base_url, max_in_flight=4)
        async with provider, anyio.create_task_group() as tg:
            for _ in range(16):
                tg.start_soon(provider.acomplete, chat())
    assert peak == 4
    assert server.total_connections <= 4  # the bound on requests bounds connections too


async def test_a_batch_with_fan_outs_shares_one_bound_on_connections() -> None:
    """20 runs at once, each fanning 8 sub-calls out: never more than max_in_flight sockets."""
    from rlm_sdk import RecursiveLM

    fan_out = "```repl\nprint(sum(len(a) for a in llm_query_batched(['x'] * 8)))\n```"

    def reply(body: dict[str, Any]) -> str:
        messages = body["messages"]
        if messages[0]["role"] != "system":
            return "abc"
        return "FINAL(done)" if len(messages) > 2 else fan_out

    with FakeChatServer(reply=reply, latency=0.01) as server:
        provider = OpenAICompatibleProvider(base_url=server.base_url, max_in_flight=6)
        async with provider, RecursiveLM("m", provider=provider) as rlm:
            results = await rlm.abatch([(f"context {i}", "q") for i in range(20)], concurrency=20)
    assert [r.answer for r in results] == ["done"] * 20
    assert len(server.requests) == 20 * (2 + 8)
    assert server.total_connections <= 6


def test_sync_use_closing_each_time(server: FakeChatServer) -> None:
    """A provider built outside any loop serves several anyio.run calls when each closes it."""
    provider = OpenAICompatibleProvider(base_url=server.base_url)

    async def once() -> str:
        async with provider:
            return (await provider.acomplete(chat("s"))).text

    assert [anyio.run(once), anyio.run(once)] == ["you said s"] * 2


@pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)
def test_new_event_loop_gets_new_connections(server: FakeChatServer) -> None:
    """Used from a second event loop without closing, the provider opens connections there."""
    # The first loop's sockets cannot be closed properly any more (that loop is gone): hence the
    # ignored ResourceWarning, and the advice to close a provider before its loop ends.
    provider = OpenAICompatibleProvider(base_url=server.base_url)
    assert anyio.run(provider.acomplete, chat("1")).text == "you said 1"
    first = provider._own_transport

    async def second() -> tuple[str, bool]:
        async with provider:
            reply = await provider.acomplete(chat("2"))
            return reply.text, provider._own_transport is not first

    assert anyio.run(second) == ("you said 2", True)
    first = None
    gc.collect()
