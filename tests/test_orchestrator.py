"""RecursiveLM end to end with the scripted provider and real REPL workers."""

from __future__ import annotations

import re

import pytest
from structlog.testing import capture_logs

from rlm_sdk import (
    CompletionRequest,
    ConfigurationError,
    LimitExceededError,
    Limits,
    RecursiveLM,
    REPLOptions,
    RunFinished,
)
from rlm_sdk.testing import ScriptedProvider

pytestmark = pytest.mark.integration

F = "```"


def code(src: str) -> str:
    return f"Let me run this.\n{F}repl\n{src}\n{F}"


def rlm_with(replies: object, **kw: object) -> tuple[RecursiveLM, ScriptedProvider]:
    provider = ScriptedProvider(replies)  # type: ignore[arg-type]
    return RecursiveLM("root-model", sub_model="sub-model", provider=provider, **kw), provider  # type: ignore[arg-type]


async def test_two_turn_run_answers_and_never_sends_the_context() -> None:
    """Code runs in the worker, its output reaches the model, FINAL ends the run; the context never enters a prompt."""
    secret_context = "alpha\nbeta\nThe magic number is 4242\ngamma"
    rlm, provider = rlm_with(
        [
            code("hits = [l for l in context.splitlines() if 'magic' in l]\nprint(hits)"),
            lambda req: "FINAL(" + re.search(r"is (\d+)", req.messages[-1].content).group(1) + ")",
        ]
    )
    result = await rlm.acomplete(secret_context, "What is the magic number?")
    assert result.answer == "4242"
    assert result.stop_reason == "final_answer"
    assert result.iterations == 2
    assert result.usage.calls == 2
    assert result.usage.models["root-model"].calls == 2
    for request in provider.requests:
        assert all(secret_context not in m.content for m in request.messages)
    assert all("4242" not in m.content for m in provider.requests[0].messages)
    assert (
        f"a str of {len(secret_context)} characters (4 lines)"
        in provider.requests[0].messages[0].content
    )
    assert "['The magic number is 4242']" in provider.requests[1].messages[-1].content
    cell = result.trajectory.turns[0].cells[0]
    assert cell.stdout.strip() == "['The magic number is 4242']"


async def test_first_request_holds_only_system_and_query() -> None:
    """The root's first request is the system prompt and the query: no part of the context."""
    rlm, provider = rlm_with(["FINAL(x)"])
    await rlm.acomplete("TOP-SECRET-CONTENT " * 100, "q?")
    first = provider.requests[0].messages
    assert [m.role for m in first] == ["system", "user"]
    assert all("TOP-SECRET-CONTENT" not in m.content for m in first)
    assert "The query: q?" in first[1].content


async def test_final_var_reads_a_variable_made_by_the_same_reply() -> None:
    """Code runs before the final answer is read, so FINAL_VAR may name what that code created."""
    rlm, _ = rlm_with([code("result = context.upper()") + "\nFINAL_VAR(result)"])
    result = await rlm.acomplete("shout", "upper?")
    assert result.answer == "SHOUT"
    assert result.stop_reason == "final_var"


async def test_final_var_unknown_name_lists_variables_and_continues() -> None:
    """FINAL_VAR of a missing variable is not an answer: the model is told which exist."""
    rlm, provider = rlm_with([code("found = 7"), "FINAL_VAR(missing)", "FINAL_VAR(found)"])
    result = await rlm.acomplete("ctx", "q")
    assert result.answer == "7"
    feedback = provider.requests[2].messages[-1].content
    assert "no REPL variable named 'missing'" in feedback and "found (int)" in feedback


@pytest.mark.parametrize(
    "src",
    [
        pytest.param("v = 'from-code'\nFINAL_VAR(v)", id="final-var-call-in-code"),
        pytest.param(
            "answer['content'] = 'from-code'\nanswer['ready'] = True", id="answer-dict-ready"
        ),
    ],
)
async def test_code_can_end_the_run(src: str) -> None:
    """FINAL_VAR(...) called in a cell and answer['ready'] = True both end the run."""
    rlm, provider = rlm_with([code(src)])
    result = await rlm.acomplete("ctx", "q")
    assert result.answer == "from-code"
    assert result.stop_reason == "final_var"
    assert len(provider.requests) == 1


