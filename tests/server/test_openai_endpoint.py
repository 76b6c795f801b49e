"""``/v1`` driven by the official ``openai`` client against a real server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import openai
import pytest

from rlm_sdk import InternalServerError
from rlm_sdk.testing import ScriptedProvider
from tests.server.helpers import (
    ROOT,
    SUB,
    LiveServer,
    repl_workers,
    sleeping_policy,
    two_turn_policy,
)

pytestmark = pytest.mark.integration

StartServer = Callable[..., LiveServer]


def client_for(server: LiveServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


async def test_models_lists_the_rlm_names(live_server: StartServer) -> None:
    """GET /v1/models lists ``rlm:`` + every configured model."""
    server = live_server(ScriptedProvider(two_turn_policy))
    async with client_for(server) as client:
        models = await client.models.list()
    assert [m.id for m in models.data] == [f"rlm:{ROOT}", f"rlm:{SUB}"]


async def test_chat_completion_runs_an_rlm(live_server: StartServer) -> None:
    """Earlier messages become the context, the last user message the query; the answer comes back."""
    server = live_server(ScriptedProvider(two_turn_policy))
    context = "The quick brown fox jumps over the lazy dog. " * 20
    async with client_for(server) as client:
        completion = await client.chat.completions.create(
            model=f"rlm:{ROOT}",
            messages=[
                {"role": "user", "content": context},
                {"role": "user", "content": "What does the fox do?"},
            ],
            extra_body={"rlm": {"sub_model": SUB, "max_iterations": 5}},
        )
    assert completion.choices[0].message.content == "the answer is 42"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == f"rlm:{ROOT}"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    requests = server.provider.requests
    assert [r.model for r in requests] == [ROOT, SUB, ROOT]
    assert "What does the fox do?" in requests[0].messages[1].content
    assert all(context not in m.content for r in requests for m in r.messages)
    assert f"{len(context)}" in requests[2].messages[-1].content  # the cell printed len(context)


async def test_streaming_sends_the_answer_as_chunks(live_server: StartServer) -> None:
    """``stream=True`` yields chat.completion.chunk deltas that add up to the answer, then usage."""
    server = live_server(ScriptedProvider(two_turn_policy))
    async with client_for(server) as client:
        stream = await client.chat.completions.create(
            model=f"rlm:{ROOT}",
            messages=[{"role": "system", "content": "ctx"}, {"role": "user", "content": "q?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "the answer is 42"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


async def test_unknown_model_is_404(live_server: StartServer) -> None:
    """An unknown model (or a name without ``rlm:``) is a 404 in OpenAI's error shape."""
    server = live_server(ScriptedProvider(two_turn_policy))
    async with client_for(server) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(
                model="rlm:gpt-nonexistent", messages=[{"role": "user", "content": "hi"}]
            )
    assert caught.value.code == "model_not_found"
    async with httpx.AsyncClient(base_url=server.url) as http:
        bare = await http.post("/v1/chat/completions", json={"model": ROOT, "messages": []})
        sub = await http.post(
            "/v1/chat/completions",
            json={
                "model": f"rlm:{ROOT}",
                "messages": [{"role": "user", "content": "q"}],
                "rlm": {"sub_model": "elsewhere:model"},
            },
        )
    assert bare.status_code == 404
    assert set(bare.json()["error"]) == {"message", "type", "param", "code"}
    assert sub.status_code == 404 and sub.json()["error"]["param"] == "rlm.sub_model"


async def test_bad_json_is_400(live_server: StartServer) -> None:
    """A body that is not JSON, or lacks messages, is a 400 with a message."""
    server = live_server(ScriptedProvider(two_turn_policy))
    async with httpx.AsyncClient(base_url=server.url) as http:
        broken = await http.post(
            "/v1/chat/completions",
            content=b'{"model": "rlm:x", ',
            headers={"content-type": "application/json"},
        )
        no_user = await http.post(
            "/v1/chat/completions",
            json={"model": f"rlm:{ROOT}", "messages": [{"role": "system", "content": "s"}]},
        )
        bad_depth = await http.post(
            "/v1/chat/completions",
            json={
                "model": f"rlm:{ROOT}",
                "messages": [{"role": "user", "content": "q"}],
                "rlm": {"max_depth": 99},
            },
        )
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "invalid_json"
    assert no_user.status_code == 400 and "user" in no_user.json()["error"]["message"]
    assert bad_depth.status_code == 400 and bad_depth.json()["error"]["param"] == "rlm.max_depth"


