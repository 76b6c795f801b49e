"""One run's conversation with its model: what the turn loop remembers, and how a turn's
call is made so that it is accepted.

A call is made within the model's context window (:mod:`._compaction` fits the history
first, and again if the provider still refuses it as too long) and in a protocol the
server takes: a run offering the REPL as a tool whose server refuses tools (a 400 naming
them) goes on in fenced text, its system prompt and history rewritten, and the same call
is made again, so no turn is lost.

The run hands in what has side effects (the model call, the REPL cell, the event sink), so
this module holds state and decides, and the run acts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from . import _protocol as proto
from . import _window as window
from ._compaction import HistoryWindow
from ._events import EventBase, HistoryCompacted, ProtocolSwitched
from ._exceptions import APIStatusError
from .providers import ChatMessage, CompletionResponse, ToolSpec

__all__ = ["Conversation", "Dialect"]

Dialect = Literal["fenced", "tools"]
"""How a run's model runs code: fenced blocks in text, or calls of the ``repl`` tool."""
Purpose = Literal["turn", "final", "compaction"]
Ask = Callable[[list[ChatMessage], Purpose, "list[ToolSpec] | None"], Awaitable[CompletionResponse]]
Archive = Callable[[str], Awaitable[object]]
Emit = Callable[..., None]

_MAX_RETRIES = 3
"""Calls of one turn made again after a refusal (of the tools, of the prompt's length)."""


@dataclass
class Conversation:
    """What the turn loop remembers between turns, and the way its calls are made.

    Args:
        model: the run's model.
        window: the history against the model's context window.
        protocol: the protocol the run starts with.
        fenced_prompt: the system prompt for fenced text, should the run go on without tools.
        tools_refused: the tree's models whose server refused tools (shared by its runs).
        ask: one model call: ``(messages, purpose, tools)``, charged and observed.
        archive: run one cell in the run's REPL (for the turns a compaction takes out).
        emit: the run's event sink, ``emit(EventClass, **fields)``.
    """

    model: str
    window: HistoryWindow
    protocol: Dialect
    fenced_prompt: str
    tools_refused: set[str]
    ask: Ask
    archive: Archive
    emit: Emit
    defined: set[str] = field(default_factory=set)
    """User variables the run's cells have bound (``FINAL(name)`` looks only at these)."""
    empty: int = 0
    """Empty replies in a row."""
    unconfirmed: str | None = None
    """A final answer given with code, that the model was asked to confirm."""

    async def send(
        self, messages: list[ChatMessage], iteration: int, purpose: Literal["turn", "final"]
    ) -> CompletionResponse:
        """A turn's call, its history compacted first if it nears the window.

        A provider that still refuses the prompt as too long gets one more try, after a
        compaction sized by what was sent; a server that refuses tools, one more try in
        fenced text.
        """
        await self.fit(messages, iteration)
        for _ in range(_MAX_RETRIES):
            tools = list(proto.TOOLS) if self.protocol == "tools" else None
            try:
                return await self.ask(messages, purpose, tools)
            except APIStatusError as err:
                if tools is not None and err.status_code == 400 and proto.refuses_tools(str(err)):
                    self._go_fenced(messages, iteration, str(err))
                elif not window.is_context_length_error(err) or not await self.fit(
                    messages, iteration, refused=True
                ):
                    raise
        return await self.ask(messages, purpose, None)

    async def fit(
        self, messages: list[ChatMessage], iteration: int, *, refused: bool = False
    ) -> bool:
        """Fit the history to the model's window; whether it changed (an event says how)."""

        async def ask(request: list[ChatMessage]) -> CompletionResponse:
            return await self.ask(request, "compaction", None)

        done = await self.window.fit(messages, ask, self.archive, refused=refused)
        if done is None:
            return False
        self._emit(HistoryCompacted, iteration=iteration, **dataclasses.asdict(done))
        return True

    def _go_fenced(self, messages: list[ChatMessage], iteration: int, reason: str) -> None:
        """Go on without tools: the fenced system prompt, the history rewritten as text."""
        self.protocol = "fenced"
        self.tools_refused.add(self.model)
        messages[:] = [
            ChatMessage(role="system", content=self.fenced_prompt),
            *proto.to_fenced(messages[1:]),
        ]
        self._emit(
            ProtocolSwitched,
            iteration=iteration,
            from_protocol="tools",
            to_protocol="fenced",
            reason=reason,
        )

    def _emit(self, cls: type[EventBase], **fields: Any) -> None:
        self.emit(cls, **fields)
