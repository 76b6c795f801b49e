"""Keeping a run's history within its model's context window.

The history of a long run grows by a reply and an output every turn. Before each turn's
call the run asks its :class:`HistoryWindow` to fit the history: past ``compact_at`` of the
model's window, the model itself summarises the turns before the last one (one more model
call, charged like any other), the summary replaces them, and their full text goes to the
REPL list ``history``, so nothing is lost. Whatever still does not fit is cut, longest
message first, head and tail kept; the system prompt never is.

The run hands in the two things with side effects, the model call and the REPL cell, so
this module decides and the run acts.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from . import _protocol as proto
from . import _window as window
from .providers import ChatMessage, CompletionResponse

__all__ = ["HISTORY_VARIABLE", "Compaction", "HistoryWindow", "shrink", "sub_call_chars"]

HISTORY_VARIABLE = "history"
"""The REPL list that holds the turns a compaction took out of the history."""
DEFAULT_SUB_CHARS = 400_000
"""What the system prompt says a sub-call may read when the sub-model's window is unknown."""

Ask = Callable[[list[ChatMessage]], Awaitable[CompletionResponse]]
Archive = Callable[[str], Awaitable[object]]


@dataclass(frozen=True)
class Compaction:
    """What one compaction did (the fields of the ``HistoryCompacted`` event)."""

    turns: int
    messages_before: int
    messages_after: int
    tokens_before: int
    tokens_after: int
    window: int
    variable: str | None
    summary: str | None


@dataclass
class HistoryWindow:
    """One run's history against its model's window.

    Args:
        model: the run's model.
        overrides: the user's ``context_windows``.
        compact_at: the fraction of the window past which the history is compacted.
        max_tokens: the completion cap, kept free for the reply.
        query: the first user message as written (a compaction note joins it).
    """

    model: str
    overrides: Mapping[str, int]
    compact_at: float | None
    max_tokens: int | None
    query: str
    compacted: int = 0
    """Turns summarised so far."""

    async def fit(
        self, messages: list[ChatMessage], ask: Ask, archive: Archive, *, refused: bool = False
    ) -> Compaction | None:
        """Compact ``messages`` in place when they pass ``compact_at`` of the window.

        ``refused``: the provider just refused them as too long, whatever the estimate said;
        they are then fitted to four fifths of what was sent. Returns what was done, or
        ``None`` when nothing changed.
        """
        tokens = window.estimate_message_tokens(messages)
        size = window.context_window(self.model, self.overrides)
        if refused:
            size = min(size or tokens, int(tokens * 0.8))
        elif size is None or self.compact_at is None or tokens <= self.compact_at * size:
            return None
        limit = size - window.reply_reserve(size, self.max_tokens)
        before = len(messages)
        summary = await self._summarise(messages, size, limit, ask, archive)
        if summary is None and window.estimate_message_tokens(messages) <= limit:
            return None
        shrink(messages, limit)
        return Compaction(
            turns=self.compacted,
            messages_before=before,
            messages_after=len(messages),
            tokens_before=tokens,
            tokens_after=window.estimate_message_tokens(messages),
            window=size,
            variable=HISTORY_VARIABLE if summary is not None else None,
            summary=summary,
        )

    async def _summarise(
        self, messages: list[ChatMessage], size: int, limit: int, ask: Ask, archive: Archive
    ) -> str | None:
        """Replace the turns before the last one by the model's summary of them.

        The request is the history itself (cut to fit) and a request to summarise. The
        turns it replaces are appended to the REPL list ``history``. Returns the summary,
        or ``None`` when there were no turns to summarise.
        """
        last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=0)
        old = messages[2:last]  # the last turn (its reply and what it was told) stays
        replies = sum(m.role == "assistant" for m in old)
        if not replies:
            return None
        turns = self.compacted + replies
        request = [  # as text: a request that carries tool calls must offer the tools
            *messages[:2],
            *proto.to_fenced(old),
            ChatMessage(role="user", content=proto.compaction_prompt(turns, HISTORY_VARIABLE)),
        ]
        room = min(1_024, size // 8)
        shrink(request, limit - room)
        reply = await ask(request)
        summary = proto.truncate_middle(reply.text.strip() or "(no summary)", room * 3)
        archived = json.dumps([_archived(m) for m in old])
        await archive(
            f"import json as _rlm_json\ntry:\n    {HISTORY_VARIABLE}\nexcept NameError:\n"
            f"    {HISTORY_VARIABLE} = []\n"
            f"{HISTORY_VARIABLE}.extend(_rlm_json.loads({archived!r}))\ndel _rlm_json"
        )
        self.compacted = turns
        note = proto.compacted_history_note(turns, summary, HISTORY_VARIABLE)
        messages[1:last] = [ChatMessage(role="user", content=f"{self.query}\n\n{note}")]
        return summary


def _archived(message: ChatMessage) -> dict[str, object]:
    """A message as the REPL's ``history`` holds it: role and content, and calls if any."""
    item: dict[str, object] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        item["tool_calls"] = [c.model_dump() for c in message.tool_calls]
    return item


def shrink(messages: list[ChatMessage], limit: int) -> None:
    """Cut the longest messages after the system prompt (head and tail kept) until the
    estimate is within ``limit``; the system prompt is never cut."""
    for _ in range(4 * len(messages)):
        excess = window.estimate_message_tokens(messages) - limit
        if excess <= 0:
            return
        index = max(range(1, len(messages)), key=lambda i: len(messages[i].content), default=0)
        if index == 0:
            return
        text = messages[index].content
        keep = max(200, len(text) - int(excess * 4) - 200)
        if keep >= len(text):
            return
        messages[index] = messages[index].model_copy(
            update={"content": proto.truncate_middle(text, keep)}
        )


def sub_call_chars(sub_model: str, overrides: Mapping[str, int], max_tokens: int | None) -> int:
    """About how many characters one ``llm_query`` prompt may hold, for the system prompt."""
    size = window.context_window(sub_model, overrides)
    if size is None:
        return DEFAULT_SUB_CHARS
    return 3 * (size - window.reply_reserve(size, max_tokens))
