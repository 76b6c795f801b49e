"""Whole RLM runs against a real model: whatever it writes, the run ends well and is recorded.

SmolLM2-135M does not follow the RLM protocol well: it writes prose, half-closed fences,
code that fails, answers too early. That is the point of these tests. They assert what
must hold for any reply, never what the model says.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rlm_sdk import (
    CompletionRequest,
    CompletionResponse,
    Event,
    JSONLRecorder,
    Limits,
    ModelResponse,
    OpenAICompatibleProvider,
    RecursiveLM,
    ReplyParsed,
    RLMResult,
    Trajectory,
    load_runs,
)
from tests.helpers import descendants
from tests.realmodel.llama import MODEL

pytestmark = [pytest.mark.realmodel, pytest.mark.integration, pytest.mark.timeout(300)]

STOP_REASONS = {"final_answer", "final_var", "max_iterations", "limit"}
MAX_TOKENS = 64
CONTEXT = "\n".join(
    f"Day {d}: the weather was {w}." for d, w in enumerate(["sunny", "rainy", "windy"] * 10, 1)
)
ROOT_MARK = "[root]"
F = "```"


def replies_of(run_id: str, events: list[Event]) -> list[str]:
    """The texts of a run's own turns (its sub-calls' replies excluded), in order."""
    return [
        e.text
        for e in events
        if isinstance(e, ModelResponse) and e.run_id == run_id and e.purpose != "sub_call"
    ]


def assert_recorded(trajectory: Trajectory, events: list[Event]) -> None:
    """Every reply of this run and of its child runs is a turn of its trajectory."""
    assert trajectory.stop_reason in STOP_REASONS | {"error"}
    assert [t.reply for t in trajectory.turns] == replies_of(trajectory.run_id, events)
    for turn in trajectory.turns:
        assert turn.finish_reason in ("stop", "length")
        assert turn.completion_tokens <= MAX_TOKENS
        for call in (c for cell in turn.cells for c in cell.sub_calls):
            if call.child is not None:
                assert_recorded(call.child, events)


def wait_for_no_children(baseline: set[int], seconds: float = 10) -> set[int]:
    """Processes started below this one since ``baseline`` (reaping takes a moment)."""
    deadline = time.monotonic() + seconds
    while (left := descendants() - baseline) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


async def run_recorded(rlm: RecursiveLM, path: Path, query: str) -> tuple[RLMResult, list[Event]]:
    events: list[Event] = []
    with JSONLRecorder(path) as recorder:

        def sink(event: Event) -> None:
            events.append(event)
            recorder(event)

        result = await rlm.acomplete(CONTEXT, query, on_event=sink)
    return result, events


async def test_a_run_ends_with_a_stop_reason_and_records_every_reply(
    real_provider: OpenAICompatibleProvider, tmp_path: Path
) -> None:
    """A budgeted run on the real model ends with a stop reason, every reply recorded in the
    trajectory and the JSONL file, usage counted, and no process left behind."""
    baseline = descendants()
    path = tmp_path / "run.jsonl"
    limits = Limits(max_iterations=3, max_model_calls=12, max_wall_time=150)
    async with RecursiveLM(
        MODEL,
        provider=real_provider,
        limits=limits,
        max_tokens=MAX_TOKENS,
        temperature=0.7,
        on_limit="return",
    ) as rlm:
        result, events = await run_recorded(rlm, path, "On which days was it windy?")

    assert result.stop_reason in STOP_REASONS
    assert result.trajectory.turns, "the model was never asked"
    assert_recorded(result.trajectory, events)
    responses = [e for e in events if isinstance(e, ModelResponse)]
    assert result.usage.calls == len(responses)
    assert result.usage.completion_tokens == sum(e.completion_tokens for e in responses)
    assert result.usage.prompt_tokens == sum(e.prompt_tokens for e in responses) > 0
    (saved,) = load_runs(path)
    assert saved.trajectory == result.trajectory
    assert saved.result == result
    assert wait_for_no_children(baseline) == set()


class FirstRootTurnScripted:
    """TEST DOUBLE for one reply only: the root's first turn is a fixed cell that starts two
    child runs with ``rlm_query_batched``, since a 135M model will not write one reliably.
    Every other request, the children's included, goes to the real model unchanged."""

    name = "first-root-turn-scripted"

    def __init__(self, real: OpenAICompatibleProvider) -> None:
        self.real = real

    async def acomplete(self, request: CompletionRequest) -> CompletionResponse:
        messages = request.messages
        is_root = any(m.role == "user" and ROOT_MARK in m.content for m in messages)
        if is_root and not any(m.role == "assistant" for m in messages):
            cell = (
                "parts = context.splitlines()\n"
                "answers = rlm_query_batched(['Which weather is named here? ' + '\\n'.join(parts[:5]),"
                " 'Which weather is named here? ' + '\\n'.join(parts[5:10])])\n"
                "for a in answers:\n    print(a)"
            )
            text = f"I will ask two child runs.\n{F}repl\n{cell}\n{F}"
            return CompletionResponse(text=text, model=request.model, finish_reason="stop")
        return await self.real.acomplete(request)

    async def aclose(self) -> None:
        """The real provider belongs to the test's fixture."""


