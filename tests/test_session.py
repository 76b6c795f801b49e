"""Sessions (``rlm.session()``) end to end: the ScriptedProvider test double as the model,
real REPL workers underneath."""

from __future__ import annotations

import os
import re
import time

import anyio
import pytest

from rlm_sdk import (
    ConfigurationError,
    Corpus,
    HistoryCompacted,
    RecursiveLM,
    SessionClosedError,
    SubCallFinished,
)
from rlm_sdk.testing import ScriptedProvider

pytestmark = pytest.mark.integration

F = "```"


def code(src: str) -> str:
    return f"Let me run this.\n{F}repl\n{src}\n{F}"


def rlm_with(replies: object, **kw: object) -> tuple[RecursiveLM, ScriptedProvider]:
    provider = ScriptedProvider(
        replies, **({"cost_per_call": kw.pop("cost")} if "cost" in kw else {})
    )  # type: ignore[arg-type]
    return RecursiveLM("root-model", sub_model="sub-model", provider=provider, **kw), provider  # type: ignore[arg-type]


def output_of(request: object) -> str:
    """The last message of a scripted request: what the model was just told."""
    return request.messages[-1].content  # type: ignore[attr-defined,no-any-return]


async def gone(pid: int, within: float = 10.0) -> bool:
    """Whether process ``pid`` has disappeared (reaped) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        await anyio.sleep(0.02)
    return False


async def test_variables_survive_between_queries_in_one_worker() -> None:
    """A follow-up query runs in the same worker: what the first query's code bound is still there,
    and the model sees the earlier turns and the follow-up prompt."""
    rlm, provider = rlm_with(
        [
            code("words = context.split()\nprint(len(words))"),
            "FINAL_VAR(words)",
            code("print(sorted(words)[0])"),
            lambda req: "FINAL(" + output_of(req).split()[-1] + ")",
        ]
    )
    async with rlm, rlm.session() as session:
        first = await session.acomplete("pear apple fig", "Which words?")
        pid = session.pid
        second = await session.acomplete("Which comes first alphabetically?")
        assert session.pid == pid is not None
    assert first.answer == "['pear', 'apple', 'fig']"
    assert second.answer == "apple"
    follow_up = provider.requests[2].messages
    assert follow_up[1].content.startswith("The query: Which words?")
    assert "FINAL_VAR(words)" in follow_up[-2].content
    assert "(The answer given: ['pear', 'apple', 'fig'])" in follow_up[-2].content
    assert follow_up[-1].content.startswith(
        "A follow-up query in the same conversation: Which comes first alphabetically?"
    )
    assert "SHOW_VARS()" in follow_up[0].content
    assert [r.answer for r in session.results] == [first.answer, second.answer]


async def test_a_later_context_is_context_1_and_the_model_is_told() -> None:
    """A context given with a follow-up is loaded into the live worker as `context_1`; `context`
    stays the first, and the system prompt names both."""
    rlm, provider = rlm_with(
        [
            code("n = len(context)"),
            "FINAL_VAR(n)",
            code("print(context, context_1['k'], n)"),
            lambda req: "FINAL(" + output_of(req).removeprefix("REPL output:\n") + ")",
        ]
    )
    async with rlm, rlm.session() as session:
        await session.acomplete("first text", "How long?")
        result = await session.acomplete({"k": [1, 2]}, "What is k?")
        assert session.contexts == ["context", "context_1"]
    assert result.answer == "first text [1, 2] 10"
    system = provider.requests[2].messages[0].content
    assert "`context` (a str of 10 characters" in system
    assert "`context_1` (a dict with 1 keys: 'k')" in system
    assert "It comes with a new context, `context_1`." in provider.requests[2].messages[-1].content


async def test_closing_the_session_reaps_its_worker() -> None:
    """Leaving the session kills and reaps its worker: the PID disappears."""
    rlm, _ = rlm_with([code("x = 1"), "FINAL_VAR(x)"])
    async with rlm:
        async with rlm.session() as session:
            await session.acomplete("ctx", "q")
            pid = session.pid
            assert pid is not None and os.path.exists(f"/proc/{pid}")
        assert session.closed and session.pid is None
        assert await gone(pid)
        with pytest.raises(SessionClosedError, match="closed by its owner"):
            await session.acomplete("another")


async def test_an_idle_session_closes_itself_and_reaps_its_worker() -> None:
    """Past idle_timeout without a query, the session closes: worker reaped, later queries refused."""
    rlm, _ = rlm_with([code("x = 1"), "FINAL_VAR(x)"])
    async with rlm, rlm.session(idle_timeout=0.3) as session:
        await session.acomplete("ctx", "q")
        pid = session.pid
        assert pid is not None
        assert await gone(pid)
        assert session.closed
        with pytest.raises(SessionClosedError, match=r"idle for more than 0\.3 s"):
            await session.acomplete("again?")


async def test_a_busy_session_is_not_idle() -> None:
    """A query longer than idle_timeout keeps the session open; the clock starts when it ends."""
    rlm, _ = rlm_with([code("import time\ntime.sleep(0.6)\nx = 2"), "FINAL_VAR(x)", "FINAL(3)"])
    async with rlm, rlm.session(idle_timeout=0.3) as session:
        assert (await session.acomplete("ctx", "slow")).answer == "2"
        assert not session.closed
        assert (await session.acomplete("quick")).answer == "3"


async def test_usage_per_query_and_per_session() -> None:
    """Each result has its own query's usage; the session sums them, cost included."""
    rlm, _ = rlm_with(
        [code("a = llm_query('hi')"), "sub says hi", "FINAL_VAR(a)", "FINAL(two)"], cost=0.5
    )
    async with rlm, rlm.session() as session:
        first = await session.acomplete("ctx", "q1")
        second = await session.acomplete("q2")
    assert first.answer == "sub says hi"
    assert (first.usage.calls, second.usage.calls) == (3, 1)
    assert session.usage.calls == 4
    assert session.usage.models["sub-model"].calls == 1
    assert session.usage.cost == pytest.approx(2.0)
    assert first.run_id != second.run_id


