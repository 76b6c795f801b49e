"""Results of a run: usage per model, the trajectory tree, and the run's limits.

Everything here is a pydantic model so a result can be dumped to JSON, stored and loaded
back (``RLMResult.model_validate_json``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._constants import DEFAULT_MAX_CONCURRENT_SUBCALLS, DEFAULT_MAX_DEPTH, DEFAULT_MAX_ITERATIONS

__all__ = [
    "CellRecord",
    "Limits",
    "ModelUsage",
    "RLMResult",
    "StopReason",
    "SubCallRecord",
    "ToolCall",
    "Trajectory",
    "TurnRecord",
    "Usage",
]

StopReason = Literal[
    "final_answer",  # FINAL(...) in a reply
    "final_var",  # FINAL_VAR(name) in a reply or in code, or answer["ready"] = True
    "max_iterations",  # the iteration limit was reached; the answer comes from one last call
    "limit",  # another budget ran out (calls, tokens, cost, wall time)
    "error",  # an exception ended the run; it is raised, carrying this result as ``.result``
    "cancelled",  # the run was cancelled from outside; seen in its last event, RunFinished
]


class Limits(BaseModel):
    """Budgets of one top-level run, counted over its whole recursion tree.

    ``max_iterations`` and ``max_concurrent_subcalls`` bound each run (root and children
    alike); the others are shared by the tree: a child gets what its parent has left.
    ``None`` means unbounded. Enforced in one place, the run tree's budget.
    """

    max_iterations: int = Field(default=DEFAULT_MAX_ITERATIONS, ge=1)
    """Turns per run before one last call asks for the best answer."""
    max_depth: int = Field(default=DEFAULT_MAX_DEPTH, ge=0)
    """Runs exist at depths ``0 .. max_depth - 1``; deeper sub-calls are plain completions."""
    max_model_calls: int | None = Field(default=None, ge=1)
    """Model calls in the whole tree (root turns and sub-calls)."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Prompt plus completion tokens in the whole tree."""
    max_cost: float | None = Field(default=None, gt=0)
    """USD in the whole tree, from reported costs or the ``prices`` table."""
    max_wall_time: float | None = Field(default=None, gt=0)
    """Seconds for the whole top-level run."""
    max_concurrent_subcalls: int = Field(default=DEFAULT_MAX_CONCURRENT_SUBCALLS, ge=1)
    """Sub-calls one run has in flight at once (the batched forms fan out up to this)."""


class ModelUsage(BaseModel):
    """What one model was used for: calls, tokens and cost (USD, ``None`` when unknown)."""

    calls: int = 0
    """Model calls made."""
    prompt_tokens: int = 0
    """Prompt tokens, as the provider reported them."""
    completion_tokens: int = 0
    """Completion tokens, as the provider reported them."""
    cost: float | None = None
    """USD, when the provider reported a cost or a price table gave one."""
    cache_hits: int = 0
    """Sub-calls answered by the cache (``RecursiveLM(cache=...)``): no call, no tokens, no cost."""
    tokens_saved: int = 0
    """Prompt plus completion tokens the cached replies took when they were first made."""
    cost_saved: float | None = None
    """USD the cached replies cost when they were first made, when known."""

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


class Usage(BaseModel):
    """Usage per model, summed over a whole recursion tree."""

    models: dict[str, ModelUsage] = Field(default_factory=dict)
    """Usage by model string (``"openai:gpt-5-mini"``)."""

    @property
    def calls(self) -> int:
        """Model calls over every model."""
        return sum(m.calls for m in self.models.values())

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens over every model."""
        return sum(m.prompt_tokens for m in self.models.values())

    @property
    def completion_tokens(self) -> int:
        """Completion tokens over every model."""
        return sum(m.completion_tokens for m in self.models.values())

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens over every model."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost(self) -> float | None:
        """Total cost in USD; ``None`` when no model reported one."""
        known = [m.cost for m in self.models.values() if m.cost is not None]
        return math.fsum(known) if known else None

    @property
    def cache_hits(self) -> int:
        """Sub-calls the cache answered, over every model."""
        return sum(m.cache_hits for m in self.models.values())

    @property
    def cost_saved(self) -> float | None:
        """USD the cache saved; ``None`` when no cached reply had a known cost."""
        known = [m.cost_saved for m in self.models.values() if m.cost_saved is not None]
        return math.fsum(known) if known else None

    def add_hit(self, model: str, tokens: int, cost: float | None) -> None:
        """Count one sub-call of ``model`` the cache answered (``tokens`` and ``cost`` saved)."""
        entry = self.models.get(model)
        if entry is None:
            entry = self.models[model] = ModelUsage()
        entry.cache_hits += 1
        entry.tokens_saved += tokens
        if cost is not None:
            entry.cost_saved = (entry.cost_saved or 0.0) + cost

    def add(
        self, model: str, prompt_tokens: int, completion_tokens: int, cost: float | None
    ) -> None:
        """Count one call of ``model`` (the SDK calls this; useful for your own totals too)."""
        entry = self.models.get(model)
        if entry is None:
            entry = self.models[model] = ModelUsage()
        entry.calls += 1
        entry.prompt_tokens += prompt_tokens
        entry.completion_tokens += completion_tokens
        if cost is not None:
            entry.cost = (entry.cost or 0.0) + cost


class ToolCall(BaseModel):
    """A call the model made: its id (to pair it with its result), the function and arguments.

    ``arguments`` is the JSON text as the model wrote it, which may not be valid JSON.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: str = ""