async def test_depth_two_children_run_on_the_real_model(
    real_provider: OpenAICompatibleProvider, tmp_path: Path
) -> None:
    """Two ``rlm_query`` child runs, each with its own REPL, talk to the real server; their
    turns are recorded in the tree and the JSONL file, and every process is gone after."""
    baseline = descendants()
    path = tmp_path / "depth2.jsonl"
    async with RecursiveLM(
        MODEL,
        provider=FirstRootTurnScripted(real_provider),
        max_depth=2,
        limits=Limits(max_iterations=1, max_model_calls=8, max_wall_time=200),
        max_tokens=MAX_TOKENS,
        temperature=0.7,
        on_limit="return",
    ) as rlm:
        result, events = await run_recorded(rlm, path, f"{ROOT_MARK} Which kinds of weather?")

    assert result.stop_reason in STOP_REASONS
    first = result.trajectory.turns[0]
    assert first.finish_reason == "stop"
    calls = first.cells[0].sub_calls
    assert [c.kind for c in calls] == ["rlm", "rlm"]
    for call in calls:
        assert call.child is not None and call.child.depth == 1
        assert call.child.turns, "the child never asked the model"
        assert replies_of(call.child.run_id, events)  # its replies came from the real server
    assert_recorded(result.trajectory, events)
    (saved,) = load_runs(path)
    assert saved.trajectory == result.trajectory
    assert wait_for_no_children(baseline) == set()


class ToolsSpy:
    """A pass-through to the real provider that keeps each request's tool names: not a
    double, every reply is the real model's."""

    name = "tools-spy"
    supports_tools = True

    def __init__(self, real: OpenAICompatibleProvider) -> None:
        self.real = real
        self.sent_tools: list[list[str]] = []

    async def acomplete(self, request: CompletionRequest) -> CompletionResponse:
        self.sent_tools.append([t.name for t in request.tools or ()])
        return await self.real.acomplete(request)

    async def aclose(self) -> None:
        """The real provider belongs to the test's fixture."""


async def test_the_tool_protocol_on_a_server_that_ignores_tools(
    real_provider: OpenAICompatibleProvider, tmp_path: Path
) -> None:
    """llama.cpp's default chat format takes ``tools`` and answers in plain text, never with
    a tool call. With ``protocol="tools"`` every request offers the REPL as a tool, and every
    reply, having no tool call, is read as fenced text: the run still ends with a stop reason,
    each turn parsed and recorded."""
    spy = ToolsSpy(real_provider)
    async with RecursiveLM(
        MODEL,
        provider=spy,
        protocol="tools",
        limits=Limits(max_iterations=2, max_model_calls=6, max_wall_time=150),
        max_tokens=MAX_TOKENS,
        temperature=0.7,
        on_limit="return",
    ) as rlm:
        result, events = await run_recorded(rlm, tmp_path / "tools.jsonl", "Was day 3 windy?")

    assert result.stop_reason in STOP_REASONS
    assert result.trajectory.turns
    assert "repl" in spy.sent_tools[0]
    responses = [e for e in events if isinstance(e, ModelResponse)]
    assert responses and all(not r.tool_calls for r in responses)
    parsed = [e for e in events if isinstance(e, ReplyParsed)]
    assert 1 <= len(parsed) <= len(result.trajectory.turns)
    assert all(p.fence != "tool_call" for p in parsed)
    assert_recorded(result.trajectory, events)
