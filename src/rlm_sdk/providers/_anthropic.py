"""The Anthropic Messages wire format, over plain httpx.

No vendor SDK: sending, retries and errors are the same as for every provider (:mod:`._http`);
this module maps a :class:`CompletionRequest` to ``POST /messages`` and the reply back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from rlm_sdk._constants import (
    ANTHROPIC_VERSION,
    DEFAULT_ANTHROPIC_BASE_URL,
    DEFAULT_ANTHROPIC_MAX_TOKENS,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
)
from rlm_sdk._settings import load_settings

from ._http import HTTPProvider
from ._types import ChatMessage, CompletionRequest, CompletionResponse, TokenUsage, ToolCall

__all__ = ["AnthropicProvider"]


class AnthropicProvider(HTTPProvider):
    """A provider for the Anthropic Messages API (``POST /messages``).

    ``base_url`` and ``api_key`` come from the argument, else the environment or a ``.env``
    file (``ANTHROPIC_BASE_URL``, ``ANTHROPIC_API_KEY``), else the default (Anthropic itself,
    which needs a key; a proxy at another URL may do without).

    Tools go out as ``tools`` (``input_schema``); ``tool_use`` blocks come back as
    ``CompletionResponse.tool_calls``, and tool results go back as ``tool_result`` blocks.

    System messages are joined into the top-level ``system`` field; ``stop`` becomes
    ``stop_sequences``; ``max_tokens`` defaults to ``DEFAULT_ANTHROPIC_MAX_TOKENS`` (the API
    requires one). The reply text is the concatenation of the ``text`` blocks, and ``thinking``
    blocks become ``CompletionResponse.reasoning``. A reply with no block at all that ended
    its turn is an empty reply; one with blocks but no text nor thinking raises
    :class:`~rlm_sdk.APIResponseError`. Prompt tokens include cache reads and writes.

    Args:
        base_url: the API root, e.g. ``https://api.anthropic.com/v1``.
        api_key: sent as ``x-api-key``.
        timeout: seconds for one attempt (connect, read, write).
        max_retries: retries after the first attempt, for errors that may pass.
        max_in_flight: requests in flight at once through this instance.
        http_client: the ``httpx.AsyncClient`` to send through (its transport, proxies,
            hooks); the provider never closes it. Without one, the provider makes its own, on
            a lean HTTP/1.1 transport (or httpx's, through the proxy that ``HTTPS_PROXY`` /
            ``HTTP_PROXY`` name for ``base_url``), and :meth:`aclose` closes it.
        default_headers: sent with every request, after (and over) the provider's own, e.g.
            ``anthropic-beta``.

    Raises:
        ConfigurationError: no key for Anthropic itself, or an invalid setting.
    """

    name: ClassVar[str] = "anthropic"
    supports_tools: ClassVar[bool] = True
    _path: ClassVar[str] = "/messages"
    _default_base_url: ClassVar[str] = DEFAULT_ANTHROPIC_BASE_URL
    _key_env: ClassVar[str] = "ANTHROPIC_API_KEY"
    _request_id_header: ClassVar[str] = "request-id"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        http_client: httpx.AsyncClient | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        settings = load_settings()
        key: str | SecretStr | None = api_key if api_key is not None else settings.anthropic_api_key
        super().__init__(
            base_url=base_url or settings.anthropic_base_url or DEFAULT_ANTHROPIC_BASE_URL,
            api_key=key,
            timeout=timeout,
            max_retries=max_retries,
            max_in_flight=max_in_flight,
            http_client=http_client,
            default_headers=default_headers,
        )

    def _headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if api_key is not None:
            headers["x-api-key"] = api_key
        return headers

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        max_tokens = request.max_tokens
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": DEFAULT_ANTHROPIC_MAX_TOKENS if max_tokens is None else max_tokens,
            "messages": _messages(request.messages),
        }
        if request.tools:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop_sequences"] = request.stop
        return {**body, **request.extra_body}

    def _parse(self, data: dict[str, Any], request: CompletionRequest) -> CompletionResponse:
        blocks = data.get("content")
        if not isinstance(blocks, list):
            raise ValueError("no content blocks")
        texts = [block["text"] for block in blocks if block.get("type") == "text"]
        thoughts = [_thought(block) for block in blocks if "thinking" in str(block.get("type"))]
        calls = [
            ToolCall(
                id=str(block.get("id") or f"toolu_{n}"),
                name=str(block.get("name") or ""),
                arguments=json.dumps(block.get("input", {})),
            )
            for n, block in enumerate(blocks)
            if block.get("type") == "tool_use"
        ]
        if (
            not texts
            and not thoughts
            and not calls
            and (blocks or data.get("stop_reason") != "end_turn")
        ):
            raise ValueError(
                f"no text block in the reply (stop_reason={data.get('stop_reason')!r})"
            )
        usage = data.get("usage") or {}
        prompt_tokens = sum(
            usage.get(field) or 0
            for field in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        return CompletionResponse(
            text="".join(texts),
            reasoning="\n\n".join(thoughts) or None,
            tool_calls=calls,
            finish_reason=data.get("stop_reason"),
            usage=TokenUsage(
                prompt_tokens=prompt_tokens, completion_tokens=usage.get("output_tokens") or 0
            ),
            model=data.get("model") or request.model,
        )


def _thought(block: dict[str, Any]) -> str:
    """A ``thinking`` block's text; a ``redacted_thinking`` block only says it was there."""
    if block.get("type") == "redacted_thinking":
        return "[redacted thinking]"
    return str(block.get("thinking") or "")


def _messages(history: list[ChatMessage]) -> list[dict[str, Any]]:
    """The history without system messages, as Messages API turns.

    An assistant's tool calls become ``tool_use`` blocks (arguments that are not a JSON
    object become ``{}``); tool results become ``tool_result`` blocks of a user turn, and
    consecutive turns of one role are merged into one, as the API requires.
    """
    turns: list[dict[str, Any]] = []
    for m in history:
        if m.role == "system":
            continue
        role = "user" if m.role == "tool" else m.role
        if m.role == "tool":
            blocks: list[dict[str, Any]] = [
                {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            ]
        elif m.tool_calls:
            blocks = [{"type": "text", "text": m.content}] if m.content else []
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": _input(c.arguments)}
                for c in m.tool_calls
            ]
        else:
            blocks = [{"type": "text", "text": m.content}]
        if turns and turns[-1]["role"] == role:
            previous = turns[-1]["content"]
            if isinstance(previous, str):
                previous = turns[-1]["content"] = [{"type": "text", "text": previous}]
            previous.extend(blocks)
        elif len(blocks) == 1 and blocks[0]["type"] == "text":
            turns.append({"role": role, "content": m.content})
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def _input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if arguments else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
