"""The OpenAI-compatible provider: configuration, the wire mapping both ways, client lifecycle."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
import respx
from dirty_equals import IsStr
from inline_snapshot import snapshot

from rlm_sdk._constants import DEFAULT_OPENAI_BASE_URL
from rlm_sdk._exceptions import APIResponseError, ConfigurationError
from rlm_sdk.providers import ChatMessage, CompletionRequest, OpenAICompatibleProvider, Provider
from tests.providers.helpers import LOCAL_URL, chat, mock_api, sent

KEY = "sk-test-secret-123"

OK_BODY = {
    "id": "chatcmpl-1",
    "model": "gpt-x-2025",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}


async def test_request_sent_to_openai() -> None:
    """The whole request to OpenAI: URL, bearer key, headers, and every mapped field."""
    request = CompletionRequest(
        model="gpt-5-mini",
        messages=[
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Hi"),
        ],
        temperature=0.2,
        max_tokens=50,
        stop=["END"],
        extra_body={"reasoning_effort": "low", "temperature": 0.0},
    )
    with mock_api(DEFAULT_OPENAI_BASE_URL) as router:
        route = router.post("/chat/completions").respond(json=OK_BODY)
        async with OpenAICompatibleProvider(
            api_key=KEY, default_headers={"x-team": "a"}
        ) as provider:
            await provider.acomplete(request)
    assert sent(route.calls.last.request) == snapshot(
        {
            "method": "POST",
            "url": "https://api.openai.com/v1/chat/completions",
            "headers": {
                "host": "api.openai.com",
                "accept-encoding": "gzip, deflate",
                "connection": "keep-alive",
                "accept": "application/json",
                "user-agent": IsStr(),
                "authorization": "Bearer sk-test-secret-123",
                "x-team": "a",
                "content-length": "191",
                "content-type": "application/json",
            },
            "json": {
                "model": "gpt-5-mini",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                ],
                "temperature": 0.0,
                "max_completion_tokens": 50,
                "stop": ["END"],
                "reasoning_effort": "low",
            },
        }
    )


async def test_request_sent_to_local_server(local_api: respx.MockRouter) -> None:
    """A local server gets no Authorization header and ``max_tokens`` by that name."""
    route = local_api.post("/chat/completions").respond(json=OK_BODY)
    async with OpenAICompatibleProvider(base_url=LOCAL_URL + "/") as provider:
        await provider.acomplete(chat(max_tokens=7))
    assert sent(route.calls.last.request) == snapshot(
        {
            "method": "POST",
            "url": "http://127.0.0.1:8000/v1/chat/completions",
            "headers": {
                "host": "127.0.0.1:8000",
                "accept-encoding": "gzip, deflate",
                "connection": "keep-alive",
                "accept": "application/json",
                "user-agent": IsStr(),
                "content-length": "72",
                "content-type": "application/json",
            },
            "json": {
                "model": "m",
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 7,
            },
        }
    )


async def test_response_mapping(local_api: respx.MockRouter) -> None:
    """Text, finish reason, usage with cost (OpenRouter), model and the x-request-id header."""
    body = {**OK_BODY, "usage": {"prompt_tokens": 12, "completion_tokens": 3, "cost": 0.0021}}
    local_api.post("/chat/completions").respond(json=body, headers={"x-request-id": "req-9"})
    async with OpenAICompatibleProvider(base_url=LOCAL_URL) as provider:
        reply = await provider.acomplete(chat())
    assert reply.model_dump(exclude={"latency_s"}) == snapshot(
        {
            "text": "Hello",
            "reasoning": None,
            "tool_calls": [],
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "cost": 0.0021},
            "model": "gpt-x-2025",
            "request_id": "req-9",
        }
    )
    assert reply.latency_s > 0


async def test_response_without_usage_or_request_id_header(local_api: respx.MockRouter) -> None:
    """Missing usage counts as zero; the body id stands in for the request id; model falls back."""
    body = {"id": "chatcmpl-7", "choices": [{"message": {"content": ""}}]}
    local_api.post("/chat/completions").respond(json=body)
    async with OpenAICompatibleProvider(base_url=LOCAL_URL) as provider:
        reply = await provider.acomplete(chat())
    assert (reply.text, reply.usage.total_tokens, reply.request_id, reply.model) == (
        "",
        0,
        "chatcmpl-7",
        "m",
    )


@pytest.mark.parametrize(
    ("message", "text", "reasoning"),
    [
        pytest.param({"content": "a", "reasoning_content": "r"}, "a", "r", id="reasoning_content"),
        pytest.param({"content": "a", "reasoning": "r"}, "a", "r", id="reasoning"),
        pytest.param({"content": None, "reasoning_content": "r"}, "", "r", id="only-reasoning"),
        pytest.param({"content": None}, "", None, id="null-content-that-stopped"),
        pytest.param({"content": "a", "reasoning": {"effort": "low"}}, "a", None, id="not-text"),
    ],
)
async def test_reasoning_fields(
    local_api: respx.MockRouter, message: dict[str, object], text: str, reasoning: str | None
) -> None:
    """A reasoning model's separate reasoning is kept apart from the text; null content that
    finished normally is an empty reply."""
    body = {"choices": [{"message": message, "finish_reason": "stop"}]}
    local_api.post("/chat/completions").respond(json=body)
    async with OpenAICompatibleProvider(base_url=LOCAL_URL) as provider:
        reply = await provider.acomplete(chat())
    assert (reply.text, reply.reasoning) == (text, reasoning)


@pytest.mark.parametrize(
    ("content", "body", "message"),
    [
        pytest.param(b'{"choices": [{"mess', None, "the body is not JSON", id="truncated-json"),
        pytest.param(
            b"<html><body>Bad gateway</body></html>", None, "the body is not JSON", id="html"
        ),
        pytest.param(None, [1, 2], "the body is a JSON list, not an object", id="not-an-object"),
        pytest.param(None, {"choices": []}, "no choices", id="empty-choices"),
        pytest.param(None, {"error": "model not loaded"}, "no choices", id="no-choices"),
        pytest.param(None, {"choices": [{}]}, "missing field 'message'", id="no-message"),
        pytest.param(None, {"choices": ["x"]}, "TypeError", id="choice-not-object"),
        pytest.param(
            None, {"choices": [{"message": []}]}, "AttributeError", id="message-not-object"
        ),
        pytest.param(
            None,
            {
                "choices": [
                    {"message": {"content": None, "tool_calls": []}, "finish_reason": "tool_calls"}
                ]
            },
            "no text in the reply (content=None, finish_reason='tool_calls')",
            id="null-content",
        ),
        pytest.param(
            None,
            {"choices": [{"message": {"content": None, "refusal": "I can't help with that."}}]},
            'refusal="I can\'t help with that."',
            id="refusal",
        ),
        pytest.param(
            None,
            {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "many"}},
            "ValidationError",
            id="bad-usage",
        ),
    ],
)
async def test_unusable_response(
    local_api: respx.MockRouter, content: bytes | None, body: object, message: str
) -> None:
    """A 200 whose body is no usable reply raises APIResponseError with status, request id and excerpt."""
    headers = {"x-request-id": "req-bad"}
    if content is not None:
        local_api.post("/chat/completions").respond(200, content=content, headers=headers)
    else:
        local_api.post("/chat/completions").respond(200, json=body, headers=headers)
    async with OpenAICompatibleProvider(base_url=LOCAL_URL) as provider:
        with pytest.raises(APIResponseError) as caught:
            await provider.acomplete(chat())
    error = caught.value
    assert message in error.message
    assert (error.provider, error.status_code, error.request_id) == ("openai", 200, "req-bad")
    assert error.body_excerpt
    assert len(local_api.calls) == 1


async def test_body_excerpt_is_bounded(local_api: respx.MockRouter) -> None:
    """Only the first BODY_EXCERPT_CHARS characters of a body go into the error."""
    local_api.post("/chat/completions").respond(200, content=b"<html>" + b"x" * 5000)
    async with OpenAICompatibleProvider(base_url=LOCAL_URL) as provider:
        with pytest.raises(APIResponseError) as caught:
            await provider.acomplete(chat())
    assert caught.value.body_excerpt == "<html>" + "x" * 194


def test_missing_key_for_openai() -> None:
    """Without a key, OpenAI itself is refused with a message that says how to fix it."""
    with pytest.raises(ConfigurationError, match=r"Pass api_key= or set OPENAI_API_KEY"):
        OpenAICompatibleProvider()


def test_empty_key_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """``api_key=""`` sends no key even when OPENAI_API_KEY is set."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    provider = OpenAICompatibleProvider(base_url=LOCAL_URL, api_key="")
    assert provider._headers(None) == {}
    assert provider._api_key is None