async def test_reply_without_code_or_answer_gets_a_reminder() -> None:
    """A reply with neither code nor a final answer is answered with a reminder."""
    rlm, provider = rlm_with(["I am thinking.", f"{F}repl\nx = 1", "FINAL(done)"])
    result = await rlm.acomplete("ctx", "q")
    assert result.answer == "done"
    assert "no ```repl block to run" in provider.requests[1].messages[-1].content
    assert "never closed" in provider.requests[2].messages[-1].content


async def test_iteration_limit_asks_for_a_last_answer() -> None:
    """At the iteration limit one last call asks for the best final answer."""
    rlm, provider = rlm_with(
        [code("print(1)"), code("print(2)"), "Best guess.\nFINAL(two)"], max_iterations=2
    )
    result = await rlm.acomplete("ctx", "q")
    assert result.stop_reason == "max_iterations"
    assert result.answer == "two"
    assert result.iterations == 3
    assert "used every turn" in provider.requests[-1].messages[-1].content


async def test_iteration_limit_without_final_uses_the_reply() -> None:
    """If the last call gives no FINAL, its text is the best answer available."""
    rlm, _ = rlm_with([code("print(1)"), "  plain words  "], max_iterations=1)
    result = await rlm.acomplete("ctx", "q")
    assert (result.answer, result.stop_reason) == ("plain words", "max_iterations")


async def test_cell_errors_are_shown_to_the_model() -> None:
    """An exception in a cell is fed back to the model, and the run goes on."""
    rlm, provider = rlm_with([code("1/0"), "FINAL(recovered)"])
    result = await rlm.acomplete("ctx", "q")
    assert result.answer == "recovered"
    assert "ZeroDivisionError" in provider.requests[1].messages[-1].content
    assert result.trajectory.turns[0].cells[0].error_type == "ZeroDivisionError"


def _nesting_policy(request: CompletionRequest) -> str:
    """Every RLM level asks one level deeper and wraps the answer in brackets; leaves say 'leaf'."""
    messages = request.messages
    if messages[0].role != "system":
        return "leaf"
    seen = [m.content for m in messages if m.role == "user"][1:]
    if not seen:
        return code("inner = rlm_query('go deeper')\nprint('inner=' + inner)")
    inner = re.search(r"inner=(\S+)", seen[-1]).group(1)  # type: ignore[union-attr]
    return f"FINAL([{inner}])"


@pytest.mark.parametrize(
    ("depth", "answer", "calls"), [(1, "[leaf]", 3), (2, "[[leaf]]", 5), (3, "[[[leaf]]]", 7)]
)
async def test_recursion_depth(depth: int, answer: str, calls: int) -> None:
    """rlm_query starts a child RLM with its own REPL until max_depth, where it is a plain call."""
    rlm, _ = rlm_with(_nesting_policy, max_depth=depth)
    result = await rlm.acomplete("top context", "nest")
    assert result.answer == answer
    assert result.usage.calls == calls
    # The trajectory nests one child per level, each with its own run id and depth.
    traj, seen_depth = result.trajectory, 0
    while True:
        call = traj.turns[0].cells[0].sub_calls[0]
        assert call.kind == "rlm"
        if call.child is None:
            assert call.response == "leaf"
            break
        seen_depth += 1
        assert call.child.depth == seen_depth and call.child.parent_run_id == traj.run_id
        assert call.child.turns[0].cells, "the child ran code in its own REPL"
        traj = call.child
    assert seen_depth == depth - 1


async def test_batched_sub_calls_keep_order_and_isolate_failures() -> None:
    """llm_query_batched returns answers in input order; one failed sub-call is an 'Error:' string."""

    def policy(request: CompletionRequest) -> str:
        if request.messages[0].role != "system":
            prompt = request.messages[-1].content
            if prompt == "boom":
                raise RuntimeError("not a provider error")
            return prompt.upper()
        if len(request.messages) == 2:
            return code(
                "out = llm_query_batched(['a', 'boom', 'c', 'd'])\nprint(out[0], out[2], out[3], out[1][:6])"
            )
        return "FINAL(ok)"

    rlm, provider = rlm_with(policy)
    result = await rlm.acomplete("ctx", "q")
    assert result.answer == "ok"
    assert "A C D Error:" in provider.requests[-1].messages[-1].content
    calls = result.trajectory.turns[0].cells[0].sub_calls
    assert sorted(c.prompt for c in calls) == ["a", "boom", "c", "d"]
    assert [c.prompt for c in calls if c.error] == ["boom"]