async def test_sub_calls_are_served_by_the_query_that_runs() -> None:
    """The kept worker's sub-calls are charged to the query running now, not the first one."""
    rlm, _ = rlm_with(
        [
            code("x = 1"),
            "FINAL_VAR(x)",
            code("y = llm_query('second')"),
            "from the sub-model",
            "FINAL_VAR(y)",
        ]
    )
    finished: list[SubCallFinished] = []
    async with rlm, rlm.session() as session:
        await session.acomplete("ctx", "q1")
        second = await session.acomplete(
            "q2", on_event=lambda e: finished.append(e) if isinstance(e, SubCallFinished) else None
        )
    assert second.answer == "from the sub-model"
    assert [e.run_id for e in finished] == [second.run_id]
    assert second.usage.models["sub-model"].calls == 1


async def test_a_query_cancelled_in_a_cell_leaves_the_session_usable() -> None:
    """Cancelling a query mid-cell kills the worker; the next query gets a fresh one, and the
    model is told that variables were lost. The cancelled turns are not in the history."""
    rlm, provider = rlm_with(
        [
            code("x = 41"),
            "FINAL_VAR(x)",
            code("import time\ntime.sleep(30)"),
            code("print(globals().get('x'))"),
            lambda req: "FINAL(" + output_of(req) + ")",
        ]
    )
    async with rlm, rlm.session() as session:
        await session.acomplete("ctx", "q1")
        pid = session.pid
        assert pid is not None
        with anyio.move_on_after(1.5) as scope:
            await session.acomplete("hang")
        assert scope.cancelled_caught
        assert await gone(pid)
        result = await session.acomplete("is x still there?")
    told = provider.requests[4].messages[-1].content
    assert "restarted" in told and "None" in told
    assert "hang" not in " ".join(m.content for m in provider.requests[3].messages)
    assert result.answer is not None and "None" in result.answer
    assert len(session.results) == 2


