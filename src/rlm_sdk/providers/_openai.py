"""The OpenAI Chat Completions wire format.

One mapping serves every server that speaks it: OpenAI, OpenRouter, vLLM, Ollama, llama.cpp,
LM Studio. Sending, retries and errors live in :mod:`._http`; this module only maps a
:class:`CompletionRequest` to JSON and the JSON back to a :class:`CompletionResponse`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
from pydantic import SecretStr

from rlm_sdk._constants import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_OPENAI_BASE_URL,
    DEFAULT_TIMEOUT,
)
from rlm_sdk._settings import load_settings

from ._http import HTTPProvider
from ._types import ChatMessage, CompletionRequest, CompletionResponse, TokenUsage, ToolCall

__all__ = ["OpenAICompatibleProvider"]


class OpenAICompatibleProvider(HTTPProvider):
    """A provider for any server with an OpenAI-compatible ``POST /chat/completions``.

    ``base_url`` and ``api_key`` come from the argument, else the environment or a ``.env``
    file (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``), else the default (OpenAI itself). OpenAI
    needs a key; a local server (vLLM, Ollama, llama.cpp, LM Studio) does not, and then no
    ``Authorization`` header is sent. ``api_key=""`` sends none even if ``OPENAI_API_KEY`` is set.

    Tools go out as ``tools`` (``type: function``); the reply's ``tool_calls`` come back in
    ``CompletionResponse.tool_calls``, assistant messages carry theirs, and results go as
    ``role: tool`` messages.

    ``max_tokens`` goes out as ``max_completion_tokens`` to OpenAI itself (its newer models refuse
    ``max_tokens``) and as ``max_tokens`` to every other server. ``request.extra_body`` is merged
    last, so it can override any field. A reasoning model's ``reasoning_content`` (or
    ``reasoning``) becomes ``CompletionResponse.reasoning``. A reply with ``content: null`` is
    an empty reply when it finished normally (``stop``, ``length``) or carried reasoning; a
    refusal, or any other null content, raises :class:`~rlm_sdk.APIResponseError`.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        api_key: the bearer token.
        timeout: seconds for one attempt (connect, read, write).
        max_retries: retries after the first attempt, for errors that may pass.
        max_in_flight: requests in flight at once through this instance.
        http_client: the ``httpx.AsyncClient`` to send through (its transport, proxies,
            hooks); the provider never closes it. Without one, the provider makes its own, on
            a lean HTTP/1.1 transport (or httpx's, through the proxy that ``HTTPS_PROXY`` /
            ``HTTP_PROXY`` name for ``base_url``), and :meth:`aclose` closes it.
        default_headers: sent with every request, after (and over) the provider's own.

    Raises:
        ConfigurationError: no key for OpenAI itself, or an invalid setting.
    """

    name: ClassVar[str] = "openai"
    supports_tools: ClassVar[bool] = True
    _path: ClassVar[str] = "/chat/completions"
    _default_base_url: ClassVar[str] = DEFAULT_OPENAI_BASE_URL
    _key_env: ClassVar[str] = "OPENAI_API_KEY"
    _request_id_header: ClassVar[str] = "x-request-id"

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
        key: str | SecretStr | None = api_key if api_key is not None else settings.openai_api_key
        super().__init__(
            base_url=base_url or settings.openai_base_url or DEFAULT_OPENAI_BASE_URL,
            api_key=key,
            timeout=timeout,
            max_retries=max_retries,
            max_in_flight=max_in_flight,
            http_client=http_client,
            default_headers=default_headers,
        )

    def _headers(self, api_key: str | None) -> dict[str, str]:
        return {} if api_key is None else {"Authorization": f"Bearer {api_key}"}

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [_message(m) for m in request.messages],
        }
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            official = self.base_url == DEFAULT_OPENAI_BASE_URL
            body["max_completion_tokens" if official else "max_tokens"] = request.max_tokens
        if request.stop:
            body["stop"] = request.stop
        return {**body, **request.extra_body}

    def _parse(self, data: dict[str, Any], request: CompletionRequest) -> CompletionResponse:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError("no choices")
        choice = choices[0]
        message = choice["message"]
        content = message.get("content")
        reasoning = _reasoning(message)
        calls = _tool_calls(message.get("tool_calls"))
        if content is None and calls:
            content = ""
        if not isinstance(content, str):
            refusal = message.get("refusal")
            if (
                content is not None
                or refusal
                or (reasoning is None and choice.get("finish_reason") not in ("stop", "length"))
            ):
                why = (
                    f"refusal={refusal!r}"
                    if refusal
                    else f"finish_reason={choice.get('finish_reason')!r}"
                )
                raise ValueError(f"no text in the reply (content={content!r:.60}, {why})")
            content = ""  # an empty reply: the run reminds the model, it is not a server fault
        usage = data.get("usage") or {}
        return CompletionResponse(
            text=content,
            reasoning=reasoning,
            tool_calls=calls,
            finish_reason=choice.get("finish_reason"),
            usage=TokenUsage(
                prompt_tokens=usage.get("prompt_tokens") or 0,
                completion_tokens=usage.get("completion_tokens") or 0,
                cost=usage.get("cost"),
            ),
            model=data.get("model") or request.model,
            request_id=data.get("id"),
        )


def _reasoning(message: dict[str, Any]) -> str | None:
    """A reasoning model's separate reasoning text (``reasoning_content``, or ``reasoning``)."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _message(message: ChatMessage) -> dict[str, Any]:
    """One history message on the wire: text, an assistant's tool calls, a tool's result."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.tool_calls:
        return {
            "role": message.role,
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def _tool_calls(raw: object) -> list[ToolCall]:
    """The reply's function calls, in order; arguments kept as the model wrote them."""
    if not isinstance(raw, list):
        return []
    calls: list[ToolCall] = []
    for n, item in enumerate(raw):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict):
            continue
        arguments = function.get("arguments")
        if not isinstance(arguments, str):  # some servers send an object
            arguments = "" if arguments is None else json.dumps(arguments)
        calls.append(
            ToolCall(
                id=str(item.get("id") or f"call_{n}"),
                name=str(function.get("name") or ""),
                arguments=arguments,
            )
        )
    return calls