async def test_failed_sub_call_returns_error_string() -> None:
    """A provider error in a sub-call reaches the code as a string starting with 'Error:'."""
    from rlm_sdk import RateLimitError

    def policy(request: CompletionRequest) -> str:
        if request.messages[0].role != "system":
            raise RateLimitError("slow down", status_code=429)
        if len(request.messages) == 2:
            return code("r = llm_query('hi')\nprint(r[:6])")
        return "FINAL(ok)"

    rlm, provider = rlm_with(policy)
    result = await rlm.acomplete("ctx", "q")
    assert "Error:" in provider.requests[-1].messages[-1].content
    call = result.trajectory.turns[0].cells[0].sub_calls[0]
    assert call.error is not None and "RateLimitError" in call.error


async def test_budget_on_model_calls_raises_with_partial_result() -> None:
    """Exceeding max_model_calls raises LimitExceededError carrying the trajectory so far."""
    rlm, _ = rlm_with(
        [code("print(1)"), code("print(2)"), "FINAL(x)"], limits=Limits(max_model_calls=2)
    )
    with pytest.raises(LimitExceededError) as info:
        await rlm.acomplete("ctx", "q")
    assert info.value.limit == "model_calls"
    assert info.value.result is not None
    assert info.value.result.iterations == 2
    assert info.value.result.stop_reason == "limit"


async def test_budget_can_return_instead_of_raise() -> None:
    """With on_limit='return' the run returns its result with the reason recorded."""
    rlm, _ = rlm_with([code("print(1)")] * 5, limits=Limits(max_tokens=1), on_limit="return")
    result = await rlm.acomplete("ctx", "q")
    assert result.stop_reason == "limit"
    assert result.error is not None and "tokens" in result.error


async def test_events_stream_in_order_and_end_with_the_result() -> None:
    """astream yields every event with increasing sequence numbers, ending with RunFinished."""
    rlm, _ = rlm_with(_nesting_policy, max_depth=2)
    events = [e async for e in rlm.astream("ctx", "q")]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert len({e.seq for e in events}) == len(events)
    assert isinstance(events[-1], RunFinished) and events[-1].result.answer == "[[leaf]]"
    assert [(e.type, e.depth) for e in events] == [
        ("run_started", 0),
        ("turn_started", 0),
        ("model_request", 0),
        ("model_response", 0),
        ("reply_parsed", 0),
        ("cell_started", 0),
        ("sub_call_started", 0),
        ("child_run_started", 0),
        ("run_started", 1),
        ("turn_started", 1),
        ("model_request", 1),
        ("model_response", 1),
        ("reply_parsed", 1),
        ("cell_started", 1),
        ("sub_call_started", 1),
        ("model_request", 1),
        ("model_response", 1),
        ("sub_call_finished", 1),
        ("cell_finished", 1),
        ("turn_finished", 1),
        ("turn_started", 1),
        ("model_request", 1),
        ("model_response", 1),
        ("reply_parsed", 1),
        ("turn_finished", 1),
        ("final_answer", 1),
        ("run_finished", 1),
        ("sub_call_finished", 0),
        ("cell_finished", 0),
        ("turn_finished", 0),
        ("turn_started", 0),
        ("model_request", 0),
        ("model_response", 0),
        ("reply_parsed", 0),
        ("turn_finished", 0),
        ("final_answer", 0),
        ("run_finished", 0),
    ]
    child_events = [e for e in events if e.depth == 1]
    root_id = events[0].run_id
    assert all(e.parent_run_id == root_id for e in child_events)


