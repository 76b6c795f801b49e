"""OpenAICompatibleProvider against a real llama.cpp server: replies, sampling, load, errors."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from rlm_sdk import (
    BadRequestError,
    ChatMessage,
    CompletionRequest,
    CompletionResponse,
    OpenAICompatibleProvider,
)
from tests.realmodel.llama import MODEL, N_CTX, LlamaServer

pytestmark = [pytest.mark.realmodel, pytest.mark.integration, pytest.mark.timeout(180)]


def ask(prompt: str, **options: Any) -> CompletionRequest:
    return CompletionRequest(
        model=MODEL, messages=[ChatMessage(role="user", content=prompt)], **options
    )


async def test_a_completion_matches_what_the_server_sent(llama: LlamaServer) -> None:
    """The reply's text, finish reason, usage and id are exactly those of the server's JSON."""
    bodies: list[dict[str, Any]] = []

    async def keep_body(response: httpx.Response) -> None:
        await response.aread()
        bodies.append(response.json())

    async with (
        httpx.AsyncClient(event_hooks={"response": [keep_body]}) as http,
        OpenAICompatibleProvider(base_url=llama.base_url, http_client=http) as provider,
    ):
        reply = await provider.acomplete(ask("Name three colours.", max_tokens=24))
    [body] = bodies
    choice = body["choices"][0]
    assert reply.text == choice["message"]["content"] and reply.text.strip()
    assert reply.finish_reason == choice["finish_reason"]
    assert reply.usage.prompt_tokens == body["usage"]["prompt_tokens"] > 0
    assert reply.usage.completion_tokens == body["usage"]["completion_tokens"] > 0
    assert reply.usage.cost is None  # a local server reports no cost
    assert reply.request_id is not None and reply.latency_s > 0


async def test_max_tokens_cuts_the_reply_and_says_length(
    real_provider: OpenAICompatibleProvider,
) -> None:
    """``max_tokens`` caps the completion, and the cut surfaces as ``finish_reason="length"``."""
    reply = await real_provider.acomplete(
        ask("Write a long story about a dragon and a lighthouse.", max_tokens=5, temperature=0)
    )
    assert reply.usage.completion_tokens == 5
    assert reply.finish_reason == "length"


async def test_temperature_reaches_the_sampler(real_provider: OpenAICompatibleProvider) -> None:
    """Temperature 0 repeats itself exactly; 1.5 does not (the server's default is 0.8)."""
    prompt = "Tell me about cats."

    async def texts(temperature: float, n: int) -> list[str]:
        return [
            (
                await real_provider.acomplete(ask(prompt, max_tokens=12, temperature=temperature))
            ).text
            for _ in range(n)
        ]

    greedy = await texts(0.0, 2)
    hot = await texts(1.5, 3)
    assert greedy[0] == greedy[1]
    assert len(set(hot)) > 1, hot


async def test_four_requests_in_flight_are_all_answered(llama: LlamaServer) -> None:
    """Four requests sent at once are all on the wire together; the server queues and answers each."""
    in_flight = peak = 0

    async def sent(request: httpx.Request) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)

    async def answered(response: httpx.Response) -> None:
        nonlocal in_flight
        in_flight -= 1

    replies: dict[int, CompletionResponse] = {}
    async with (
        httpx.AsyncClient(event_hooks={"request": [sent], "response": [answered]}) as http,
        OpenAICompatibleProvider(base_url=llama.base_url, http_client=http) as provider,
    ):

        async def one(i: int) -> None:
            replies[i] = await provider.acomplete(ask(f"Count to {i + 3}.", max_tokens=8))

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(one, i)
    assert peak == 4
    assert sorted(replies) == [0, 1, 2, 3]
    assert all(r.usage.completion_tokens > 0 for r in replies.values())
    assert len({r.request_id for r in replies.values()}) == 4


async def test_a_prompt_longer_than_the_context_is_a_bad_request(
    real_provider: OpenAICompatibleProvider,
) -> None:
    """A prompt over the server's context window is a BadRequestError that says so, not a retry."""
    with pytest.raises(BadRequestError) as caught:
        await real_provider.acomplete(ask("word " * (N_CTX + 500), max_tokens=8))
    error = caught.value
    assert error.status_code == 400
    assert "context" in str(error).lower()


async def test_an_unknown_route_is_a_bad_request_naming_the_url(llama: LlamaServer) -> None:
    """A base URL the server does not serve is a 404 BadRequestError naming the URL posted to."""
    async with OpenAICompatibleProvider(base_url=llama.base_url + "/nope") as provider:
        with pytest.raises(BadRequestError) as caught:
            await provider.acomplete(ask("Hi", max_tokens=4))
    assert caught.value.status_code == 404
    assert "Not Found" in caught.value.message
    assert f"{llama.base_url}/nope/chat/completions" in caught.value.message
