"""The chat-completion shape of a run, for ``rlm.chat.completions.create(messages=...)``.

Pure mapping, both ways; :class:`~rlm_sdk.RecursiveLM` owns the ``chat`` namespace that uses
it, and ``rlm-sdk serve`` uses it for ``/v1/chat/completions``. From a chat request to a run:

* the last ``user`` message is the query;
* the messages before it are the context, unless ``context=`` is passed: one message
  becomes a ``str``; several become a ``list`` of ``"role: content"`` strings, so the model
  sees how many there are and how long each is;
* ``model`` (optional) replaces the root model for this call.

The reply is shaped like an OpenAI chat completion (``id``, ``object``, ``created``,
``model``, ``choices[0].message.content``, ``finish_reason``, ``usage``) with the full
:class:`RLMResult` attached as ``rlm``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel

from ._exceptions import ConfigurationError
from ._types import RLMResult
from .repl import ContextData

__all__ = [
    "ChatCompletion",
    "ChatCompletionChoice",
    "ChatCompletionMessage",
    "ChatCompletionUsage",
    "messages_to_run",
    "to_chat_completion",
]


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None


class ChatCompletionChoice(BaseModel):
    index: int = 0
    message: ChatCompletionMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float | None = None


class ChatCompletion(BaseModel):
    """An OpenAI-shaped chat completion, with the run's details in ``rlm``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: ChatCompletionUsage
    rlm: RLMResult


def messages_to_run(
    messages: Iterable[Mapping[str, Any]],
) -> tuple[ContextData, str]:
    """Split chat messages into (context, query) as the module docstring describes."""
    items = [(str(m.get("role", "user")), _text(m.get("content"))) for m in messages]
    last_user = max((i for i, (role, _) in enumerate(items) if role == "user"), default=None)
    if last_user is None:
        raise ConfigurationError("messages must contain at least one 'user' message (the query)")
    query = items[last_user][1]
    before = [item for i, item in enumerate(items) if i != last_user]
    context: ContextData
    if len(before) == 1:
        context = before[0][1]
    else:
        context = [f"{role}: {content}" for role, content in before]
    return context, query


def _text(content: Any) -> str:
    """Message content as text; OpenAI's list-of-parts form keeps its text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, Mapping) and p.get("type") == "text"
        )
    return str(content)


def to_chat_completion(
    result: RLMResult, model: str, *, content: str | None = None
) -> ChatCompletion:
    """Wrap a run's result in the chat-completion shape; ``content`` replaces the answer as
    the message's text (a typed answer as JSON)."""
    usage = result.usage
    return ChatCompletion(
        id=f"chatcmpl-rlm-{result.run_id}",
        created=int(time.time()),
        model=model,
        choices=[
            ChatCompletionChoice(
                message=ChatCompletionMessage(
                    content=result.answer if content is None else content
                ),
                finish_reason="length"
                if result.stop_reason in ("max_iterations", "limit")
                else "stop",
            )
        ],
        usage=ChatCompletionUsage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            cost=usage.cost,
        ),
        rlm=result,
    )