async def test_run_logs_are_bound_to_run_and_depth() -> None:
    """The run logs namespaced events with run id and depth bound."""
    rlm, _ = rlm_with(["FINAL(x)"])
    with capture_logs() as logs:
        result = await rlm.acomplete("ctx", "q")
    started = [entry for entry in logs if entry["event"] == "rlm.run_started"]
    assert started and started[0]["run_id"] == result.run_id and started[0]["depth"] == 0
    assert any(entry["event"] == "rlm.run_finished" for entry in logs)


async def test_chat_completions_drop_in() -> None:
    """rlm.chat.completions.create maps messages to a run and returns a chat-completion shape."""
    rlm, provider = rlm_with([code("print(len(context))"), "FINAL(it is long)"])
    completion = await rlm.chat.completions.create(
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "doc one"},
            {"role": "user", "content": "How long?"},
        ]
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "it is long"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.rlm.usage.total_tokens > 0
    assert completion.id.startswith("chatcmpl-rlm-")
    assert "a list of 2 items" in provider.requests[0].messages[0].content
    assert "The query: How long?" in provider.requests[0].messages[1].content


def test_sync_twin_runs_and_refuses_inside_a_loop() -> None:
    """complete() runs on its own loop; inside a running loop it says to await acomplete()."""
    rlm, _ = rlm_with(["FINAL(sync ok)", "FINAL(again)"])
    assert rlm.complete("ctx", "q").answer == "sync ok"
    assert rlm.complete("ctx", "q").answer == "again"

    import anyio

    async def inside() -> None:
        with pytest.raises(ConfigurationError, match="await acomplete"):
            rlm.complete("ctx", "q")

    anyio.run(inside)


def test_missing_model_is_a_configuration_error() -> None:
    """No model and no RLM_MODEL is a clear configuration error."""
    with pytest.raises(ConfigurationError, match="RLM_MODEL"):
        RecursiveLM()


async def test_price_table_costs_calls_and_bounds_spend() -> None:
    """A user price table gives cost where the provider reports none, and max_cost stops the run."""
    prices = {"root-model": (1_000_000.0, 0.0)}  # $1 per prompt token: the first call costs dollars
    rlm, _ = rlm_with(
        [code("print(1)"), "FINAL(x)"],
        prices=prices,
        limits=Limits(max_cost=0.5),
        on_limit="return",
    )
    result = await rlm.acomplete("ctx", "q")
    assert result.stop_reason == "limit"
    assert result.usage.cost is not None and result.usage.cost > 0.5
    assert result.trajectory.turns[0].cost == result.usage.cost
    assert result.error is not None and "cost" in result.error


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"isolation": "bogus"}, "isolation"),
        ({"max_depth": -1}, "max_depth"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"on_limit": "ignore"}, "on_limit"),
        ({"max_workers": 0}, "max_workers"),
    ],
)
def test_invalid_options_are_configuration_errors(kwargs: dict[str, object], problem: str) -> None:
    """A bad keyword is a ConfigurationError naming it, not a pydantic error."""
    with pytest.raises(ConfigurationError, match=problem):
        RecursiveLM("m", **kwargs)  # type: ignore[arg-type]


def test_grouped_options_and_their_shortcuts() -> None:
    """REPL options and limits travel as models; the simple keywords override their one field."""
    rlm = RecursiveLM(
        "m",
        repl_options=REPLOptions(cell_timeout=5, allow_network=True),
        isolation="none",
        limits=Limits(max_model_calls=9, max_depth=3),
        max_iterations=4,
    )
    assert rlm.repl_options == REPLOptions(cell_timeout=5, allow_network=True, isolation="none")
    assert rlm.limits == Limits(max_model_calls=9, max_depth=3, max_iterations=4)


async def test_options_are_read_when_each_run_starts() -> None:
    """Changing repl_options between runs reaches the next run: a short cell_timeout interrupts."""
    rlm, _ = rlm_with([code("import time\ntime.sleep(3)"), "FINAL(a)"] * 2)
    rlm.repl_options = rlm.repl_options.model_copy(update={"cell_timeout": 0.3})
    result = await rlm.acomplete("ctx", "q")
    assert result.trajectory.turns[0].cells[0].timed_out
    await rlm.aclose()
