"""The Anthropic provider: configuration, the Messages wire mapping both ways, its errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx
from dirty_equals import IsStr
from inline_snapshot import snapshot

from rlm_sdk._constants import DEFAULT_ANTHROPIC_BASE_URL
from rlm_sdk._exceptions import (
    APIResponseError,
    AuthenticationError,
    ConfigurationError,
    InternalServerError,
)
from rlm_sdk.providers import AnthropicProvider, ChatMessage, CompletionRequest, Provider
from tests.providers.helpers import chat, mock_api, sent

KEY = "sk-ant-test-secret"
PROXY_URL = "http://127.0.0.1:8001/v1"

OK_BODY = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "s"},
        {"type": "text", "text": "Hello, "},
        {"type": "text", "text": "world"},
    ],
    "stop_reason": "end_turn",
    "usage": {
        "input_tokens": 10,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 100,
        "output_tokens": 4,
    },
}


@pytest.fixture
def anthropic_api() -> Iterator[respx.MockRouter]:
    """respx in place of the Anthropic API."""
    with mock_api(DEFAULT_ANTHROPIC_BASE_URL) as router:
        yield router


async def test_request_sent(anthropic_api: respx.MockRouter) -> None:
    """The whole request: URL, x-api-key, anthropic-version, joined system, stop_sequences."""
    route = anthropic_api.post("/messages").respond(json=OK_BODY)
    request = CompletionRequest(
        model="claude-sonnet-4-5",
        messages=[
            ChatMessage(role="system", content="You are terse."),
            ChatMessage(role="system", content="Answer in French."),
            ChatMessage(role="user", content="Hi"),
            ChatMessage(role="assistant", content="Salut"),
            ChatMessage(role="user", content="Again"),
        ],
        temperature=0.5,
        stop=["\n\nHuman:"],
        extra_body={"top_k": 5},
    )
    async with AnthropicProvider(api_key=KEY) as provider:
        await provider.acomplete(request)
    assert sent(route.calls.last.request) == snapshot(
        {
            "method": "POST",
            "url": "https://api.anthropic.com/v1/messages",
            "headers": {
                "host": "api.anthropic.com",
                "accept-encoding": "gzip, deflate",
                "connection": "keep-alive",
                "accept": "application/json",
                "user-agent": IsStr(),
                "anthropic-version": "2023-06-01",
                "x-api-key": "sk-ant-test-secret",
                "content-length": "271",
                "content-type": "application/json",
            },
            "json": {
                "model": "claude-sonnet-4-5",
                "max_tokens": 4096,
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Salut"},
                    {"role": "user", "content": "Again"},
                ],
                "system": "You are terse.\n\nAnswer in French.",
                "temperature": 0.5,
                "stop_sequences": ["\n\nHuman:"],
                "top_k": 5,
            },
        }
    )


async def test_request_minimal(anthropic_api: respx.MockRouter) -> None:
    """Without system messages or knobs, only model, max_tokens (the request's) and messages go out."""
    route = anthropic_api.post("/messages").respond(json=OK_BODY)
    async with AnthropicProvider(api_key=KEY) as provider:
        await provider.acomplete(chat(max_tokens=64))
    assert sent(route.calls.last.request)["json"] == {
        "model": "m",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hi"}],
    }


async def test_response_mapping(anthropic_api: respx.MockRouter) -> None:
    """Text blocks joined, stop_reason, usage with cache tokens, model and request-id header."""
    anthropic_api.post("/messages").respond(json=OK_BODY, headers={"request-id": "req_011"})
    async with AnthropicProvider(api_key=KEY) as provider:
        reply = await provider.acomplete(chat())
    assert reply.model_dump(exclude={"latency_s"}) == snapshot(
        {
            "text": "Hello, world",
            "reasoning": "hmm",
            "tool_calls": [],
            "finish_reason": "end_turn",
            "usage": {"prompt_tokens": 115, "completion_tokens": 4, "cost": None},
            "model": "claude-sonnet-4-5-20250929",
            "request_id": "req_011",
        }
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            {"content": [], "stop_reason": "max_tokens"},
            "no text block in the reply (stop_reason='max_tokens')",
            id="empty-cut-off",
        ),
        pytest.param(
            {"content": [{"type": "image", "source": {}}], "stop_reason": "end_turn"},
            "no text block",
            id="no-text-nor-tool-use",
        ),
        pytest.param(
            {"type": "error", "error": {"type": "overloaded_error"}},
            "no content blocks",
            id="error-object",
        ),
        pytest.param({"content": [{"type": "text"}]}, "missing field 'text'", id="text-missing"),
        pytest.param({"content": ["text"]}, "AttributeError", id="block-not-object"),
    ],
)
async def test_unusable_response(
    anthropic_api: respx.MockRouter, body: object, message: str
) -> None:
    """A 200 without usable text raises APIResponseError carrying the request id and an excerpt."""
    anthropic_api.post("/messages").respond(json=body, headers={"request-id": "req_bad"})
    async with AnthropicProvider(api_key=KEY) as provider:
        with pytest.raises(APIResponseError) as caught:
            await provider.acomplete(chat())
    assert message in caught.value.message
    assert (caught.value.provider, caught.value.request_id) == ("anthropic", "req_bad")
    assert caught.value.body_excerpt


