"""Conversations over ``/v1/chat/completions`` (``X-RLM-Session``), against a real server on
127.0.0.1 with the ScriptedProvider test double as the model and real REPL workers."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import httpx
import pytest

from rlm_sdk import CompletionRequest
from rlm_sdk.testing import ScriptedProvider
from tests.server.helpers import ROOT, LiveServer, repl, repl_workers, serve_in_thread

pytestmark = pytest.mark.integration

StartServer = Callable[..., LiveServer]
HEADER = "X-RLM-Session"


def conversation_policy(request: CompletionRequest) -> str:
    """First query: bind ``x = len(context)``; a follow-up: print ``x * 2``; then answer with
    what the cell printed. A query containing "sleep" sleeps in its cell instead."""
    messages = request.messages
    if messages[0].role != "system":
        return "a sub-call answer"
    asked = max(
        i
        for i, m in enumerate(messages)
        if m.role == "user" and m.content.startswith(("The query:", "A follow-up query"))
    )
    if not any(m.role == "assistant" for m in messages[asked:]):
        if "sleep" in messages[asked].content:
            return repl("import time\ntime.sleep(60)")
        if messages[asked].content.startswith("A follow-up query"):
            return repl("print(x * 2)")
        return repl("x = len(context)\nprint(x)")
    printed = messages[-1].content.removeprefix("REPL output:\n").strip()
    return f"FINAL({printed})"


def body(content: str, question: str) -> dict[str, object]:
    return {
        "model": f"rlm:{ROOT}",
        "messages": [
            {"role": "user", "content": content},
            {"role": "user", "content": question},
        ],
    }


async def ask(
    client: httpx.AsyncClient, payload: dict[str, object], session: str | None
) -> httpx.Response:
    headers = {} if session is None else {HEADER: session}
    return await client.post("/v1/chat/completions", json=payload, headers=headers, timeout=30)


def answer(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


async def settle(expected: Callable[[set[int]], bool], within: float = 10.0) -> set[int]:
    """The REPL workers below this process once ``expected`` holds of them (or at the deadline)."""
    deadline = time.monotonic() + within
    while True:
        workers = repl_workers()
        if expected(workers) or time.monotonic() > deadline:
            return workers
        await anyio.sleep(0.05)


async def test_a_session_keeps_its_worker_and_variables(live_server: StartServer) -> None:
    """With the header, a follow-up runs in the first request's worker: its variable is there."""
    server = live_server(ScriptedProvider(conversation_policy))
    context = "abcdefghij" * 7
    async with httpx.AsyncClient(base_url=server.url) as client:
        first = await ask(client, body(context, "How long?"), "chat-1")
        assert first.headers[HEADER] == "chat-1"
        assert answer(first) == "70"
        workers = await settle(lambda w: len(w) == 1)
        assert len(workers) == 1
        follow = body(context, "How long?")
        follow["messages"] += [  # type: ignore[operator]
            {"role": "assistant", "content": "70"},
            {"role": "user", "content": "And twice that?"},
        ]
        second = await ask(client, follow, "chat-1")
        assert answer(second) == "140"
        assert repl_workers() == workers
    last = server.provider.requests[-1].messages
    assert any(m.content.startswith("The query: How long?") for m in last)


async def test_without_the_header_nothing_is_kept(live_server: StartServer) -> None:
    """No header: each request is a run of its own, and its worker is gone when it answers."""
    server = live_server(ScriptedProvider(conversation_policy))
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await ask(client, body("abc", "How long?"), None)
        assert answer(response) == "3"
        assert HEADER not in response.headers
        assert await settle(lambda w: not w) == set()


async def test_idle_sessions_are_closed_and_reaped(live_server: StartServer) -> None:
    """Past session_idle_timeout, the session's worker is reaped; the id then starts afresh."""
    server = live_server(ScriptedProvider(conversation_policy), session_idle_timeout=0.3)
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert answer(await ask(client, body("abcd", "How long?"), "idle")) == "4"
        assert await settle(lambda w: not w) == set()
        again = await ask(client, body("abcde", "How long?"), "idle")
        assert answer(again) == "5"  # a fresh session: read as a first request


async def test_the_bound_evicts_the_idle_and_refuses_when_all_are_busy(
    live_server: StartServer,
) -> None:
    """At max_sessions, a new id closes the least recently used idle session; when the one
    slot is busy, a new id gets 429."""
    server = live_server(ScriptedProvider(conversation_policy), max_sessions=1)
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert answer(await ask(client, body("ab", "How long?"), "a")) == "2"
        first = await settle(lambda w: len(w) == 1)
        assert answer(await ask(client, body("abc", "How long?"), "b")) == "3"
        second = await settle(lambda w: len(w) == 1 and w != first)
        assert len(second) == 1 and not second & first
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, client, body("x", "please sleep"), "c")  # evicts b, then busy
            await settle(lambda w: len(w) == 1 and w != second)
            refused = await ask(client, body("abcd", "How long?"), "d")
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "too_many_sessions"
            tg.cancel_scope.cancel()


async def test_a_bad_session_id_is_refused(live_server: StartServer) -> None:
    """An id with characters outside the documented set is a 400 naming the header."""
    server = live_server(ScriptedProvider(conversation_policy))
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await ask(client, body("ab", "How long?"), "no spaces allowed")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == HEADER


async def test_stopping_the_server_reaps_every_session() -> None:
    """Live sessions end with the server: no worker is left behind."""
    with serve_in_thread(ScriptedProvider(conversation_policy)) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            for sid in ("one", "two"):
                assert answer(await ask(client, body("abc", "How long?"), sid)) == "3"
        assert len(await settle(lambda w: len(w) == 2)) == 2
    assert await settle(lambda w: not w) == set()


async def test_a_follow_up_takes_a_response_format(live_server: StartServer) -> None:
    """A session's follow-up may carry a json_schema response_format: the schema reaches the
    model with the follow-up, and the answer comes back as JSON of that type."""
    server = live_server(ScriptedProvider(conversation_policy))
    context = "abcdefghij" * 7
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert answer(await ask(client, body(context, "How long?"), "typed-1")) == "70"
        follow = body(context, "How long?")
        follow["messages"] += [  # type: ignore[operator]
            {"role": "assistant", "content": "70"},
            {"role": "user", "content": "And twice that?"},
        ]
        follow["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "Twice", "schema": {"type": "integer", "minimum": 100}},
        }
        second = await ask(client, follow, "typed-1")
    assert answer(second) == "140"
    told = server.provider.requests[-1].messages
    assert any('"minimum": 100' in m.content or '"minimum":100' in m.content for m in told)
