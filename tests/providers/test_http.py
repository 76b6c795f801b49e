"""The HTTP machinery every provider shares: retries, error translation, the client's life,
proxies from the environment, and real round trips over loopback (asyncio and trio).

Unit tests mock the API with respx inside the provider's client; integration tests talk to a
FakeChatServer or a small loopback double. Backoff is fast (see conftest).
"""

from __future__ import annotations

import email.utils
import gc
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
import respx
from dirty_equals import IsFloat

from rlm_sdk._constants import INITIAL_RETRY_DELAY, MAX_RETRY_AFTER, MAX_RETRY_DELAY, VERSION
from rlm_sdk._exceptions import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    RateLimitError,
)
from rlm_sdk.providers import OpenAICompatibleProvider, _http
from rlm_sdk.providers._http import _backoff, _retry_after
from rlm_sdk.testing import FakeChatServer
from tests.providers.helpers import LOCAL_URL, captured_logs, chat, wait_until

OK_BODY = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}
KEY = "sk-never-logged"


def provider(**kwargs: object) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(base_url=LOCAL_URL, api_key=KEY, **kwargs)  # type: ignore[arg-type]


# --- retries and errors (respx) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (408, BadRequestError),
        (409, BadRequestError),
        (429, RateLimitError),
        (500, InternalServerError),
        (502, InternalServerError),
        (503, InternalServerError),
        (529, InternalServerError),
    ],
)
async def test_retryable_status_retried_then_raised(
    local_api: respx.MockRouter, status: int, error_class: type[APIStatusError]
) -> None:
    """408, 409, 429 and 5xx are tried 1 + max_retries times, with one log per retry, then raised."""
    route = local_api.post("/chat/completions").respond(
        status, json={"error": {"message": "busy"}}, headers={"x-request-id": "req-1"}
    )
    with captured_logs() as logs:
        async with provider(max_retries=2) as p:
            with pytest.raises(error_class) as caught:
                await p.acomplete(chat())
    assert route.call_count == 3
    assert [log["event"] for log in logs] == ["rlm.retry_scheduled"] * 2
    assert logs[0] == {
        "event": "rlm.retry_scheduled",
        "log_level": "info",
        "provider": "openai",
        "attempt": 1,
        "max_retries": 2,
        "delay": IsFloat(ge=0),
        "reason": "status",
        "status_code": status,
        "request_id": "req-1",
    }
    error = caught.value
    assert (error.status_code, error.request_id, error.provider) == (status, "req-1", "openai")
    assert error.message == f"openai answered {status}: busy"
    assert KEY not in str(logs) + str(error)


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, BadRequestError),
        (422, BadRequestError),
        (302, APIStatusError),
    ],
)
async def test_other_status_not_retried(
    local_api: respx.MockRouter, status: int, error_class: type[APIStatusError]
) -> None:
    """Other error statuses raise their class at once, without a retry."""
    route = local_api.post("/chat/completions").respond(status, text="nope")
    with captured_logs() as logs:
        async with provider() as p:
            with pytest.raises(error_class) as caught:
                await p.acomplete(chat())
    assert type(caught.value) is error_class
    assert (route.call_count, logs) == (1, [])
    assert caught.value.body_excerpt == "nope"


async def test_authentication_error_names_the_variable(local_api: respx.MockRouter) -> None:
    """A 401 says which variable holds the key, and never shows the key."""
    local_api.post("/chat/completions").respond(
        401, json={"error": {"message": "Incorrect API key"}}
    )
    async with provider() as p:
        with pytest.raises(AuthenticationError) as caught:
            await p.acomplete(chat())
    assert str(caught.value) == (
        "openai answered 401: Incorrect API key (check the key: pass api_key= or set "
        'OPENAI_API_KEY) | status=401 | body=\'{"error":{"message":"Incorrect API key"}}\''
    )


async def test_not_found_names_the_url_and_reads_a_fastapi_detail(
    local_api: respx.MockRouter,
) -> None:
    """A 404 with FastAPI's ``{"detail": ...}`` body (llama.cpp's server, vLLM) quotes the
    detail and names the URL that was posted to."""
    local_api.post("/chat/completions").respond(404, json={"detail": "Not Found"})
    async with provider() as p:
        with pytest.raises(BadRequestError) as caught:
            await p.acomplete(chat())
    assert caught.value.message == (
        f"openai answered 404: Not Found (POST {p.base_url}/chat/completions: "
        "check base_url and the model name)"
    )


