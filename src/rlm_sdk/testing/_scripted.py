"""A provider that answers from a script: a TEST/DEMO double, no model and no network.

Tests of everything above the provider layer (the orchestrator, the CLI, examples) need replies
they can predict; this double gives them, records what it was asked, and can be slow or fail
on cue.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import ClassVar, Self, TypeAlias

import anyio

from rlm_sdk._exceptions import APIResponseError
from rlm_sdk.providers import CompletionRequest, CompletionResponse, TokenUsage

__all__ = ["ReplyFunction", "ScriptedProvider"]

Reply: TypeAlias = str | CompletionResponse
ReplyFunction: TypeAlias = Callable[[CompletionRequest], Reply | Awaitable[Reply]]
"""Computes a reply from the request; may be sync or async."""
ScriptItem: TypeAlias = Reply | BaseException | ReplyFunction


def _estimate_tokens(text: str) -> int:
    """About four characters a token, and never zero, so usage accounting has something to add."""
    return max(1, len(text) // 4)


class ScriptedProvider:
    """A TEST/DEMO double: a :class:`~rlm_sdk.providers.Provider` that replies from a script.

    Example::

        provider = ScriptedProvider(["```repl\\nprint(len(context))\\n```", "FINAL(42)"])
        echo = ScriptedProvider(lambda request: request.messages[-1].content)

    Args:
        replies: either a sequence consumed in order, one item per call — a text, a
            :class:`CompletionResponse`, an exception to raise, or a function of the request
            returning a text or a response (sync or async) — or one such function for every call.
            What a function raises propagates unchanged, so tests can simulate any failure.
        latency: seconds to wait (without blocking the loop) before each reply.
        cost_per_call: ``usage.cost`` of each reply; None (not reported) by default.

    Attributes:
        requests: every request received, in call order.

    Raises:
        APIResponseError: from ``acomplete`` when the script has no reply left.
    """

    name: ClassVar[str] = "scripted"

    def __init__(
        self,
        replies: Sequence[ScriptItem] | ReplyFunction,
        *,
        latency: float = 0.0,
        cost_per_call: float | None = None,
    ) -> None:
        if isinstance(replies, str):
            raise TypeError("replies is a sequence of replies or a function; for one reply: [text]")
        self._function = replies if callable(replies) else None
        self._script = [] if callable(replies) else list(replies)
        self.latency = latency
        self.cost_per_call = cost_per_call
        self.requests: list[CompletionRequest] = []

    def __repr__(self) -> str:
        script = "function" if self._function else f"{len(self._script)} replies"
        return f"ScriptedProvider({script}, calls={len(self.requests)})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing to release; here to satisfy the protocol."""

    async def acomplete(self, request: CompletionRequest) -> CompletionResponse:
        """Record ``request`` and return the next scripted reply (or the function's)."""
        self.requests.append(request)
        call = len(self.requests)
        item: ScriptItem
        if self._function is not None:
            item = self._function
        elif call <= len(self._script):
            item = self._script[call - 1]
        else:
            raise APIResponseError(
                f"ScriptedProvider ran out of replies after {len(self._script)} calls",
                provider=self.name,
            )
        if self.latency:
            await anyio.sleep(self.latency)
        if isinstance(item, BaseException):
            raise item
        reply = item(request) if callable(item) else item
        if inspect.isawaitable(reply):
            reply = await reply
        if isinstance(reply, CompletionResponse):
            return reply
        prompt = "".join(message.content for message in request.messages)
        return CompletionResponse(
            text=reply,
            finish_reason="stop",
            usage=TokenUsage(
                prompt_tokens=_estimate_tokens(prompt),
                completion_tokens=_estimate_tokens(reply),
                cost=self.cost_per_call,
            ),
            model=request.model,
            request_id=f"scripted-{call}",
            latency_s=self.latency,
        )
