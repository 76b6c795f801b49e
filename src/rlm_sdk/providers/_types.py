"""The provider protocol: one chat request in, one reply out. Providers know nothing of RLMs."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChatMessage", "CompletionRequest", "CompletionResponse", "Provider", "TokenUsage"]

Role = Literal["system", "user", "assistant"]


class ChatMessage(BaseModel):
    """One message of a chat history."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str


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
    """One reply: the text and what it took to get it."""

    text: str
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
    """

    name: ClassVar[str]

    async def acomplete(self, request: CompletionRequest) -> CompletionResponse:
        """Send one request and return the reply."""
        ...

    async def aclose(self) -> None:
        """Release what the provider created (its HTTP client); idempotent."""
        ...
