"""Models of the REPL's parent side: what callers get back, and the frames the worker may send.

The public models (:class:`CellResult`, :class:`SubCallRequest`) are the contract the
orchestrator is written against. The frame models validate everything that arrives from the
worker, which runs model-written code and is not trusted: a frame that does not match is a
:class:`~rlm_sdk.WorkerProtocolError`, never a half-understood message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "CellError",
    "CellResult",
    "ContextData",
    "SubCallHandler",
    "SubCallRequest",
]

ContextData: TypeAlias = str | bytes | list[Any] | dict[str, Any]
"""A context: text, bytes, a list (``list[str]`` travels without JSON escaping) or a JSON object."""


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
    restarted: bool = False
    """The worker was killed and restarted during (or just before) this cell; variables were lost."""
    timed_out: bool = False
    output_truncated: int = 0
    """Characters cut from stdout and stderr together."""
    notice: str | None = None
    """Something the model should know that is not an error of this cell (e.g. a restart before it)."""


# --------------------------------------------------------------------------------------------
# Frames from the worker (see the wire format in ``_worker.py``)
# --------------------------------------------------------------------------------------------


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HelloFrame(_Frame):
    type: Literal["hello"]
    protocol: int
    pid: int


class ReadyFrame(_Frame):
    type: Literal["ready"]
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


class VarFrame(_Frame):
    type: Literal["var"]
    id: int
    found: bool
    text: str | None


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
    HelloFrame
    | ReadyFrame
    | FatalFrame
    | ResultFrame
    | VarFrame
    | VarsFrame
    | CallFrame
    | ToolFrame,
    Field(discriminator="type"),
]
ReplyFrame: TypeAlias = ResultFrame | VarFrame | VarsFrame
"""A frame answering a request of the parent, matched to it by ``id``."""

WORKER_FRAMES: TypeAdapter[WorkerFrame] = TypeAdapter(WorkerFrame)
