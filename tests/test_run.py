"""The run loop: one path for every turn, the worker started during the first call, every end reported."""

from __future__ import annotations

import contextlib
import gc
import weakref
from typing import Any

import anyio
import pytest

from rlm_sdk import (
    APIConnectionError,
    CompletionRequest,
    Event,
    LimitExceededError,
    LimitReached,
    Limits,
    OpenAICompatibleProvider,
    RecursiveLM,
    RunFinished,
    RunStarted,
)
from rlm_sdk._observe import notify_request_sent
from rlm_sdk.repl import ForkServer
from rlm_sdk.testing import FakeChatServer, ScriptedProvider
from tests.helpers import descendants

from .test_orchestrator import code

pytestmark = pytest.mark.integration


async def _a_worker_appears(baseline: set[int], timeout: float = 5.0) -> bool:
    """Whether a REPL worker (and the fork server it came from) starts within ``timeout`` s."""
    with anyio.move_on_after(timeout):
        while len(descendants() - baseline) < 2:
            await anyio.sleep(0.01)
        return True
    return False


async def test_worker_starts_while_the_first_request_is_on_the_wire() -> None:
    """Over real HTTP, the worker is forked while the server still holds the first request."""
    baseline = descendants()
    seen: list[bool] = []

    async def reply(body: dict[str, Any]) -> str:
        if len(body["messages"]) == 2:  # the first turn: hold it until a worker exists
            seen.append(await _a_worker_appears(baseline))
            return code("print(len(context))")
        return "FINAL(done)"

    with FakeChatServer(reply=reply) as server:
        provider = OpenAICompatibleProvider(base_url=server.base_url, api_key="sk-local")
        async with provider, RecursiveLM("m", provider=provider) as rlm:
            result = await rlm.acomplete("x" * 1000, "q")
    assert seen == [True]
    assert result.answer == "done"


async def test_worker_starts_during_the_first_call_of_a_silent_provider() -> None:
    """A provider that never says its request left still gets the worker started while it thinks."""
    baseline = descendants()
    seen: list[bool] = []

    async def reply(request: CompletionRequest) -> str:
        if len(request.messages) == 2:
            seen.append(await _a_worker_appears(baseline))
            return code("print(1)")
        return "FINAL(done)"

    async with RecursiveLM("m", provider=ScriptedProvider(reply)) as rlm:
        result = await rlm.acomplete("ctx", "q")
    assert (seen, result.answer) == ([True], "done")


async def test_a_run_answered_before_its_worker_opened_never_starts_one() -> None:
    """An answer in the first reply, with no code, ends the run without forking a worker."""
    forkserver = ForkServer()  # starts with the first worker asked of it
    provider = ScriptedProvider(["FINAL(quick)"])
    async with RecursiveLM("m", provider=provider, forkserver=forkserver) as rlm:
        result = await rlm.acomplete("ctx", "q")
    await forkserver.aclose()
    assert result.answer == "quick"
    assert forkserver.starts == 0
    assert result.isolation == []


async def test_request_sent_from_a_sub_call_is_harmless() -> None:
    """Every model call reports the same way; a sub-call's report after the worker opened changes nothing."""

    async def reply(request: CompletionRequest) -> str:
        notify_request_sent()
        if request.messages[0].role != "system":
            return "sub"
        if len(request.messages) == 2:
            return code("print(llm_query('x'))")
        return "FINAL(ok)"

    async with RecursiveLM("m", provider=ScriptedProvider(reply)) as rlm:
        result = await rlm.acomplete("ctx", "q")
    assert result.answer == "ok"
    assert result.trajectory.turns[0].cells[0].stdout == "sub\n"


async def test_a_failed_run_reports_its_end_and_raises_with_its_result() -> None:
    """A provider failure on turn 2 ends the run with stop_reason 'error' in events, result and error."""
    events: list[Event] = []
    failure = APIConnectionError("the server went away", provider="scripted")
    rlm = RecursiveLM("m", provider=ScriptedProvider([code("x = 1"), failure]))
    with pytest.raises(APIConnectionError) as info:
        await rlm.acomplete("ctx", "q", on_event=events.append)
    assert isinstance(events[-1], RunFinished)
    assert events[-1].result.stop_reason == "error"
    assert info.value.result == events[-1].result
    assert info.value.result.iterations == 2
    assert info.value.result.trajectory.turns[0].cells[0].code == "x = 1"
    assert "the server went away" in (info.value.result.error or "")
    await rlm.aclose()


async def test_a_cancelled_run_reports_its_end() -> None:
    """A run cancelled mid-cell still emits RunFinished, with stop_reason 'cancelled'."""
    events: list[Event] = []
    rlm = RecursiveLM("m", provider=ScriptedProvider([code("import time\ntime.sleep(30)")]))
    with anyio.move_on_after(1.0) as scope:
        await rlm.acomplete("ctx", "q", on_event=events.append)
    assert scope.cancelled_caught
    assert isinstance(events[-1], RunFinished)
    assert events[-1].result.stop_reason == "cancelled"
    assert events[-1].result.trajectory.turns[0].cells[0].code.startswith("import time")
    await rlm.aclose()


