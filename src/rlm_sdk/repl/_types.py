"""Models of the REPL's parent side: its options, what callers get back, the worker's frames.

The public models (:class:`REPLOptions`, :class:`CellResult`, :class:`SubCallRequest`) are the
contract the orchestrator is written against: it passes one frozen :class:`REPLOptions` through
to every session unchanged, so a new option is one field here, not a keyword threaded through
three signatures. The frame models validate everything that arrives from the
worker, which runs model-written code and is not trusted: a frame that does not match is a
:class:`~rlm_sdk.WorkerProtocolError`, never a half-understood message.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from rlm_sdk._constants import (
    DEFAULT_CELL_TIMEOUT,
    DEFAULT_OUTPUT_LIMIT,
    DEFAULT_WORKER_START_TIMEOUT,
    MAX_OUTPUT_LIMIT,
)

from ._corpus import Corpus

__all__ = [
    "CellError",
    "CellResult",
    "ContextData",
    "IsolationMode",
    "REPLOptions",
    "SubCallHandler",
    "SubCallRequest",
]

IsolationMode: TypeAlias = Literal["auto", "strict", "none"]
"""How far the worker sandboxes itself (see :class:`REPLOptions`).

The one list of modes on the parent side; the worker, which cannot import ``typing`` cheaply,
checks them against ``_sandbox.MODES``, and a test keeps the two equal.
"""


class REPLOptions(BaseModel):
    """What a REPL worker may do, and its bounds (frozen; ``model_copy(update=...)`` to change).

    One object the orchestrator passes to every session unchanged. Invalid values raise
    pydantic's ``ValidationError`` (a ``ValueError``) naming the field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    isolation: IsolationMode = "auto"
    """The sandbox the worker puts itself in before running any code (``repl/_sandbox.py``).
    ``"auto"`` applies every layer the host supports (``REPLSession.isolation_layers`` says
    which); ``"strict"`` refuses to run unless every layer the policy needs applies, raising
    :class:`~rlm_sdk.IsolationError` (no restart); ``"none"`` keeps only the resource limits,
    and logs a warning."""
    allow_network: bool = False
    """Let the model's code open sockets and reach the network (by default it has no network
    at all, loopback included)."""
    allow_subprocess: bool = False
    """Let the model's code start processes; they stay in the worker's process group and die
    with it."""
    readable_paths: tuple[str, ...] = ()
    """Absolute paths the model's code may read besides the Python installation and its
    private directory."""
    memory_limit: int | None = Field(default=None, gt=0)
    """The worker's address-space limit in bytes; by default
    ``max(MIN_WORKER_MEMORY, 4 x context + 1 GiB)`` (8 x for lists, 16 x for JSON values)."""
    cell_timeout: float = Field(default=DEFAULT_CELL_TIMEOUT, gt=0)
    """Seconds a cell may run, including time spent waiting for sub-calls. At the deadline the
    cell gets a KeyboardInterrupt (variables kept); if it does not stop within
    ``WORKER_INTERRUPT_GRACE`` the worker is killed and restarted (variables lost)."""
    output_limit: int = Field(default=DEFAULT_OUTPUT_LIMIT, ge=0, le=MAX_OUTPUT_LIMIT)
    """Characters of stdout and of stderr kept per cell (head and tail)."""
    start_timeout: float = Field(default=DEFAULT_WORKER_START_TIMEOUT, gt=0)
    """Seconds the worker has to start and load the context."""

    @field_validator("readable_paths")
    @classmethod
    def _absolute(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        if not all(os.path.isabs(path) for path in paths):
            raise ValueError("readable_paths must be absolute paths")
        return paths


ContextData: TypeAlias = str | bytes | list[Any] | dict[str, Any] | Corpus | os.PathLike[str]
"""A context: text, bytes, a list (``list[str]`` travels without JSON escaping), a JSON object,
or files on disk (a path, a list of paths, or a :class:`Corpus`), which only the worker reads."""


class SubCallRequest(BaseModel):
    """What the model's code asked for with ``llm_query*`` (``kind="llm"``) or ``rlm_query*``."""

    kind: Literal["llm", "rlm"]
    prompts: list[str]
    """One prompt for ``llm_query``/``rlm_query``; all of them for the ``*_batched`` forms."""
    model: str | None = None
    batched: bool = False


SubCallHandler: TypeAlias = Callable[[SubCallRequest], Awaitable[list[str]]]
"""Answers a sub-call: one string per prompt, in order; a failed item is a string starting "Error:"."""


class CellError(BaseModel):
    """Why a cell failed."""

    type: str
    """The exception's class name, or ``WorkerDied``/``TimeoutError`` when the worker was lost."""
    message: str
    traceback: str
    """The tail of the traceback; for a cell that does not compile, the line and a caret."""


class CellResult(BaseModel):
    """What running one cell produced."""

    stdout: str
    """Bounded: the head and the tail are kept, with a marker saying how many characters were cut."""
    stderr: str
    error: CellError | None = None
    duration_s: float
    """Wall time seen by the parent, including time spent waiting for sub-calls."""
    defined_names: list[str]
    """User names (re)bound by this cell."""
    final_answer: str | None = None
    """Set when the cell called ``FINAL_VAR(...)`` or set ``answer["ready"] = True``."""
    final_json: str | None = None
    """The final answer's value as JSON, when it was a value JSON can hold and not text."""
    restarted: bool = False
    """The worker was killed and restarted during (or just before) this cell; variables were lost."""
    timed_out: bool = False
    output_truncated: int = 0
    """Characters cut from stdout and stderr together."""
    notice: str | None = None
    """Something the model should know that is not an error of this cell (e.g. a restart before it)."""


# --------------------------------------------------------------------------------------------
# Frames from the worker (see the wire format in ``_wire.py``)
# --------------------------------------------------------------------------------------------


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReadyFrame(_Frame):
    type: Literal["ready"]
    protocol: int
    """The protocol version the worker speaks (it refused an ``init`` of any other)."""
    load_s: float
    isolation: list[str]
    """The sandbox layers the worker applied to itself."""


class FatalFrame(_Frame):
    type: Literal["fatal"]
    kind: Literal["start", "isolation"]
    """``isolation``: the sandbox the policy requires cannot be applied (no point restarting)."""
    message: str


class ResultFrame(_Frame):
    type: Literal["result"]
    id: int
    stdout: str
    stdout_cut: int
    stderr: str
    stderr_cut: int
    error: CellError | None
    defined_names: list[str]
    final_answer: str | None
    final_json: str | None = None
    """Sent only with a final answer whose value is not text (see ``CellResult``)."""


class VarFrame(_Frame):
    type: Literal["var"]
    id: int
    found: bool
    text: str | None
    value_json: str | None = None
    """The value as JSON, sent only when ``get_var`` asked for it."""


class VarsFrame(_Frame):
    type: Literal["vars"]
    id: int
    variables: dict[str, str]


class CallFrame(_Frame):
    type: Literal["call"]
    id: int
    kind: Literal["llm", "rlm"]
    prompts: list[str]
    model: str | None
    batched: bool


class ToolFrame(_Frame):
    type: Literal["tool"]
    id: int
    name: str
    args: list[Any]
    kwargs: dict[str, Any]


WorkerFrame: TypeAlias = Annotated[
    ReadyFrame | FatalFrame | ResultFrame | VarFrame | VarsFrame | CallFrame | ToolFrame,
    Field(discriminator="type"),
]
ReplyFrame: TypeAlias = ResultFrame | VarFrame | VarsFrame
"""A frame answering a request of the parent, matched to it by ``id``."""

WORKER_FRAMES: TypeAdapter[WorkerFrame] = TypeAdapter(WorkerFrame)