async def test_too_large_is_413(live_server: StartServer) -> None:
    """A body over the server's limit is refused with 413, by status and through the client."""
    server = live_server(ScriptedProvider(two_turn_policy), max_body_bytes=4096)
    big = "x" * 10_000
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": f"rlm:{ROOT}", "messages": [{"role": "user", "content": big}]},
        )
        page_run = await http.post("/api/runs", content=big.encode())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert page_run.status_code == 413
    async with client_for(server) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model=f"rlm:{ROOT}", messages=[{"role": "user", "content": big}]
            )
    assert caught.value.status_code == 413
    assert server.provider.requests == []


async def test_provider_failure_is_502(live_server: StartServer) -> None:
    """A model provider that fails makes a 502 whose message says so."""
    failing = ScriptedProvider(
        [InternalServerError("upstream down", provider="scripted", status_code=503)]
    )
    server = live_server(failing)
    async with client_for(server) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model=f"rlm:{ROOT}", messages=[{"role": "user", "content": "q"}]
            )
    assert caught.value.status_code == 502
    assert "upstream down" in caught.value.message


async def test_streaming_failure_arrives_as_an_error_event(live_server: StartServer) -> None:
    """When the run fails mid-stream the client raises the error the server sent."""
    failing = ScriptedProvider(
        [InternalServerError("upstream down", provider="scripted", status_code=503)]
    )
    server = live_server(failing)
    async with client_for(server) as client:
        stream = await client.chat.completions.create(
            model=f"rlm:{ROOT}", messages=[{"role": "user", "content": "q"}], stream=True
        )
        with pytest.raises(openai.APIError, match="upstream down"):
            async for _chunk in stream:
                pass


async def test_a_client_that_leaves_cancels_its_run(live_server: StartServer) -> None:
    """When the HTTP client disconnects mid-run, the run is cancelled and its REPL worker stops."""
    server = live_server(ScriptedProvider(sleeping_policy))
    before = repl_workers()
    seen: set[int] = set()

    async def watch_workers() -> None:
        while True:
            seen.update(repl_workers() - before)
            await anyio.sleep(0.05)

    timeout = httpx.Timeout(30, read=1.5)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=timeout) as http,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(watch_workers)
        with pytest.raises(httpx.ReadTimeout):
            await http.post(
                "/v1/chat/completions",
                json={"model": f"rlm:{ROOT}", "messages": [{"role": "user", "content": "q"}]},
            )
        tg.cancel_scope.cancel()
    with anyio.fail_after(10):
        while repl_workers() & seen:
            await anyio.sleep(0.05)
    assert seen or not Path("/proc/self/task").exists()  # the sleeping cell's worker existed
    assert len(server.provider.requests) == 1


async def test_the_servers_token_cap_and_timeout_bound_every_run(
    live_server: StartServer,
) -> None:
    """``max_tokens`` and ``max_wall_time`` from the server's config reach every model call
    and every run: a run past its deadline ends with the limit, not a hang."""
    server = live_server(ScriptedProvider(sleeping_policy), max_tokens=48, max_wall_time=1.0)
    async with client_for(server) as client:
        with anyio.fail_after(30):
            completion = await client.chat.completions.create(
                model=f"rlm:{ROOT}",
                messages=[{"role": "user", "content": "ctx"}, {"role": "user", "content": "q"}],
            )
    run = (completion.model_extra or {})["rlm"]
    assert run["stop_reason"] == "limit" and "wall time" in run["error"]
    assert completion.choices[0].finish_reason == "length"
    assert [r.max_tokens for r in server.provider.requests] == [48]
