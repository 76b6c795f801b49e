"""Providers turn a chat history into one model reply; they know nothing of RLMs.

One protocol (:class:`Provider`), two wire formats (OpenAI-compatible, Anthropic) over shared
HTTP machinery, a registry from model-string prefixes (``"anthropic:claude-sonnet-4-5"``) to
providers, and the one router that reads model strings (:class:`ModelRouter`). Test
doubles live in :mod:`rlm_sdk.testing`.
"""

from __future__ import annotations

from ._anthropic import AnthropicProvider
from ._openai import OpenAICompatibleProvider
from ._pacing import RateLimitedProvider
from ._registry import (
    ProviderFactory,
    ProviderRegistry,
    register_provider,
    resolve_model,
    split_model,
)
from ._router import ModelRouter
from ._types import (
    ChatMessage,
    CompletionRequest,
    CompletionResponse,
    Provider,
    TokenUsage,
    ToolCall,
    ToolSpec,
    supports_tools,
)

__all__ = [
    "AnthropicProvider",
    "ChatMessage",
    "CompletionRequest",
    "CompletionResponse",
    "ModelRouter",
    "OpenAICompatibleProvider",
    "Provider",
    "ProviderFactory",
    "ProviderRegistry",
    "RateLimitedProvider",
    "TokenUsage",
    "ToolCall",
    "ToolSpec",
    "register_provider",
    "resolve_model",
    "split_model",
    "supports_tools",
]