async def test_recovers_after_a_retry(
    local_api: respx.MockRouter, retry_delays: list[float]
) -> None:
    """A 503 then a 200 gives the reply, after one retry."""
    route = local_api.post("/chat/completions")
    route.side_effect = [httpx.Response(503), httpx.Response(200, json=OK_BODY)]
    async with provider() as p:
        reply = await p.acomplete(chat())
    assert (reply.text, route.call_count, len(retry_delays)) == ("ok", 2, 1)


@pytest.mark.parametrize(
    ("raised", "error_class", "reason"),
    [
        (httpx.ConnectError("refused"), APIConnectionError, "connection_error"),
        (httpx.RemoteProtocolError("peer closed"), APIConnectionError, "connection_error"),
        (httpx.ReadError("reset"), APIConnectionError, "connection_error"),
        (httpx.ReadTimeout("slow"), APITimeoutError, "timeout"),
        (httpx.ConnectTimeout("slow"), APITimeoutError, "timeout"),
        (httpx.PoolTimeout("full"), APITimeoutError, "timeout"),
    ],
)
async def test_transport_errors_retried_then_translated(
    local_api: respx.MockRouter,
    raised: httpx.RequestError,
    error_class: type[APIConnectionError],
    reason: str,
) -> None:
    """Connection errors and timeouts are retried, then raised as typed errors chained to httpx's."""
    route = local_api.post("/chat/completions").mock(side_effect=raised)
    with captured_logs() as logs:
        async with provider() as p:
            with pytest.raises(error_class) as caught:
                await p.acomplete(chat())
    assert type(caught.value) is error_class
    assert caught.value.__cause__ is raised
    assert caught.value.provider == "openai"
    assert route.call_count == 3
    assert [(log["reason"], log["status_code"]) for log in logs] == [(reason, None)] * 2


async def test_max_retries_zero(local_api: respx.MockRouter, retry_delays: list[float]) -> None:
    """max_retries=0 means one attempt."""
    route = local_api.post("/chat/completions").respond(500)
    async with provider(max_retries=0) as p:
        with pytest.raises(InternalServerError):
            await p.acomplete(chat())
    assert (route.call_count, retry_delays) == (1, [])


def _http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after-ms": "1500"}, 1.5, id="retry-after-ms"),
        pytest.param({"retry-after-ms": "250", "retry-after": "9"}, 0.25, id="ms-wins"),
        pytest.param({"retry-after": "2"}, 2.0, id="seconds"),
        pytest.param({"retry-after": str(MAX_RETRY_AFTER)}, MAX_RETRY_AFTER, id="at-the-cap"),
        pytest.param({"retry-after-ms": "x", "retry-after": "3"}, 3.0, id="bad-ms"),
        pytest.param({"retry-after": "0"}, None, id="zero"),
        pytest.param({"retry-after": str(MAX_RETRY_AFTER + 1)}, None, id="too-long"),
        pytest.param({"retry-after": "soon"}, None, id="garbage"),
        pytest.param({}, None, id="none"),
    ],
)
def test_retry_after_read_from_the_headers(headers: dict[str, str], expected: float | None) -> None:
    """retry-after-ms, then Retry-After in seconds, honoured within (0, MAX_RETRY_AFTER]."""
    assert _retry_after(httpx.Headers(headers)) == expected


@pytest.mark.parametrize(
    ("seconds_from_now", "honoured"), [(5, True), (-30, False), (MAX_RETRY_AFTER + 30, False)]
)
def test_retry_after_as_an_http_date(seconds_from_now: float, honoured: bool) -> None:
    """A Retry-After date becomes the seconds until then, if that is within (0, MAX_RETRY_AFTER]."""
    delay = _retry_after(httpx.Headers({"retry-after": _http_date(seconds_from_now)}))
    if honoured:
        assert delay is not None and seconds_from_now - 2 <= delay <= seconds_from_now
    else:
        assert delay is None


