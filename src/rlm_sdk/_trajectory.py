"""Trajectories built from events: the one way a run's record comes to exist.

A live run feeds every event it emits to a :class:`TrajectoryBuilder` first, and the result
it returns holds the builder's tree; :func:`rlm_sdk.load_runs` feeds the events of a JSONL
file to the same builder. So a trajectory loaded from disk is the trajectory the run
returned, field for field, and a run cut off half-way (no ``run_finished``) still loads.

Events of many runs may interleave (a batch, concurrent children); each run's own events
arrive in order, and a run is attached to the sub-call that started it when its
``run_started`` arrives.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from pydantic import BaseModel

from ._events import (
    CellFinished,
    CellStarted,
    ChildRunStarted,
    ConfirmationAsked,
    Event,
    EventBase,
    HistoryCompacted,
    ModelResponse,
    OutputRejected,
    ReplyParsed,
    RunFinished,
    RunStarted,
    SubCallFinished,
    SubCallStarted,
    TurnFinished,
    TurnStarted,
)
from ._types import CellRecord, RLMResult, SubCallRecord, Trajectory, TurnRecord

__all__ = ["TrajectoryBuilder", "build_trajectories"]


class TrajectoryBuilder:
    """An event sink that keeps every run's :class:`Trajectory`, children nested in their calls."""

    def __init__(self) -> None:
        self.runs: dict[str, Trajectory] = {}
        """Every run seen, by run id."""
        self.roots: list[tuple[Trajectory, int | None]] = []
        """Top-level runs in the order they started, with their batch item index."""
        self.results: dict[str, RLMResult] = {}
        """The result of each top-level run that finished."""
        self._open_cell: dict[str, CellRecord] = {}
        self._calls: dict[str, SubCallRecord] = {}
        self._parent_call: dict[str, SubCallRecord] = {}

    def __call__(self, event: Event | EventBase) -> None:
        rid = event.run_id
        if isinstance(event, RunStarted):
            self._start(event)
            return
        t = self.runs.get(rid)
        if t is None:
            return  # an event of a run whose start was not seen
        if isinstance(event, TurnStarted):
            t.turns.append(TurnRecord(iteration=event.iteration, model=t.model, reply=""))
        elif isinstance(event, ModelResponse):
            if event.purpose in ("turn", "final") and t.turns:
                _copy_shared(event, t.turns[-1])
                t.turns[-1].reply = event.text
        elif isinstance(event, TurnFinished | ReplyParsed):
            if t.turns:
                _copy_shared(event, t.turns[-1])
        elif isinstance(event, ConfirmationAsked):
            if t.turns:
                t.turns[-1].unconfirmed_answer = event.answer
        elif isinstance(event, OutputRejected):
            if t.turns:
                t.turns[-1].output_errors = list(event.errors)
        elif isinstance(event, HistoryCompacted):
            if t.turns:
                t.turns[-1].compaction = event.summary or "(the history was cut to fit)"
        elif isinstance(event, CellStarted):
            if t.turns:
                cell = CellRecord(code=event.code)
                t.turns[-1].cells.append(cell)
                self._open_cell[rid] = cell
        elif isinstance(event, CellFinished):
            cell_or_none = self._open_cell.pop(rid, None)
            if cell_or_none is not None:
                _copy_shared(event, cell_or_none)
        elif isinstance(event, SubCallStarted):
            record = SubCallRecord(
                kind=event.kind,
                model=event.model,
                depth=event.depth + 1,
                prompt=event.prompt,
                response="",
            )
            self._calls[event.call_id] = record
            current = self._open_cell.get(rid)
            if current is not None:
                current.sub_calls.append(record)
        elif isinstance(event, SubCallFinished):
            finished = self._calls.pop(event.call_id, None)
            if finished is not None:
                _copy_shared(event, finished)
        elif isinstance(event, ChildRunStarted):
            call = self._calls.get(event.call_id)
            if call is not None:
                self._parent_call[event.child_run_id] = call
        elif isinstance(event, RunFinished):
            t.answer, t.stop_reason = event.result.answer, event.result.stop_reason
            self._open_cell.pop(rid, None)
            if event.parent_run_id is None:
                self.results[rid] = event.result

    def _start(self, event: RunStarted) -> None:
        t = Trajectory(
            run_id=event.run_id,
            parent_run_id=event.parent_run_id,
            depth=event.depth,
            model=event.model,
            query=event.query,
            context_description=event.context_description,
        )
        self.runs[event.run_id] = t
        call = self._parent_call.pop(event.run_id, None)
        if call is not None:
            call.child = t
        if event.parent_run_id is None:
            self.roots.append((t, event.item))


def build_trajectories(events: Iterable[Event]) -> TrajectoryBuilder:
    """Feed ``events`` to a new builder and return it."""
    builder = TrajectoryBuilder()
    for event in events:
        builder(event)
    return builder


_EVENT_ONLY = frozenset(EventBase.model_fields) | {"type"}


def _copy_shared(event: BaseModel, record: BaseModel) -> None:
    """Copy onto ``record`` every field it shares with ``event`` (not the event's envelope).

    Straight into the model's ``__dict__``, as pydantic's own ``__setattr__`` does for a model
    without assignment validation, at a fraction of the cost per field (a run copies dozens).
    """
    names = _shared_fields(type(event), type(record))
    values = event.__dict__
    record.__dict__.update({name: values[name] for name in names})
    record.__pydantic_fields_set__.update(names)


@functools.cache
def _shared_fields(event: type[BaseModel], record: type[BaseModel]) -> tuple[str, ...]:
    return tuple(sorted(record.model_fields.keys() & event.model_fields.keys() - _EVENT_ONLY))
