"""A provider that answers from a script: a TEST/DEMO double, no model and no network.

Tests of everything above the provider layer (the orchestrator, the CLI, examples) need replies
they can predict; this double gives them, records what it was asked, and can be slow or fail
on cue.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self, TypeAlias

import anyio

from rlm_sdk._exceptions import APIResponseError
from rlm_sdk.providers import CompletionRequest, CompletionResponse, TokenUsage, ToolCall

__all__ = ["ReplyFunction", "ScriptedProvider", "tool_reply"]

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
        tools: whether it says it supports tool calling (its ``supports_tools``), so that
            ``protocol="auto"`` sends it tools. Script tool calls with :func:`tool_reply`.

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
        tools: bool = True,
    ) -> None:
        if isinstance(replies, str):
            raise TypeError("replies is a sequence of replies or a function; for one reply: [text]")
        self._function = replies if callable(replies) else None
        self._script = [] if callable(replies) else list(replies)
        self.latency = latency
        self.cost_per_call = cost_per_call
        self.supports_tools = tools
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


def tool_reply(
    *calls: tuple[str, Mapping[str, Any] | str], text: str = "", model: str = "scripted"
) -> CompletionResponse:
    """A scripted reply that calls tools: each call is ``(name, arguments)``, the arguments a
    mapping (sent as JSON) or a string sent as it is (so a test can send invalid JSON).

    Example: ``tool_reply(("repl", {"code": "print(len(context))"}))``.
    """
    made = [
        ToolCall(
            id=f"call_{n}",
            name=name,
            arguments=arguments if isinstance(arguments, str) else json.dumps(dict(arguments)),
        )
        for n, (name, arguments) in enumerate(calls, start=1)
    ]
    return CompletionResponse(
        text=text,
        tool_calls=made,
        finish_reason="tool_calls" if made else "stop",
        usage=TokenUsage(prompt_tokens=1, completion_tokens=_estimate_tokens(text + str(made))),
        model=model,
    )
