"""Context windows: how many tokens a model takes, and a fast estimate of what a prompt costs.

Nothing here calls a tokenizer: the SDK checks every sub-call and every root turn, and a
real tokenizer would cost more than the rest of a turn (and a dependency per vendor). The
estimate counts about 3.5 characters a token for ASCII text and one token a character for
the rest (CJK scripts run close to that), which over-counts English prose and code by 5 to
15 %, so a prompt the estimate lets through fits. It reads a 10 MB prompt in about a
millisecond.

A model's window comes from the user's table first (``RecursiveLM(context_windows=...)``,
by full model string or by name), then from :data:`KNOWN_CONTEXT_WINDOWS` by the longest
prefix of the model's name; an unknown model has no window, and nothing is checked for it
until its provider says a prompt was too long.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

from ._exceptions import APIStatusError, ConfigurationError
from .providers import ChatMessage, split_model

__all__ = [
    "KNOWN_CONTEXT_WINDOWS",
    "MESSAGE_OVERHEAD_TOKENS",
    "context_window",
    "estimate_message_tokens",
    "estimate_tokens",
    "is_context_length_error",
    "oversize_error",
    "reply_reserve",
]

KNOWN_CONTEXT_WINDOWS: Mapping[str, int] = {
    # The largest prompt each model accepts, in tokens, by name prefix (longest match wins).
    # OpenAI
    "gpt-5": 272_000,  # a 400k window, of which 128k are kept for the output
    "gpt-4.1": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    "gpt-oss": 131_072,
    # Anthropic
    "claude-opus-4": 200_000,
    "claude-sonnet-4": 200_000,
    "claude-haiku-4": 200_000,
    "claude-3-7-sonnet": 200_000,
    "claude-3-5-sonnet": 200_000,
    "claude-3-5-haiku": 200_000,
    "claude-3-opus": 200_000,
    "claude-3-haiku": 200_000,
    # Google
    "gemini-2.5": 1_048_576,
    "gemini-2.0": 1_048_576,
    "gemini-1.5-pro": 2_097_152,
    "gemini-1.5-flash": 1_048_576,
    # Open-weight models, at their native length (servers often run them shorter)
    "llama3.1": 131_072,
    "llama3.2": 131_072,
    "llama3.3": 131_072,
    "llama-3.1": 131_072,
    "llama-3.3": 131_072,
    "qwen3": 32_768,
    "qwen2.5": 32_768,
    "deepseek-chat": 128_000,
    "deepseek-reasoner": 128_000,
    "deepseek-v3": 128_000,
    "deepseek-r1": 128_000,
    "mistral-large": 131_072,
    "glm-4.5": 131_072,
    "glm-4.6": 200_000,
    "minimax-m2": 204_800,
    "smollm2": 8_192,
}
"""Context windows of known models, in tokens, by the prefix of their name."""

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens a chat message costs beyond its text (role, separators)."""

_ASCII_CHARS_PER_TOKEN = 3.5
_CONTEXT_LENGTH_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "prompt is too long",
    "too many tokens",
    "exceeds the available context",
    "input is too long",
    "reduce the length",
)


def estimate_tokens(text: str) -> int:
    """A fast, slightly high estimate of the tokens ``text`` takes (no tokenizer)."""
    chars = len(text)
    if text.isascii():
        return math.ceil(chars / _ASCII_CHARS_PER_TOKEN)
    extra = len(text.encode("utf-8", "surrogatepass")) - chars
    others = min(chars, math.ceil(extra / 2))  # two extra bytes a character, about
    return math.ceil((chars - others) / _ASCII_CHARS_PER_TOKEN) + others


def estimate_message_tokens(messages: Sequence[ChatMessage]) -> int:
    """The estimate for a whole chat history."""
    return sum(
        estimate_tokens(m.content)
        + MESSAGE_OVERHEAD_TOKENS
        + sum(estimate_tokens(c.arguments) + MESSAGE_OVERHEAD_TOKENS for c in m.tool_calls)
        for m in messages
    )


def context_window(model: str, overrides: Mapping[str, int] | None = None) -> int | None:
    """The context window of ``model`` in tokens, ``None`` when it is not known.

    ``overrides`` (the user's table) is read first, by the whole model string
    (``"ollama:qwen3:8b"``) and then by its name (``"qwen3:8b"``); then
    :data:`KNOWN_CONTEXT_WINDOWS`, by the longest prefix of the name (a vendor path such as
    OpenRouter's ``openai/`` is ignored).
    """
    overrides = overrides or {}
    if model in overrides:
        return overrides[model]
    try:
        _, name = split_model(model)
    except ConfigurationError:
        return None
    if name in overrides:
        return overrides[name]
    return _known_window(name)


@functools.lru_cache(maxsize=256)
def _known_window(name: str) -> int | None:
    """:data:`KNOWN_CONTEXT_WINDOWS` by the longest prefix; cached, as every run asks for its
    models' windows and the table has dozens of prefixes."""
    name = name.lower().rsplit("/", 1)[-1]
    best: str | None = None
    for prefix in KNOWN_CONTEXT_WINDOWS:
        if name.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return None if best is None else KNOWN_CONTEXT_WINDOWS[best]


def reply_reserve(window: int, max_tokens: int | None) -> int:
    """Tokens of the window kept for the reply: ``max_tokens``, else an eighth (at most 8,192)."""
    if max_tokens is not None:
        return min(max_tokens, window // 2)
    return min(8_192, window // 8)


def is_context_length_error(error: BaseException) -> bool:
    """Whether a provider error says the prompt did not fit the model's context window."""
    if not isinstance(error, APIStatusError) or error.status_code not in (400, 413, 422):
        return False
    text = f"{error.message} {error.body_excerpt or ''}".lower()
    return any(marker in text for marker in _CONTEXT_LENGTH_MARKERS)


def oversize_error(model: str, tokens: int, window: int | None, *, sent: bool = False) -> str:
    """The message a sub-call gets (after ``Error: ``) when its prompt cannot fit.

    ``sent``: the provider refused it (its own context-length error), rather than the
    estimate keeping it from being sent.
    """
    size = "its context window" if window is None else f"its context window of {window:,} tokens"
    if sent:
        what = f"{model} refused it as longer than {size}"
    else:
        what = f"that is more than {model} can take ({size}, with room for the answer), so it was not sent"
    part = max(1_000, (window or tokens) // 2)
    return (
        f"the prompt is about {tokens:,} tokens (estimated) and {what}. Split the text into "
        f"parts of about {part:,} tokens ({part * 3:,} characters), ask about each part "
        "(llm_query_batched does them at once), then combine the answers."
    )