async def test_the_delay_a_server_asks_for_is_waited(
    local_api: respx.MockRouter, retry_delays: list[float]
) -> None:
    """A 429 with retry-after-ms: the retry comes that long after, not after the backoff."""
    calls: list[float] = []

    def respond(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(429, headers={"retry-after-ms": "80"})
        return httpx.Response(200, json=OK_BODY)

    local_api.post("/chat/completions").mock(side_effect=respond)
    async with provider() as p:
        await p.acomplete(chat())
    assert retry_delays == [0.08]
    assert calls[1] - calls[0] >= 0.08


async def test_an_unusable_retry_after_falls_back_to_the_backoff(
    local_api: respx.MockRouter, retry_delays: list[float]
) -> None:
    """A Retry-After out of range is ignored: the delay is the backoff's (1 ms in tests)."""
    route = local_api.post("/chat/completions")
    route.side_effect = [
        httpx.Response(429, headers={"retry-after": str(MAX_RETRY_AFTER + 1)}),
        httpx.Response(200, json=OK_BODY),
    ]
    async with provider() as p:
        await p.acomplete(chat())
    assert retry_delays == [0.001]


@pytest.mark.parametrize("attempt", range(1, 10))
def test_backoff_is_exponential_jittered_and_capped(
    monkeypatch: pytest.MonkeyPatch, attempt: int
) -> None:
    """The backoff doubles from INITIAL_RETRY_DELAY, loses up to 25 % to jitter, and is capped."""
    monkeypatch.setattr(_http, "INITIAL_RETRY_DELAY", INITIAL_RETRY_DELAY)  # not the tests' 1 ms
    nominal = min(INITIAL_RETRY_DELAY * 2 ** (attempt - 1), MAX_RETRY_DELAY)
    delays = {_backoff(attempt) for _ in range(50)}
    assert all(0.75 * nominal <= delay <= nominal for delay in delays)
    assert len(delays) > 1


async def test_retry_logged_before_its_sleep(local_api: respx.MockRouter) -> None:
    """Each retry's log event is emitted before the provider sleeps, not after."""
    calls: list[float] = []

    def respond(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        return httpx.Response(503, headers={"retry-after-ms": "80"})

    def stamp(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        return {**event, "at": time.monotonic()}

    local_api.post("/chat/completions").mock(side_effect=respond)
    with captured_logs(stamp) as logs:
        async with provider() as p:
            with pytest.raises(InternalServerError):
                await p.acomplete(chat())
    assert len(calls) == 3
    assert [log["attempt"] for log in logs] == [1, 2]
    for log, retried_at in zip(logs, calls[1:], strict=True):
        assert retried_at - log["at"] >= 0.08


# --- the client's life -----------------------------------------------------------------------


async def test_own_client_sends_the_sdk_user_agent(local_api: respx.MockRouter) -> None:
    """The provider's own client sends User-Agent rlm-sdk/<version>, not httpx's."""
    route = local_api.post("/chat/completions").respond(json=OK_BODY)
    async with provider() as p:
        await p.acomplete(chat())
    assert route.calls.last.request.headers["user-agent"] == f"rlm-sdk/{VERSION}"


async def test_own_client_keeps_no_cookies_and_sends_the_timeout(
    local_api: respx.MockRouter,
) -> None:
    """A cookie a server sets is not sent back (the provider's own client keeps none), and
    each request carries the provider's timeout, the connect part capped."""
    route = local_api.post("/chat/completions").respond(
        json=OK_BODY, headers={"set-cookie": "session=abc; Path=/"}
    )
    async with provider(timeout=60.0) as p:
        await p.acomplete(chat())
        await p.acomplete(chat())
    second = route.calls.last.request
    assert route.call_count == 2
    assert "cookie" not in second.headers
    timeout = second.extensions["timeout"]
    assert timeout["read"] == 60.0 and timeout["connect"] < 60.0


async def test_a_given_client_keeps_its_settings_but_not_its_user_agent(
    local_api: respx.MockRouter,
) -> None:
    """A client passed in adds its own headers; the provider's User-Agent and timeout win."""
    route = local_api.post("/chat/completions").respond(json=OK_BODY)
    async with httpx.AsyncClient(headers={"x-team": "a"}, timeout=1.0) as client:
        async with provider(http_client=client, timeout=7.0) as p:
            await p.acomplete(chat())
        assert not client.is_closed
    request = route.calls.last.request
    assert (request.headers["x-team"], request.headers["user-agent"]) == (
        "a",
        f"rlm-sdk/{VERSION}",
    )
    assert request.extensions["timeout"] == {"connect": 7.0, "read": 7.0, "write": 7.0, "pool": 7.0}


# --- over real HTTP on 127.0.0.1 --------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FakeChatServer]:
    """A fake OpenAI-compatible server on an ephemeral loopback port."""
    with FakeChatServer(reply=lambda body: f"you said {body['messages'][-1]['content']}") as server:
        yield server


@pytest.mark.integration
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


@pytest.mark.integration
@pytest.mark.parametrize("given", [False, True], ids=["own-client", "given-client"])
async def test_request_sent_is_reported_before_the_reply(
    server: FakeChatServer, monkeypatch: pytest.MonkeyPatch, given: bool
) -> None:
    """The run hears "request sent" once the body is out, long before the reply, through the
    provider's own client and through a caller's httpx client alike."""
    server.latency = 0.3
    reported: list[float] = []
    monkeypatch.setattr(_http, "notify_request_sent", lambda: reported.append(time.monotonic()))
    async with (
        httpx.AsyncClient() as client,
        OpenAICompatibleProvider(
            base_url=server.base_url, http_client=client if given else None
        ) as provider,
    ):
        await provider.acomplete(chat())
    answered = time.monotonic()
    assert len(reported) == 1
    assert answered - reported[0] > 0.2


@pytest.mark.integration
async def test_rate_limited_then_served(server: FakeChatServer, retry_delays: list[float]) -> None:
    """A 429 with retry-after-ms is waited out as asked, on the same kept-alive connection."""
    server.respond_next(429, headers={"retry-after-ms": "20"})
    async with OpenAICompatibleProvider(base_url=server.base_url) as provider:
        reply = await provider.acomplete(chat("again"))
    assert reply.text == "you said again"
    assert retry_delays == [0.02]
    assert (len(server.requests), server.total_connections) == (2, 1)


@pytest.mark.integration
async def test_rate_limited_to_the_end_leaks_nothing(
    server: FakeChatServer, retry_delays: list[float]
) -> None:
    """Persistent 429s raise RateLimitError; every response is released (one connection, reused)."""
    server.respond_next(429, headers={"retry-after": "0.01"}, times=3)
    provider = OpenAICompatibleProvider(base_url=server.base_url)
    with pytest.raises(RateLimitError) as caught:
        await provider.acomplete(chat())
    assert caught.value.status_code == 429
    assert (len(server.requests), server.total_connections) == (3, 1)
    assert retry_delays == [0.01, 0.01]
    await provider.aclose()
    await wait_until(lambda: server.open_connections == 0)


@pytest.mark.integration
async def test_body_cut_off(server: FakeChatServer) -> None:
    """A body cut off mid-way is retried, then raised as APIConnectionError; no connection stays open."""
    server.truncate_next(times=3)
    async with OpenAICompatibleProvider(base_url=server.base_url) as provider:
        with pytest.raises(APIConnectionError) as caught:
            await provider.acomplete(chat())
        assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
        assert len(server.requests) == 3
        await wait_until(lambda: server.open_connections == 0)


@pytest.mark.integration
async def test_body_cut_off_once_then_served(server: FakeChatServer) -> None:
    """One broken body is retried on a new connection and the reply arrives."""
    server.truncate_next()
    async with OpenAICompatibleProvider(base_url=server.base_url) as provider:
        reply = await provider.acomplete(chat("x"))
    assert reply.text == "you said x"
    assert (len(server.requests), server.total_connections) == (2, 2)


@pytest.mark.integration
async def test_html_with_status_200(server: FakeChatServer) -> None:
    """An HTML page with status 200 raises APIResponseError at once, with an excerpt."""
    server.respond_next(200, body="<html>login</html>", headers={"content-type": "text/html"})
    async with OpenAICompatibleProvider(base_url=server.base_url) as provider:
        with pytest.raises(APIResponseError) as caught:
            await provider.acomplete(chat())
    assert (caught.value.status_code, caught.value.body_excerpt) == (200, "<html>login</html>")
    assert len(server.requests) == 1


@pytest.mark.integration
async def test_timeout() -> None:
    """A server slower than the timeout raises APITimeoutError."""
    with FakeChatServer(latency=2.0) as slow:
        async with OpenAICompatibleProvider(
            base_url=slow.base_url, timeout=0.2, max_retries=0
        ) as provider:
            with pytest.raises(APITimeoutError):
                await provider.acomplete(chat())


@pytest.mark.integration
async def test_connection_refused() -> None:
    """Nothing listening at the URL: retried, then APIConnectionError chained to httpx's."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    async with OpenAICompatibleProvider(base_url=f"http://127.0.0.1:{port}/v1") as provider:
        with pytest.raises(APIConnectionError) as caught:
            await provider.acomplete(chat())
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
def test_sync_use_closing_each_time(server: FakeChatServer) -> None:
    """A provider built outside any loop serves several anyio.run calls when each closes it."""
    provider = OpenAICompatibleProvider(base_url=server.base_url)

    async def once() -> str:
        async with provider:
            return (await provider.acomplete(chat("s"))).text

    assert [anyio.run(once), anyio.run(once)] == ["you said s"] * 2


@pytest.mark.integration
@pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)
def test_new_event_loop_gets_a_new_client(server: FakeChatServer) -> None:
    """Used from a second event loop without closing, the provider makes a new client there;
    closing from yet another loop drops the stale one without error."""
    # The first loop's sockets cannot be closed properly any more (that loop is gone): hence the
    # ignored ResourceWarning, and the advice to close a provider before its loop ends.
    provider = OpenAICompatibleProvider(base_url=server.base_url)
    assert anyio.run(provider.acomplete, chat("1")).text == "you said 1"
    first = provider._own_client

    async def second() -> tuple[str, bool]:
        reply = await provider.acomplete(chat("2"))
        return reply.text, provider._own_client not in (None, first)

    assert anyio.run(second) == ("you said 2", True)
    anyio.run(provider.aclose)
    assert provider._own_client is None
    first = None
    gc.collect()


@pytest.mark.integration
def test_a_round_trip_on_trio(server: FakeChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """On trio as on asyncio: the provider's own client reaches a real server, keeps its
    connection alive, retries after the wait a server asks for, and reports each request sent."""
    pytest.importorskip("trio")
    server.respond_next(503, headers={"retry-after-ms": "10"})
    reported: list[None] = []
    monkeypatch.setattr(_http, "notify_request_sent", lambda: reported.append(None))

    async def twice() -> list[str]:
        async with OpenAICompatibleProvider(base_url=server.base_url) as provider:
            return [(await provider.acomplete(chat(f"t{i}"))).text for i in range(2)]

    assert anyio.run(twice, backend="trio") == ["you said t0", "you said t1"]
    assert (len(server.requests), server.total_connections, len(reported)) == (3, 1, 3)


# --- proxies from the environment ------------------------------------------------------------

_PROXIED_REPLY = json.dumps({"choices": [{"message": {"content": "via the proxy"}}]}).encode()


@asynccontextmanager
async def _proxy_double() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A loopback HTTP proxy double: records each request line it gets and answers it itself.

    Yields its URL and the request lines. A request sent through a proxy names the whole
    target URL in its request line (``POST http://host:port/path HTTP/1.1``).
    """
    lines: list[bytes] = []

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            while True:
                try:
                    while b"\r\n\r\n" not in data:
                        data += await stream.receive()
                    head, _, data = data.partition(b"\r\n\r\n")
                    length = re.search(rb"(?im)^content-length: *(\d+)", head)
                    size = int(length[1]) if length else 0
                    while len(data) < size:
                        data += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                data = data[size:]
                lines.append(head.split(b"\r\n", 1)[0])
                await stream.send(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(_PROXIED_REPLY), _PROXIED_REPLY)
                )

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"http://127.0.0.1:{port}", lines
        tg.cancel_scope.cancel()


@pytest.mark.integration
async def test_a_proxy_the_environment_names_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY applies to the provider's URL: every request goes through that proxy, and the
    client is logged as proxied once."""
    unreachable = "http://127.0.0.1:9/v1"  # the discard port: a direct request would fail
    async with _proxy_double() as (proxy_url, lines):
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        with captured_logs() as logs:
            async with OpenAICompatibleProvider(base_url=unreachable) as provider:
                replies = [(await provider.acomplete(chat())).text for _ in range(2)]
    assert replies == ["via the proxy"] * 2
    assert lines == [b"POST http://127.0.0.1:9/v1/chat/completions HTTP/1.1"] * 2
    assert logs == [
        {"event": "rlm.http_proxy", "log_level": "info", "provider": "openai", "proxy": proxy_url}
    ]


@pytest.mark.integration
async def test_a_proxy_url_is_logged_without_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A proxy's user and password are sent to the proxy, never written to the log."""
    async with _proxy_double() as (proxy_url, lines):
        monkeypatch.setenv("HTTP_PROXY", proxy_url.replace("//", "//user:s3cret@"))
        with captured_logs() as logs:
            async with OpenAICompatibleProvider(base_url="http://127.0.0.1:9/v1") as provider:
                await provider.acomplete(chat())
    assert len(lines) == 1
    assert [log["proxy"] for log in logs] == [proxy_url]
    assert "s3cret" not in str(logs)


@pytest.mark.integration
async def test_no_proxy_sends_straight_to_the_server(
    server: FakeChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host NO_PROXY names is reached directly, proxy or not; nothing is logged."""
    async with _proxy_double() as (proxy_url, lines):
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        with captured_logs() as logs:
            async with OpenAICompatibleProvider(base_url=server.base_url) as provider:
                reply = await provider.acomplete(chat("direct"))
    assert reply.text == "you said direct"
    assert (lines, logs, len(server.requests)) == ([], [], 1)
