"""The run within its models' context windows: sub-call prompts that cannot fit, providers
refusing a prompt as too long, and a long run's history compacted (scripted test/demo
doubles stand in for the models; the REPL workers are real)."""

from __future__ import annotations

import re

import pytest

from rlm_sdk import (
    BadRequestError,
    CompletionRequest,
    Event,
    HistoryCompacted,
    ModelRequest,
    RecursiveLM,
)
from rlm_sdk._protocol import compaction_prompt
from rlm_sdk.testing import ScriptedProvider

pytestmark = pytest.mark.integration

F = "```"
SUMMARY_ASK = compaction_prompt(1, "history").split(" turns ")[0].rsplit(" ", 1)[0]
"""The start of the compaction request, for the stand-in model to recognise it."""


def is_compaction(request: CompletionRequest) -> bool:
    return request.messages[-1].content.startswith(SUMMARY_ASK)


def too_long(model: str) -> BadRequestError:
    return BadRequestError(
        f"{model} answered 400: This model's maximum context length is 4096 tokens.",
        provider="openai",
        status_code=400,
        body_excerpt='{"error": {"code": "context_length_exceeded"}}',
    )


async def test_a_sub_call_too_long_for_its_model_is_not_sent() -> None:
    """An llm_query prompt over the sub-model's window returns Error: ... and calls nothing."""

    def reply(request: CompletionRequest) -> str:
        if request.model == "sub":
            raise AssertionError("the oversize prompt reached the provider")
        if len(request.messages) == 2:
            return f"{F}repl\nprint(llm_query('x' * 20_000))\n{F}"
        return "FINAL(done)"

    provider = ScriptedProvider(reply)
    rlm = RecursiveLM("root", sub_model="sub", provider=provider, context_windows={"sub": 2_000})
    result = await rlm.acomplete("ctx", "q")
    out = result.trajectory.turns[0].cells[0].stdout
    assert out.startswith("Error: the prompt is about 5,719 tokens (estimated)")
    assert "context window of 2,000 tokens" in out and "Split the text" in out
    assert [r.model for r in provider.requests] == ["root", "root"]
    assert result.usage.models["root"].calls == 2 and "sub" not in result.usage.models


async def test_a_provider_refusing_a_sub_call_as_too_long_gives_the_same_message() -> None:
    """The provider's own context-length error becomes the same Error: ... answer."""

    def reply(request: CompletionRequest) -> str:
        if request.model == "sub":
            raise too_long("openai")
        if len(request.messages) == 2:
            return f"{F}repl\nprint(llm_query('y' * 700))\n{F}"
        return "FINAL(done)"

    rlm = RecursiveLM("root", sub_model="sub", provider=ScriptedProvider(reply))
    result = await rlm.acomplete("ctx", "q")
    call = result.trajectory.turns[0].cells[0].sub_calls[0]
    assert call.response.startswith("Error: the prompt is about 204 tokens (estimated)")
    assert "sub refused it as longer than its context window" in call.response


def _long_run_policy(request: CompletionRequest) -> str:
    """Counts in the REPL for 59 turns, printing a few hundred characters a turn, then answers
    with the count; asked for a summary, it summarises what the history shows."""
    if is_compaction(request):
        counts = re.findall(r"total=(\d+)", " ".join(m.content for m in request.messages))
        return f"I have been counting turns in `total`; the last count I saw was {counts[-1]}."
    last = request.messages[-1].content
    if last.startswith("REPL output:\nTrue"):
        return "FINAL_VAR(total)"
    seen = re.findall(r"total=(\d+)", last)
    total = int(seen[-1]) if seen else 0
    if total >= 59:
        return f"{F}repl\nprint(len(history) > 0)\n{F}"
    return (
        f"Step {total + 1}: counting.\n{F}repl\ntotal = globals().get('total', 0) + 1\n"
        f"print(f'total={{total}}', 'x' * 300)\n{F}"
    )


async def test_a_sixty_turn_run_stays_within_a_small_window_and_answers() -> None:
    """60 turns against a 3,000-token window: no request over the window, the older turns
    summarised by the model (and counted), kept in the REPL as `history`, and the answer right."""
    window = 3_000
    events: list[Event] = []
    provider = ScriptedProvider(_long_run_policy)
    rlm = RecursiveLM(
        "root",
        provider=provider,
        max_iterations=70,
        context_windows={"root": window},
        on_event=events.append,
    )
    result = await rlm.acomplete("ctx", "Count to 59 in the REPL.")
    assert result.answer == "59"
    for request in provider.requests:  # an independent measure: 3.5 characters a token
        size = sum(len(m.content) + 14 for m in request.messages) / 3.5
        assert size <= window, f"a request of about {size:.0f} tokens"
    compactions = [e for e in events if isinstance(e, HistoryCompacted)]
    assert len(compactions) >= 3
    assert all(c.tokens_after < c.tokens_before and c.variable == "history" for c in compactions)
    asks = [e for e in events if isinstance(e, ModelRequest) and e.purpose == "compaction"]
    assert len(asks) == len([r for r in provider.requests if is_compaction(r)]) >= 3
    assert result.usage.calls == len(provider.requests)
    assert result.trajectory.turns[-1].final_answer == "59"
    assert any(t.compaction and "counting" in t.compaction for t in result.trajectory.turns)
    checked = [c for t in result.trajectory.turns for c in t.cells if "history" in c.code]
    assert checked and checked[-1].stdout.strip() == "True"


async def test_a_root_prompt_refused_as_too_long_is_compacted_and_sent_again() -> None:
    """No known window: the provider's refusal compacts the history once and the turn goes on."""
    refused: list[int] = []

    def reply(request: CompletionRequest) -> str:
        if is_compaction(request):
            return "Summary: printed a long line twice."
        if sum(len(m.content) for m in request.messages) > 6_000 and not refused:
            refused.append(len(request.messages))
            raise too_long("openai")
        if sum(1 for m in request.messages if m.role == "assistant") >= 3:
            return "FINAL(ok)"
        return f"{F}repl\nprint('z' * 2_500)\n{F}"

    events: list[Event] = []
    rlm = RecursiveLM("unknown-model", provider=ScriptedProvider(reply), on_event=events.append)
    result = await rlm.acomplete("ctx", "q")
    assert result.answer == "ok"
    assert refused
    assert [e.window for e in events if isinstance(e, HistoryCompacted)]


async def test_compaction_can_be_turned_off() -> None:
    """compact_at=None: a history over the threshold is sent as it is."""
    events: list[Event] = []
    replies = [f"{F}repl\nprint('w' * 3_000)\n{F}"] * 3 + ["FINAL(ok)"]
    rlm = RecursiveLM(
        "root",
        provider=ScriptedProvider(replies),
        context_windows={"root": 100_000},
        compact_at=None,
        on_event=events.append,
    )
    assert (await rlm.acomplete("ctx", "q")).answer == "ok"
    assert not [e for e in events if isinstance(e, HistoryCompacted)]
