"""FakeChatServer, the loopback test/demo double: routes, replies, faults, connections, concurrency."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import httpx
import pytest

from rlm_sdk.testing import FakeChatServer, RecordedRequest

pytestmark = pytest.mark.integration

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def server() -> Iterator[FakeChatServer]:
    """A fake server with the default (echo) reply."""
    with FakeChatServer() as server:
        yield server


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` from a sync test (the server runs in its own thread)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_chat_completion_echo(server: FakeChatServer) -> None:
    """POST /v1/chat/completions answers an OpenAI-shaped completion and records the request."""
    response = httpx.post(f"{server.base_url}/chat/completions", json=CHAT, headers={"x-t": "1"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-fake-1"
    body = response.json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "echo: hello"}
    assert (body["model"], body["choices"][0]["finish_reason"]) == ("m", "stop")
    assert body["usage"]["prompt_tokens"] > 0
    [request] = server.requests
    assert isinstance(request, RecordedRequest)
    assert (request.method, request.path, request.json) == ("POST", "/v1/chat/completions", CHAT)
    assert request.headers["x-t"] == "1"


def test_models(server: FakeChatServer) -> None:
    """GET /v1/models lists the server's model."""
    response = httpx.get(f"{server.base_url}/models")
    assert response.json() == {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}


@pytest.mark.parametrize(
    ("method", "path", "content", "status"),
    [
        ("GET", "/v1/nothing", None, 404),
        ("POST", "/v1/chat/completions", b"{not json", 400),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400),
    ],
)
def test_bad_requests(
    server: FakeChatServer, method: str, path: str, content: bytes | None, status: int
) -> None:
    """Unknown routes get 404 and bodies that are not JSON objects get 400, with an error object."""
    response = httpx.request(method, server.base_url.removesuffix("/v1") + path, content=content)
    assert response.status_code == status
    assert "message" in response.json()["error"]


def test_reply_function_variants() -> None:
    """The reply function may return a text or a whole object, may be async, and a failure gives 500."""
    whole = {"id": "x", "choices": [], "custom": True}

    async def answer(body: dict[str, Any]) -> str | dict[str, Any]:
        content = body["messages"][-1]["content"]
        if content == "boom":
            raise ValueError("boom")
        return whole if content == "whole" else content[::-1]

    with FakeChatServer(reply=answer) as server, httpx.Client(base_url=server.base_url) as client:
        ask = lambda text: client.post("/chat/completions", json={"messages": [{"content": text}]})  # noqa: E731
        assert ask("abc").json()["choices"][0]["message"]["content"] == "cba"
        assert ask("abc").json()["model"] == "fake-model"
        assert ask("whole").json() == whole
        failed = ask("boom")
        assert failed.status_code == 500
        assert "boom" in failed.json()["error"]["message"]


def test_respond_next(server: FakeChatServer) -> None:
    """respond_next answers the next N chat requests with the given status, headers and body."""
    server.respond_next(429, headers={"retry-after": "2"}, times=2)
    server.respond_next(200, body="<html>oops</html>", headers={"content-type": "text/html"})
    with httpx.Client(base_url=server.base_url) as client:
        responses = [client.post("/chat/completions", json=CHAT) for _ in range(4)]
    assert [r.status_code for r in responses] == [429, 429, 200, 200]
    assert responses[0].headers["retry-after"] == "2"
    assert responses[0].json() == {
        "error": {"message": "injected status 429", "type": "fake_error"}
    }
    assert (responses[2].text, responses[2].headers["content-type"]) == (
        "<html>oops</html>",
        "text/html",
    )
    assert responses[3].json()["choices"][0]["message"]["content"] == "echo: hello"
    assert len(server.requests) == 4


def test_truncate_next(server: FakeChatServer) -> None:
    """truncate_next sends a body shorter than its Content-Length, then closes the connection."""
    server.truncate_next()
    with httpx.Client(base_url=server.base_url) as client:
        with pytest.raises(
            httpx.RemoteProtocolError, match="without sending complete message body"
        ):
            client.post("/chat/completions", json=CHAT)
        assert client.post("/chat/completions", json=CHAT).status_code == 200
    assert server.total_connections == 2


