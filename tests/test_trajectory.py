"""TrajectoryBuilder: a run's record is built once, from its events, live and from a file alike."""

from __future__ import annotations

import pytest

from rlm_sdk import CompletionRequest, Event, RecursiveLM
from rlm_sdk._trajectory import build_trajectories
from rlm_sdk._types import CellRecord, SubCallRecord, TurnRecord
from rlm_sdk.testing import ScriptedProvider

from .test_orchestrator import code

pytestmark = pytest.mark.integration


def _policy(request: CompletionRequest) -> str:
    """Root: a failing cell, then a fan-out and a child run; the child: one cell and an answer."""
    messages = request.messages
    if messages[0].role != "system":
        return f"sub:{messages[-1].content}"
    if "context itself" in messages[1].content:  # the child run: its context is its task
        return "FINAL(child)" if len(messages) > 2 else code("print('child cell')")
    turn = sum(1 for m in messages if m.role == "assistant")
    if turn == 0:
        return code("1 / 0")
    if turn == 1:
        return code("print(llm_query_batched(['a', 'b']), rlm_query('go deeper'))")
    return "FINAL(root)"


async def test_the_result_holds_the_trajectory_its_events_build() -> None:
    """Rebuilding a depth-2 run from its events gives the result's trajectory, equal field for field."""
    events: list[Event] = []
    rlm = RecursiveLM("m", provider=ScriptedProvider(_policy), max_depth=2)
    result = await rlm.acomplete("ctx", "q", on_event=events.append)
    await rlm.aclose()
    built = build_trajectories(events)
    (root, item), *rest = built.roots
    assert rest == [] and item is None
    assert root == result.trajectory
    assert built.results[root.run_id] == result
    first, second, last = root.turns
    assert first.cells[0].error_type == "ZeroDivisionError"
    calls = second.cells[0].sub_calls
    assert sorted((c.kind, c.response) for c in calls) == [
        ("llm", "sub:a"),
        ("llm", "sub:b"),
        ("rlm", "child"),
    ]
    child = next(c.child for c in calls if c.kind == "rlm")
    assert child is not None and child.answer == "child" and child.depth == 1
    assert child.turns[0].cells[0].stdout == "child cell\n"
    assert (last.final_answer, root.stop_reason) == ("root", "final_answer")


def test_events_of_an_unknown_run_are_ignored() -> None:
    """A file that starts mid-run (no run_started) yields no trajectory for that run, and no error."""
    from rlm_sdk import TurnStarted

    built = build_trajectories([TurnStarted(run_id="nobody", iteration=1)])
    assert built.roots == [] and built.runs == {}


def test_records_filled_from_events_accept_plain_field_copies() -> None:
    """The builder copies event fields into records' ``__dict__`` (pydantic's own fast path):
    sound only while no record validates or forbids assignment."""
    for record in (TurnRecord, CellRecord, SubCallRecord):
        assert not record.model_config.get("validate_assignment")
        assert not record.model_config.get("frozen")