def test_sync_twin_keeps_the_worker_between_calls() -> None:
    """`with rlm.session()` and `complete()`: variables survive; leaving reaps the worker."""
    rlm, _ = rlm_with(
        [
            code("x = 20"),
            "FINAL_VAR(x)",
            code("print(x + 1)"),
            lambda req: "FINAL(" + output_of(req).split()[-1] + ")",
        ]
    )
    with rlm.session() as session:
        assert session.complete("ctx", "q").answer == "20"
        assert session.complete("plus one?").answer == "21"
        pid = session.pid
    assert session.closed and pid is not None
    assert anyio.run(gone, pid)


async def test_misuse_raises_typed_errors() -> None:
    """Queries before entering, a non-text follow-up, a corpus added later, and complete()
    on an async session are refused with typed errors."""
    rlm, _ = rlm_with(["FINAL(a)"])
    session = rlm.session()
    with pytest.raises(SessionClosedError, match="enter the session first"):
        await session.acomplete("q")
    with pytest.raises(ConfigurationError, match="idle_timeout"):
        rlm.session(idle_timeout=0)
    async with rlm, session:
        with pytest.raises(ConfigurationError, match="str query"):
            await session.acomplete(["not", "a", "query"])  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="complete\\(\\) needs a session"):
            session.complete("q")
        assert (await session.acomplete("ctx", "q")).answer == "a"
        with pytest.raises(ConfigurationError, match="must be str, bytes, list or dict"):
            await session.acomplete(Corpus([__file__]), "read it")


async def test_a_long_conversation_is_compacted_and_keeps_the_current_query() -> None:
    """When the earlier turns near the window, they are summarised (full text in `history`),
    and the query being answered stays verbatim at the head of the history."""
    big = "x" * 6_000
    rlm, provider = rlm_with(
        [
            code(f"print('{big}')"),
            "FINAL(first)",
            "SUMMARY OF EARLIER TURNS",
            code("print(len(history))"),
            lambda req: "FINAL(" + re.sub(r"\D", "", output_of(req)) + ")",
        ],
        context_windows={"root-model": 4_000},
        compact_at=0.5,
    )
    events: list[HistoryCompacted] = []
    async with rlm, rlm.session() as session:
        await session.acomplete("ctx", "q1")
        result = await session.acomplete(
            "the second question",
            on_event=lambda e: events.append(e) if isinstance(e, HistoryCompacted) else None,
        )
    assert events and events[0].summary == "SUMMARY OF EARLIER TURNS"
    after = provider.requests[3].messages
    assert after[1].content.startswith("A follow-up query in the same conversation: the second")
    assert "SUMMARY OF EARLIER TURNS" in after[1].content
    assert result.answer is not None and int(result.answer) >= 2


async def test_a_follow_up_can_be_typed() -> None:
    """`output_type` types one query of a session: a value that does not match goes back to the
    model, a matching one is `result.output`, and the next query is plain text again."""
    from pydantic import BaseModel

    class Count(BaseModel):
        n: int

    rlm, provider = rlm_with(
        [
            code("words = context.split()"),
            "FINAL(three)",
            'FINAL({"n": "many"})',
            "FINAL_VAR(reply)",
            code("reply = {'n': len(words)}"),
            "FINAL_VAR(reply)",
            "FINAL(done)",
        ]
    )
    async with rlm, rlm.session() as session:
        plain = await session.acomplete("a b c", "How many words?")
        typed = await session.acomplete("As a count, please.", output_type=Count)
        after = await session.acomplete("Anything else?")
    assert plain.output is None and plain.answer == "three"
    assert typed.output == Count(n=3)
    assert after.output is None and after.answer == "done"
    rejected = provider.requests[3].messages[-1].content
    assert "n" in rejected and "integer" in rejected


async def test_an_answer_dict_is_not_offered_again_to_the_next_query() -> None:
    """A query that answered with `answer["ready"] = True` leaves nothing ready behind: the next
    query's first cell does not end it with the old answer."""
    rlm, _ = rlm_with(
        [
            code('answer["content"] = "first"\nanswer["ready"] = True'),
            code("print('still going')"),
            "FINAL(second)",
        ]
    )
    async with rlm, rlm.session() as session:
        first = await session.acomplete("text", "One?")
        second = await session.acomplete("Two?")
    assert first.answer == "first"
    assert second.answer == "second"
    assert second.iterations == 2