async def test_a_failing_child_run_ends_as_an_error_and_its_parent_goes_on() -> None:
    """A child run whose model fails ends with 'error'; the parent's code sees an 'Error:' answer."""

    def policy(request: CompletionRequest) -> str:
        if "context itself" in request.messages[1].content:  # the child run (query-less)
            raise APIConnectionError("child model down", provider="scripted")
        if len(request.messages) == 2:
            return code("print(rlm_query('go deeper')[:6])")
        return "FINAL(parent done)"

    events: list[Event] = []
    rlm = RecursiveLM("m", provider=ScriptedProvider(policy), max_depth=2)
    result = await rlm.acomplete("ctx", "q", on_event=events.append)
    assert result.answer == "parent done"
    ends = {e.depth: e.result.stop_reason for e in events if isinstance(e, RunFinished)}
    assert ends == {0: "final_answer", 1: "error"}
    call = result.trajectory.turns[0].cells[0].sub_calls[0]
    assert call.child is not None and call.child.stop_reason == "error"
    assert result.trajectory.turns[0].cells[0].stdout == "Error:\n"
    await rlm.aclose()


async def test_wall_time_stops_every_level_as_a_limit() -> None:
    """At the wall-time deadline each run of the tree ends with 'limit', the root raising it."""

    def policy(request: CompletionRequest) -> str:
        if "context itself" in request.messages[1].content:  # the child run (query-less)
            return code("import time\ntime.sleep(30)")
        return code("print(rlm_query('go deeper'))")

    events: list[Event] = []
    rlm = RecursiveLM(
        "m", provider=ScriptedProvider(policy), max_depth=2, limits=Limits(max_wall_time=1.5)
    )
    with pytest.raises(LimitExceededError) as info:
        await rlm.acomplete("ctx", "q", on_event=events.append)
    assert info.value.limit == "wall_time"
    assert info.value.result is not None and info.value.result.stop_reason == "limit"
    ends = {e.depth: e.result.stop_reason for e in events if isinstance(e, RunFinished)}
    assert ends == {0: "limit", 1: "limit"}
    assert {e.depth for e in events if isinstance(e, LimitReached)} == {0, 1}
    assert [e.depth for e in events if isinstance(e, RunStarted)] == [0, 1]
    await rlm.aclose()


async def test_names_with_a_colon_reach_the_server_whole_on_every_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An OpenRouter-style model name is sent unchanged on every turn and sub-call."""
    name = "meta-llama/llama-3.3-70b-instruct:free"

    def reply(body: dict[str, Any]) -> str:
        if body["messages"][0]["role"] != "system":
            return "sub"
        turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
        return code("print(llm_query_batched(['a', 'b']))") if turn < 3 else "FINAL(ok)"

    with FakeChatServer(reply=reply) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        async with RecursiveLM(name) as rlm:
            result = await rlm.acomplete("ctx", "q")
        models = {r.json["model"] for r in server.requests}
    assert result.answer == "ok"
    assert len(server.requests) == 10
    assert models == {name}


async def test_astream_of_a_failed_run_ends_with_its_result_then_raises() -> None:
    """astream yields RunFinished ('error') as its last event, then raises the run's error."""
    failure = APIConnectionError("down", provider="scripted")
    rlm = RecursiveLM("m", provider=ScriptedProvider([failure]))
    seen: list[Event] = []

    async def consume() -> None:
        async for event in rlm.astream("ctx", "q"):
            seen.append(event)

    with pytest.raises(APIConnectionError):
        await consume()
    assert isinstance(seen[-1], RunFinished) and seen[-1].result.stop_reason == "error"
    await rlm.aclose()


class _Context(str):
    """A str that a weak reference can follow."""


def _memory_policy(ending: str) -> Any:
    def policy(request: CompletionRequest) -> str:
        if ending == "error" and len(request.messages) > 2:
            raise APIConnectionError("down", provider="scripted")
        if ending in ("limit", "cancelled") or len(request.messages) == 2:
            return code("print(len(context))")
        return "FINAL(ok)"

    return policy


def _memory_rlm(ending: str) -> RecursiveLM:
    limits = Limits(max_model_calls=2) if ending == "limit" else Limits()
    return RecursiveLM("m", provider=ScriptedProvider(_memory_policy(ending)), limits=limits)


@pytest.fixture
def no_gc() -> Any:
    """The cyclic garbage collector off for the test (reference counting only)."""
    gc.collect()
    gc.disable()
    yield
    gc.collect()  # now, not in the middle of a later test
    gc.enable()


@pytest.mark.parametrize("ending", ["answer", "limit", "error"])
def test_a_sync_run_frees_its_context_and_leaves_no_cycle(ending: str) -> None:
    """complete() keeps nothing of the run but its result: the context goes without a GC pass."""
    rlm = _memory_rlm(ending)
    with contextlib.suppress(LimitExceededError, APIConnectionError):
        rlm.complete("warm-up", "q")  # imports, schemas, the fork server: made once, kept
    gc.collect()
    gc.disable()
    try:
        _one_sync_run(rlm)
    finally:
        gc.collect()
        gc.enable()


def _one_sync_run(rlm: RecursiveLM) -> None:
    context = _Context("needle " * 10_000)
    alive = weakref.ref(context)
    with contextlib.suppress(LimitExceededError, APIConnectionError):
        rlm.complete(context, "q")
    del context
    assert alive() is None
    assert gc.collect() == 0, "a finished run left cyclic garbage"


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize("ending", ["answer", "limit", "error", "cancelled"])
async def test_an_async_run_frees_its_context_without_a_gc_pass(ending: str) -> None:
    """After acomplete() ends (answered, limited, failed or cancelled) its context is freed."""
    rlm = _memory_rlm(ending)
    context = _Context("needle " * 10_000)
    alive = weakref.ref(context)
    with (
        contextlib.suppress(LimitExceededError, APIConnectionError),
        anyio.move_on_after(0.5 if ending == "cancelled" else 30),
    ):
        await rlm.acomplete(context, "q")
    del context
    assert alive() is None
    await rlm.aclose()