class SubCallRecord(BaseModel):
    """One ``llm_query`` / ``rlm_query`` made by a cell; ``child`` holds an RLM child's run."""

    kind: Literal["llm", "rlm"]
    model: str
    depth: int
    prompt: str
    response: str
    error: str | None = None
    duration_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    reasoning: str | None = None
    """The sub-model's reasoning, kept out of the answer the code got."""
    cached: bool = False
    """Answered by the cache, with no model call (its tokens and cost are then zero)."""
    child: Trajectory | None = None


class CellRecord(BaseModel):
    """One code block run in the REPL, with the sub-calls it made."""

    code: str
    stdout: str = ""
    stderr: str = ""
    error_type: str | None = None
    error: str | None = None
    duration_s: float = 0.0
    restarted: bool = False
    timed_out: bool = False
    final_answer: str | None = None
    notice: str | None = None
    """Something the model must know that is not the code's output (e.g. a lost REPL)."""
    sub_calls: list[SubCallRecord] = Field(default_factory=list)


class TurnRecord(BaseModel):
    """One turn: the model's reply, the cells it ran and what the model was told next."""

    iteration: int
    model: str
    reply: str
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    reasoning: str | None = None
    """Reasoning kept out of the reply (a provider's reasoning field, ``<think>`` blocks)."""
    finish_reason: str | None = None
    """Why the model stopped: ``"stop"``, or ``"length"`` when ``max_tokens`` cut the reply."""
    fence: str | None = None
    """Where the code that ran came from (``repl``, ``python``, ``bare``, ...)."""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    """The tools the model called in this reply (``protocol="tools"``)."""
    notes: list[str] = Field(default_factory=list)
    """The dialect rules the reply needed (a glued fence, a ``python`` block, ...)."""
    problems: list[str] = Field(default_factory=list)
    """What was wrong with the reply (an unclosed fence, an empty reply, ...)."""
    compaction: str | None = None
    """The summary that replaced older turns before this turn's call, if the history was compacted."""
    cells: list[CellRecord] = Field(default_factory=list)
    unconfirmed_answer: str | None = None
    """A final answer given with code in the same reply, that the model was asked to confirm."""
    output_errors: list[str] = Field(default_factory=list)
    """Why this turn's final answer did not match ``output_type`` (it was then not taken)."""
    feedback: str | None = None
    final_answer: str | None = None


class Trajectory(BaseModel):
    """Everything one run did; children's runs are nested in their sub-call records."""

    run_id: str
    parent_run_id: str | None = None
    depth: int = 0
    model: str
    query: str | None = None
    context_description: str = ""
    turns: list[TurnRecord] = Field(default_factory=list)
    answer: str | None = None
    stop_reason: StopReason | None = None


class RLMResult(BaseModel):
    """The outcome of a run: the answer, why it ended, what it cost and what it did."""

    answer: str | None
    """The final answer; ``None`` when the run ended without one."""
    stop_reason: StopReason
    """Why the run ended."""
    iterations: int
    """Turns the root run took (the last call at the iteration limit counts as one)."""
    wall_time_s: float
    """Seconds from the call to the result."""
    usage: Usage
    """Calls, tokens and cost per model over the whole recursion tree."""
    trajectory: Trajectory
    """Every turn, cell and sub-call, with child runs nested."""
    isolation: list[str] = Field(default_factory=list)
    """The sandbox layers the root run's REPL worker had applied."""
    error: str | None = None
    """What stopped the run, when a budget or a failure did."""
    output: Any = None
    """The answer as ``output_type`` (a model instance, a dict, ...), validated; ``None``
    without an ``output_type`` or an answer. Loaded back from JSON, it is the plain JSON value."""

    @property
    def run_id(self) -> str:
        """The root run's id (also on every event)."""
        return self.trajectory.run_id


SubCallRecord.model_rebuild()