@pytest.mark.parametrize(
    ("argument", "env", "dotenv", "expected"),
    [
        pytest.param(
            "http://127.0.0.1:1/v1",
            "http://127.0.0.1:2/v1",
            "http://127.0.0.1:3/v1",
            "http://127.0.0.1:1/v1",
            id="argument",
        ),
        pytest.param(
            None,
            "http://127.0.0.1:2/v1",
            "http://127.0.0.1:3/v1",
            "http://127.0.0.1:2/v1",
            id="env",
        ),
        pytest.param(None, None, "http://127.0.0.1:3/v1", "http://127.0.0.1:3/v1", id="dotenv"),
        pytest.param(None, None, None, DEFAULT_OPENAI_BASE_URL, id="default"),
    ],
)
def test_base_url_precedence(
    monkeypatch: pytest.MonkeyPatch,
    argument: str | None,
    env: str | None,
    dotenv: str | None,
    expected: str,
) -> None:
    """base_url comes from the argument, else the environment, else .env, else the default."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    if env:
        monkeypatch.setenv("OPENAI_BASE_URL", env)
    if dotenv:
        Path(".env").write_text(f"OPENAI_BASE_URL={dotenv}\n")
    assert OpenAICompatibleProvider(base_url=argument).base_url == expected


@pytest.mark.parametrize(
    ("argument", "env", "dotenv", "expected"),
    [
        pytest.param("sk-arg", "sk-env", "sk-file", "sk-arg", id="argument"),
        pytest.param(None, "sk-env", "sk-file", "sk-env", id="env"),
        pytest.param(None, None, "sk-file", "sk-file", id="dotenv"),
    ],
)
async def test_api_key_precedence(
    monkeypatch: pytest.MonkeyPatch,
    argument: str | None,
    env: str | None,
    dotenv: str,
    expected: str,
) -> None:
    """The key comes from the argument, else the environment, else .env, and is sent as a bearer."""
    if env:
        monkeypatch.setenv("OPENAI_API_KEY", env)
    Path(".env").write_text(f"OPENAI_API_KEY={dotenv}\n")
    with mock_api(DEFAULT_OPENAI_BASE_URL) as router:
        route = router.post("/chat/completions").respond(json=OK_BODY)
        async with OpenAICompatibleProvider(api_key=argument) as provider:
            await provider.acomplete(chat())
    assert route.calls.last.request.headers["authorization"] == f"Bearer {expected}"


def test_key_not_in_repr() -> None:
    """repr shows where the provider points, never its key."""
    provider = OpenAICompatibleProvider(api_key=KEY)
    assert repr(provider) == snapshot(
        "OpenAICompatibleProvider(base_url='https://api.openai.com/v1', timeout=600.0, max_retries=2, max_in_flight=64)"
    )
    assert KEY not in repr(vars(provider))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_url": "ftp://127.0.0.1/v1"},
        {"base_url": "127.0.0.1:8000"},
        {"base_url": "http://[::1"},
        {"timeout": 0},
        {"max_retries": -1},
        {"max_in_flight": 0},
    ],
)
def test_invalid_settings(kwargs: dict[str, object]) -> None:
    """Nonsense settings are refused when the provider is built."""
    with pytest.raises(ConfigurationError):
        OpenAICompatibleProvider(**{"base_url": LOCAL_URL, **kwargs})  # type: ignore[arg-type]


def test_satisfies_the_protocol() -> None:
    """The provider is a Provider named 'openai', and can be built outside an event loop."""
    provider = OpenAICompatibleProvider(base_url=LOCAL_URL)
    assert isinstance(provider, Provider)
    assert provider.name == "openai"


async def test_given_client_is_used_and_not_closed(local_api: respx.MockRouter) -> None:
    """A client passed in carries the requests and stays open after aclose."""
    local_api.post("/chat/completions").respond(json=OK_BODY)
    async with httpx.AsyncClient() as client:
        async with OpenAICompatibleProvider(base_url=LOCAL_URL, http_client=client) as provider:
            await provider.acomplete(chat())
        assert not client.is_closed
        assert local_api.calls.call_count == 1


async def test_own_client_closed_idempotently_and_remade(local_api: respx.MockRouter) -> None:
    """aclose closes the client the provider made, twice is fine, a later call makes a new one."""
    local_api.post("/chat/completions").respond(json=OK_BODY)
    provider = OpenAICompatibleProvider(base_url=LOCAL_URL)
    await provider.acomplete(chat())
    client = provider._own_client
    assert client is not None
    await provider.aclose()
    await provider.aclose()
    assert client.is_closed
    await provider.acomplete(chat())
    assert provider._own_client not in (None, client)
    await provider.aclose()


async def test_max_in_flight_bounds_concurrency(local_api: respx.MockRouter) -> None:
    """No more than max_in_flight requests are in flight at once through one instance."""
    active = peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await anyio.sleep(0.01)
        active -= 1
        return httpx.Response(200, json=OK_BODY)

    local_api.post("/chat/completions").mock(side_effect=slow)
    provider = OpenAICompatibleProvider(base_url=LOCAL_URL, max_in_flight=3)
    async with provider, anyio.create_task_group() as tg:
        for _ in range(12):
            tg.start_soon(provider.acomplete, chat())
    assert (peak, local_api.calls.call_count) == (3, 12)
