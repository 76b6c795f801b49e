"""The provider protocol: one chat request in, one reply out. Providers know nothing of RLMs."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from rlm_sdk._types import ToolCall

__all__ = [
    "ChatMessage",
    "CompletionRequest",
    "CompletionResponse",
    "Provider",
    "TokenUsage",
    "ToolCall",
    "ToolSpec",
    "supports_tools",
]

Role = Literal["system", "user", "assistant", "tool"]


class ToolSpec(BaseModel):
    """A function the model may call: its name, what it does, and its parameters' JSON schema."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    parameters: dict[str, Any]


class ChatMessage(BaseModel):
    """One message of a chat history.

    An ``assistant`` message may carry the ``tool_calls`` the model made; a ``tool`` message
    is the result of one of them, paired by ``tool_call_id``.
    """

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


class CompletionRequest(BaseModel):
    """What a provider is asked: a model, a history and the sampling knobs.

    ``extra_body`` is merged into the wire request as is, for fields this model does not name
    (``reasoning_effort``, ``top_p``, a vendor's own options).
    """

    model: str
    messages: list[ChatMessage]
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    tools: list[ToolSpec] | None = None
    """Functions the model may call (only for providers that support tools)."""
    extra_body: dict[str, Any] = Field(default_factory=dict)


class TokenUsage(BaseModel):
    """Tokens used by one call; ``cost`` in USD when the provider reports it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class CompletionResponse(BaseModel):
    """One reply: the text and what it took to get it.

    ``reasoning`` is what a reasoning model sent apart from its text (OpenAI-compatible
    ``reasoning_content`` / ``reasoning``, Anthropic ``thinking`` blocks); it is recorded,
    never parsed and never sent back.
    """

    text: str
    reasoning: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    """The calls the model made, in order (a provider that supports tools fills this)."""
    finish_reason: str | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    model: str
    request_id: str | None = None
    latency_s: float = 0.0


@runtime_checkable
class Provider(Protocol):
    """Anything that turns a :class:`CompletionRequest` into a :class:`CompletionResponse`.

    One instance can be shared by every run in a process: it owns its HTTP client and its
    bound on requests in flight. Implementations raise :class:`rlm_sdk.ProviderError`
    subclasses, never foreign exceptions.

    Tool calling is an optional capability. A provider that has it says so with a
    ``supports_tools`` attribute: ``True`` (a class variable), or a method
    ``supports_tools(model) -> bool`` for one that serves several models. It then sends
    ``request.tools``, returns the model's calls in ``CompletionResponse.tool_calls``, and
    maps history messages with ``tool_calls`` and ``role="tool"`` results to its wire
    format. A server that refuses tools answers 400 naming ``tools`` (or ``tool_choice``),
    raised as :class:`rlm_sdk.BadRequestError`; a run then goes on without them. Read the
    capability with :func:`supports_tools`.
    """

    name: ClassVar[str]

    async def acomplete(self, request: CompletionRequest) -> CompletionResponse:
        """Send one request and return the reply."""
        ...

    async def aclose(self) -> None:
        """Release what the provider created (its HTTP client); idempotent."""
        ...


def supports_tools(provider: object, model: str) -> bool:
    """Whether ``provider`` says it can send tools for ``model`` (see :class:`Provider`)."""
    capability = getattr(provider, "supports_tools", False)
    if callable(capability):
        return bool(capability(model))
    return capability is True