async def test_authentication_error_names_the_variable(anthropic_api: respx.MockRouter) -> None:
    """A 401 raises AuthenticationError naming ANTHROPIC_API_KEY, with the server's message."""
    error = {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    anthropic_api.post("/messages").respond(401, json=error, headers={"request-id": "req_auth"})
    async with AnthropicProvider(api_key=KEY) as provider:
        with pytest.raises(AuthenticationError) as caught:
            await provider.acomplete(chat())
    assert caught.value.message == (
        "anthropic answered 401: invalid x-api-key (check the key: pass api_key= or set ANTHROPIC_API_KEY)"
    )
    assert caught.value.request_id == "req_auth"
    assert KEY not in str(caught.value)


async def test_overloaded_is_retried(
    anthropic_api: respx.MockRouter, retry_delays: list[float]
) -> None:
    """529 (overloaded) is retried like a 5xx, then raised as InternalServerError."""
    route = anthropic_api.post("/messages").respond(529, json={"type": "error"})
    async with AnthropicProvider(api_key=KEY, max_retries=1) as provider:
        with pytest.raises(InternalServerError):
            await provider.acomplete(chat())
    assert (route.call_count, len(retry_delays)) == (2, 1)


def test_missing_key() -> None:
    """Without a key, Anthropic itself is refused with a message naming ANTHROPIC_API_KEY."""
    with pytest.raises(ConfigurationError, match="Pass api_key= or set ANTHROPIC_API_KEY"):
        AnthropicProvider()


def test_proxy_without_key() -> None:
    """At another URL (a proxy, a fake) no key is needed and none is sent."""
    provider = AnthropicProvider(base_url=PROXY_URL)
    assert provider._headers(None) == {"anthropic-version": "2023-06-01"}


@pytest.mark.parametrize(
    ("env", "dotenv", "expected_url", "expected_key"),
    [
        pytest.param(True, True, "http://127.0.0.1:2/v1", "k-env", id="env-over-dotenv"),
        pytest.param(False, True, "http://127.0.0.1:3/v1", "k-file", id="dotenv"),
    ],
)
async def test_env_precedence(
    monkeypatch: pytest.MonkeyPatch, env: bool, dotenv: bool, expected_url: str, expected_key: str
) -> None:
    """ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY come from the environment, else from .env."""
    if env:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:2/v1")
        monkeypatch.setenv("ANTHROPIC_API_KEY", "k-env")
    if dotenv:
        Path(".env").write_text(
            "ANTHROPIC_BASE_URL=http://127.0.0.1:3/v1\nANTHROPIC_API_KEY=k-file\n"
        )
    with mock_api(expected_url) as router:
        route = router.post("/messages").respond(json=OK_BODY)
        async with AnthropicProvider() as provider:
            await provider.acomplete(chat())
    assert route.calls.last.request.headers["x-api-key"] == expected_key


def test_arguments_win_and_key_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arguments beat the environment; repr shows neither key."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:2/v1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k-env")
    provider = AnthropicProvider(base_url=PROXY_URL, api_key=KEY)
    assert provider.base_url == PROXY_URL
    assert provider._api_key is not None
    assert provider._api_key.get_secret_value() == KEY
    assert KEY not in repr(provider)
    assert "k-env" not in repr(vars(provider))
    assert isinstance(provider, Provider)
    assert provider.name == "anthropic"


async def test_given_client_not_closed(anthropic_api: respx.MockRouter) -> None:
    """A client passed in is used and left open."""
    anthropic_api.post("/messages").respond(json=OK_BODY)
    client = httpx.AsyncClient()
    async with AnthropicProvider(api_key=KEY, http_client=client) as provider:
        await provider.acomplete(chat())
    assert not client.is_closed
    await client.aclose()


async def test_an_empty_reply_that_ended_its_turn_is_empty_text(
    anthropic_api: respx.MockRouter,
) -> None:
    """No content block at all with stop_reason end_turn is an empty reply, not a server fault."""
    anthropic_api.post("/messages").respond(json={"content": [], "stop_reason": "end_turn"})
    async with AnthropicProvider(api_key=KEY) as provider:
        reply = await provider.acomplete(chat())
    assert (reply.text, reply.reasoning) == ("", None)


async def test_redacted_thinking_is_recorded_as_such(anthropic_api: respx.MockRouter) -> None:
    """A redacted thinking block says it was there, and its data never becomes text."""
    body = {
        "content": [
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "ok"},
        ],
        "stop_reason": "end_turn",
    }
    anthropic_api.post("/messages").respond(json=body)
    async with AnthropicProvider(api_key=KEY) as provider:
        reply = await provider.acomplete(chat())
    assert (reply.text, reply.reasoning) == ("ok", "[redacted thinking]")
