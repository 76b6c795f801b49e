"""Context windows and the token estimate: the table, the user's overrides, the provider's
own context-length errors, and the message a sub-call gets when its prompt cannot fit."""

from __future__ import annotations

import time

import pytest

from rlm_sdk import BadRequestError, ChatMessage, RateLimitError
from rlm_sdk._window import (
    KNOWN_CONTEXT_WINDOWS,
    context_window,
    estimate_message_tokens,
    estimate_tokens,
    is_context_length_error,
    oversize_error,
    reply_reserve,
)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("abc", 1),
        ("a" * 350, 100),
        ("你好" * 50, 100),  # one token a CJK character
        ("é" * 10 + "a" * 35, 17),  # two-byte letters count as half a token more each
    ],
)
def test_estimate_tokens(text: str, tokens: int) -> None:
    """About 3.5 ASCII characters a token, one token for each other character."""
    assert estimate_tokens(text) == tokens


def test_the_estimate_is_fast_on_ten_megabytes() -> None:
    """10 MB of text is estimated in well under a tenth of a second."""
    text = "the quick brown fox " * 500_000
    started = time.perf_counter()
    assert estimate_tokens(text) == 2_857_143
    assert time.perf_counter() - started < 0.1


def test_estimate_message_tokens_adds_a_per_message_overhead() -> None:
    """A history costs its texts plus a few tokens a message."""
    messages = [ChatMessage(role="system", content="a" * 35), ChatMessage(role="user", content="")]
    assert estimate_message_tokens(messages) == 10 + 4 + 0 + 4


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("openai:gpt-5-mini", 272_000),
        ("openai:gpt-4o-mini-2024-07-18", 128_000),
        ("gpt-4.1-nano", 1_047_576),
        ("anthropic:claude-sonnet-4-5-20250929", 200_000),
        ("openrouter:openai/gpt-4o", 128_000),
        ("ollama:qwen3:8b", 32_768),
        ("openai:GPT-4o", 128_000),
        ("my-private-model", None),
        ("openai:", None),
    ],
)
def test_known_windows_by_the_longest_prefix(model: str, window: int | None) -> None:
    """Known models by the longest prefix of their name; an unknown one has no window."""
    assert context_window(model) == window


def test_overrides_win_by_model_string_then_by_name() -> None:
    """The user's table is read first: the whole model string, then the name alone."""
    overrides = {"ollama:qwen3:8b": 8_192, "gpt-4o": 64_000}
    assert context_window("ollama:qwen3:8b", overrides) == 8_192
    assert context_window("openai:gpt-4o", overrides) == 64_000
    assert context_window("openai:gpt-4o-mini", overrides) == 128_000
    assert context_window("my-private-model", {"my-private-model": 4_096}) == 4_096


def test_every_known_window_is_a_positive_count() -> None:
    """The table holds lower-case name prefixes and positive token counts."""
    assert all(k == k.lower() and v > 0 for k, v in KNOWN_CONTEXT_WINDOWS.items())


def test_reply_reserve() -> None:
    """The reply keeps max_tokens (at most half the window), else an eighth up to 8,192."""
    assert reply_reserve(200_000, None) == 8_192
    assert reply_reserve(4_000, None) == 500
    assert reply_reserve(4_000, 1_000) == 1_000
    assert reply_reserve(4_000, 10_000) == 2_000


@pytest.mark.parametrize(
    "message",
    [
        "openai answered 400: This model's maximum context length is 128000 tokens. However, "
        "your messages resulted in 130512 tokens.",
        "anthropic answered 400: prompt is too long: 210000 tokens > 200000 maximum",
        "openai answered 400: the request exceeds the available context size, try increasing it",
        "openai answered 400: Requested token count exceeds the model's context window",
    ],
)
def test_providers_context_length_errors_are_recognised(message: str) -> None:
    """OpenAI, Anthropic, llama.cpp and vLLM say it in their own words; each is recognised."""
    assert is_context_length_error(BadRequestError(message, provider="p", status_code=400))


def test_an_error_code_in_the_body_is_enough() -> None:
    """OpenAI's `context_length_exceeded` code in the body, whatever the message."""
    error = BadRequestError(
        "openai answered 400: too big",
        status_code=400,
        body_excerpt='{"error": {"code": "context_length_exceeded"}}',
    )
    assert is_context_length_error(error)


def test_other_errors_are_not_context_length_errors() -> None:
    """Another 400, a 429 naming tokens, or a plain exception are not."""
    assert not is_context_length_error(BadRequestError("unknown model", status_code=400))
    assert not is_context_length_error(RateLimitError("too many tokens", status_code=429))
    assert not is_context_length_error(ValueError("maximum context length"))


def test_the_oversize_message_gives_tokens_window_and_advice() -> None:
    """The estimate, the window and how to split, whether it was held back or refused."""
    held = oversize_error("openai:gpt-4o", 150_000, 128_000)
    assert "about 150,000 tokens" in held and "128,000 tokens" in held
    assert "not sent" in held and "llm_query_batched" in held and "Split" in held
    refused = oversize_error("local", 9_000, None, sent=True)
    assert "local refused it" in refused and "about 9,000 tokens" in refused