def test_keep_alive_and_connection_counts(server: FakeChatServer) -> None:
    """One client reuses one connection; the counts drop to zero once the client closes."""
    with httpx.Client(base_url=server.base_url) as client:
        for _ in range(3):
            client.post("/chat/completions", json=CHAT)
        assert (server.open_connections, server.total_connections) == (1, 1)
    wait_until(lambda: server.open_connections == 0)
    assert server.total_connections == 1


async def test_concurrent_requests_overlap() -> None:
    """48 concurrent requests with 200 ms latency each finish in about 200 ms, not 9.6 s."""
    with FakeChatServer(latency=0.2) as server:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits) as client:
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(48):
                    tg.start_soon(functools.partial(client.post, "/chat/completions", json=CHAT))
            elapsed = time.perf_counter() - started
        assert len(server.requests) == 48
        assert server.total_connections == 48
    assert elapsed < 1.5


def test_lifecycle() -> None:
    """start/stop work by hand; stop is idempotent and frees the port; base_url needs a running server."""
    server = FakeChatServer(port=0)
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url
    server.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        url = server.base_url
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/models").status_code == 200
    finally:
        server.stop()
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/models")


def test_stop_ends_requests_in_flight() -> None:
    """stop() closes connections with requests in flight instead of waiting for them."""
    server = FakeChatServer(latency=30).start()
    with (
        ThreadPoolExecutor(1) as pool,
        httpx.Client(base_url=server.base_url, timeout=10) as client,
    ):
        pending = pool.submit(client.post, "/chat/completions", json=CHAT)
        wait_until(lambda: len(server.requests) == 1)
        started = time.perf_counter()
        server.stop()
        assert time.perf_counter() - started < 2
        with pytest.raises(httpx.RemoteProtocolError):
            pending.result(timeout=5)


def test_latency_counts_from_arrival_even_when_the_server_is_busy() -> None:
    """Replies are due at arrival + latency, as the kernel stamped the arrival: a reply function
    that blocks the server's loop for a while does not push the other requests' replies back."""

    def slow(body: dict[str, Any]) -> str:
        time.sleep(0.1)  # blocks the server's only thread: later requests wait unread
        return "ok"

    with FakeChatServer(slow, latency=0.6) as fake:
        gate = threading.Barrier(4)

        def one(_: int) -> float:
            with httpx.Client() as client:
                gate.wait()
                started = time.monotonic()
                client.post(f"{fake.base_url}/chat/completions", json=CHAT, timeout=5)
                return time.monotonic() - started

        with ThreadPoolExecutor(4) as pool:
            took = sorted(pool.map(one, range(4)))
    # Stamped when read, the last of the four would wait about 0.3 s more than the first.
    assert took[0] >= 0.6
    assert took[-1] - took[0] < 0.2, took


def test_a_reply_function_can_call_tools() -> None:
    """A reply of {"tool_calls": [...]} goes out as an assistant message with function calls."""

    def reply(body: dict[str, Any]) -> dict[str, Any]:
        return {"tool_calls": [{"name": "repl", "arguments": {"code": "print(1)"}}]}

    with FakeChatServer(reply) as fake, httpx.Client() as client:
        data = client.post(f"{fake.base_url}/chat/completions", json=CHAT, timeout=5).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "repl", "arguments": '{"code": "print(1)"}'},
        }
    ]


def test_a_server_without_tools_refuses_them_by_name() -> None:
    """tools=False: a request carrying tools gets a 400 whose error names them; others pass."""
    with FakeChatServer(tools=False) as fake, httpx.Client() as client:
        refused = client.post(
            f"{fake.base_url}/chat/completions", json={**CHAT, "tools": []}, timeout=5
        )
        plain = client.post(f"{fake.base_url}/chat/completions", json=CHAT, timeout=5)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "tools"
    assert plain.status_code == 200
