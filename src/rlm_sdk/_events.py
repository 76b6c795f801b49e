"""Typed events of a run.

Every part of a run reports to one sink per top-level run; the trajectory, the console view,
the JSONL recorder, ``astream`` and the web page all read the same events. Each event carries
the run id, its parent's run id, the depth, a wall-clock timestamp and a sequence number that
is strictly increasing over the whole recursion tree.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from ._types import RLMResult, StopReason, ToolCall

__all__ = [
    "CellFinished",
    "CellStarted",
    "ChildRunStarted",
    "ConfirmationAsked",
    "Event",
    "EventBase",
    "FinalAnswer",
    "HistoryCompacted",
    "LimitReached",
    "ModelRequest",
    "ModelResponse",
    "OutputRejected",
    "ProtocolSwitched",
    "ReplyParsed",
    "RetryScheduled",
    "RunFinished",
    "RunStarted",
    "SubCallFinished",
    "SubCallStarted",
    "TurnFinished",
    "TurnStarted",
    "WorkerRestarted",
    "event_adapter",
]


class EventBase(BaseModel):
    """Fields every event has."""

    run_id: str
    parent_run_id: str | None = None
    depth: int = 0
    ts: float = 0.0
    seq: int = 0
    item: int | None = None
    """The item's index in a batch run, ``None`` outside batches."""


class RunStarted(EventBase):
    type: Literal["run_started"] = "run_started"
    model: str
    sub_model: str
    query: str | None
    context_description: str
    max_iterations: int
    max_depth: int


class TurnStarted(EventBase):
    type: Literal["turn_started"] = "turn_started"
    iteration: int


class TurnFinished(EventBase):
    type: Literal["turn_finished"] = "turn_finished"
    iteration: int
    feedback: str | None = None
    """What the model is told next (cell output or a reminder); ``None`` when the turn answered."""
    final_answer: str | None = None


class ModelRequest(EventBase):
    type: Literal["model_request"] = "model_request"
    model: str
    messages: int
    purpose: Literal["turn", "final", "sub_call", "compaction"] = "turn"
    call_id: str | None = None
    """The sub-call this request serves (``purpose="sub_call"``); ``None`` for a run's own."""


class ModelResponse(EventBase):
    type: Literal["model_response"] = "model_response"
    model: str
    text: str
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    cost: float | None = None
    purpose: Literal["turn", "final", "sub_call", "compaction"] = "turn"
    reasoning: str | None = None
    """Reasoning kept out of the reply: the provider's reasoning field and ``<think>`` blocks."""
    tool_calls: list[ToolCall] = []
    """The tools the model called, in order (``protocol="tools"``)."""
    finish_reason: str | None = None
    """Why the model stopped, as the provider said: ``"stop"``, or ``"length"`` when
    ``max_tokens`` cut the reply short."""
    response_model: str | None = None
    """The model that answered, as the provider named it (may be more exact than ``model``)."""
    call_id: str | None = None
    """The sub-call this reply serves (``purpose="sub_call"``); ``None`` for a run's own."""


class ReplyParsed(EventBase):
    """How a root or child turn's reply was read: where its code came from, what it needed."""

    type: Literal["reply_parsed"] = "reply_parsed"
    iteration: int
    fence: str | None = None
    """Where the code that runs came from: ``repl``, ``python``, ``py``, ``bare``,
    ``unfenced`` or ``tool_markup``; ``None`` when nothing runs."""
    code_blocks: int = 0
    final: Literal["text", "var"] | None = None
    notes: list[str] = []
    problems: list[str] = []


class ProtocolSwitched(EventBase):
    """A server refused tools: the run goes on with fenced text, its history rewritten."""

    type: Literal["protocol_switched"] = "protocol_switched"
    iteration: int
    from_protocol: Literal["tools", "fenced"]
    to_protocol: Literal["tools", "fenced"]
    reason: str


class ConfirmationAsked(EventBase):
    """A final answer written in the same reply as code was not taken: the model is asked to
    confirm it after seeing the code's real output."""

    type: Literal["confirmation_asked"] = "confirmation_asked"
    iteration: int
    answer: str


class OutputRejected(EventBase):
    """The root's final answer did not match the run's ``output_type``: it was not taken, and
    the model is told why (or, with no retry left, the run raises ``OutputValidationError``)."""

    type: Literal["output_rejected"] = "output_rejected"
    iteration: int
    answer: str
    """The answer's text (its middle cut when long)."""
    errors: list[str]
    """Every problem, as ``"$.field: message"``."""
    attempt: int
    """Answers rejected so far in this run, this one included."""
    retries_left: int
    """Answers the model may still give; ``0``: the run ends with the error."""


class HistoryCompacted(EventBase):
    """A run's history neared its model's context window: older turns were summarised."""

    type: Literal["history_compacted"] = "history_compacted"
    iteration: int
    turns: int
    """Turns summarised so far in this run (1 to ``turns``)."""
    messages_before: int
    messages_after: int
    tokens_before: int
    tokens_after: int
    window: int
    variable: str | None = None
    """The REPL list holding the summarised turns in full; ``None`` if only cut, not summarised."""
    summary: str | None = None


class CellStarted(EventBase):
    type: Literal["cell_started"] = "cell_started"
    iteration: int
    cell: int
    code: str


class CellFinished(EventBase):
    type: Literal["cell_finished"] = "cell_finished"
    iteration: int
    cell: int
    stdout: str
    stderr: str
    error_type: str | None = None
    error: str | None = None
    duration_s: float
    restarted: bool = False
    timed_out: bool = False
    final_answer: str | None = None
    notice: str | None = None


class SubCallStarted(EventBase):
    type: Literal["sub_call_started"] = "sub_call_started"
    call_id: str
    kind: Literal["llm", "rlm"]
    model: str
    prompt: str


class SubCallFinished(EventBase):
    type: Literal["sub_call_finished"] = "sub_call_finished"
    call_id: str
    kind: Literal["llm", "rlm"]
    model: str
    response: str
    error: str | None = None
    duration_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    reasoning: str | None = None
    cached: bool = False


class ChildRunStarted(EventBase):
    type: Literal["child_run_started"] = "child_run_started"
    call_id: str
    child_run_id: str


class FinalAnswer(EventBase):
    type: Literal["final_answer"] = "final_answer"
    answer: str
    source: StopReason


class LimitReached(EventBase):
    type: Literal["limit_reached"] = "limit_reached"
    limit: str
    detail: str


class RetryScheduled(EventBase):
    type: Literal["retry_scheduled"] = "retry_scheduled"
    provider: str
    attempt: int
    delay_s: float
    reason: str
    call_id: str | None = None
    """The sub-call whose request is retried; ``None`` for a run's own request."""


class WorkerRestarted(EventBase):
    type: Literal["worker_restarted"] = "worker_restarted"
    reason: str


class RunFinished(EventBase):
    type: Literal["run_finished"] = "run_finished"
    result: RLMResult


Event = Annotated[
    RunStarted
    | TurnStarted
    | TurnFinished
    | ModelRequest
    | ModelResponse
    | ReplyParsed
    | ConfirmationAsked
    | OutputRejected
    | HistoryCompacted
    | ProtocolSwitched
    | CellStarted
    | CellFinished
    | SubCallStarted
    | SubCallFinished
    | ChildRunStarted
    | FinalAnswer
    | LimitReached
    | RetryScheduled
    | WorkerRestarted
    | RunFinished,
    Field(discriminator="type"),
]

event_adapter: TypeAdapter[Event] = TypeAdapter(Event)
"""Validates one event from a dict or JSON (``event_adapter.validate_json(line)``)."""
