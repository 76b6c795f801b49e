"""``/v1``: an RLM behind the OpenAI chat-completions API.

Point any OpenAI client at ``http://127.0.0.1:PORT/v1`` and a run looks like a model call.
The request maps to a run as :mod:`rlm_sdk._chat` defines (last user message = the query,
earlier messages = the context); the reply is the chat drop-in's (:func:`~rlm_sdk._chat.to_chat_completion`).

Model names: ``rlm:`` + one of the server's models, e.g. ``rlm:openai:gpt-5-mini`` (the
root model). The rest goes in an optional ``rlm`` object in the body, which the ``openai``
client sends with ``extra_body``::

    client.chat.completions.create(
        model="rlm:openai:gpt-5-mini",
        messages=[...],
        extra_body={"rlm": {"sub_model": "openai:gpt-5-nano", "max_depth": 2, "max_iterations": 10}},
    )

A conversation: send ``X-RLM-Session: <id>`` (any id of your choosing) with every request of
it, and the server keeps one session per id (:mod:`._sessions`): one REPL worker kept
between requests, the earlier turns remembered; a follow-up request's last user message is
the new query. Without the header every request is a run of its own.

``response_format`` is OpenAI's: with ``{"type": "json_schema", "json_schema": {"name": ...,
"schema": {...}}}`` (what ``client.chat.completions.parse(response_format=Model)`` sends) or
``{"type": "json_object"}``, the answer must match, and the message's content is the answer
as JSON; a run whose answers never match is a 500 with code ``output_validation_failed``.

``sub_model`` must also be one of the server's models. ``stream=true`` runs the RLM and then
streams the final answer as ``chat.completion.chunk`` events (comment lines keep the
connection alive meanwhile); a client that disconnects cancels the run.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rlm_sdk import (
    ChatCompletion,
    ConfigurationError,
    OutputValidationError,
    ProviderError,
    RLMError,
    RLMResult,
)
from rlm_sdk._frontend import messages_to_run, output_json, reply_format_shape, to_chat_completion
from rlm_sdk.providers import Provider
from rlm_sdk.repl import ContextData, ForkServer

from ._config import MODEL_PREFIX, ServerConfig
from ._http import ApiError, EventStream, WriteText, read_body, sse_json, until_disconnect
from ._jobs import RunOptions, ignore_events, make_job, make_rlm, parse_options, unknown_model
from ._runs import EventSink, Job
from ._sessions import SESSION_HEADER, SessionPool, session_id

__all__ = ["chat_completions", "list_models"]

_PIECE = 48
"""Characters of the answer per streamed chunk."""


def list_models(config: ServerConfig) -> JSONResponse:
    """``GET /v1/models``: ``rlm:`` + every configured model."""
    data = [
        {"id": MODEL_PREFIX + m, "object": "model", "created": 0, "owned_by": "rlm-sdk"}
        for m in config.models
    ]
    return JSONResponse({"object": "list", "data": data})


def _run_failed(err: Exception) -> ApiError:
    if isinstance(err, OutputValidationError):
        return ApiError(
            500,
            f"no answer matched the response_format: {err}",
            type="server_error",
            code="output_validation_failed",
        )
    if isinstance(err, ProviderError):
        return ApiError(
            502, f"the model provider failed: {err}", type="api_error", code="provider_error"
        )
    return ApiError(
        500, f"the run failed: {type(err).__name__}: {err}", type="server_error", code="run_failed"
    )


def _parse_request(config: ServerConfig, raw: bytes) -> tuple[dict[str, Any], str]:
    """The JSON body and the root model it names, or an :class:`ApiError`."""
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    name = payload.get("model")
    if not isinstance(name, str) or not name:
        raise ApiError(
            400, "'model' is required, e.g. 'rlm:" + config.models[0] + "'", param="model"
        )
    root = name.removeprefix(MODEL_PREFIX)
    if not name.startswith(MODEL_PREFIX) or root not in config.models:
        raise unknown_model(name, [MODEL_PREFIX + m for m in config.models])
    return payload, root


async def chat_completions(
    request: Request,
    config: ServerConfig,
    forkserver: ForkServer | None = None,
    provider: Provider | None = None,
    on_event: EventSink | None = None,
    sessions: SessionPool | None = None,
) -> Response:
    """``POST /v1/chat/completions`` (see the module docstring)."""
    payload, root = _parse_request(config, await read_body(request, config.max_body_bytes))
    extra = payload.get("rlm") or {}
    if not isinstance(extra, dict):
        raise ApiError(400, "'rlm' must be an object", param="rlm")
    options = parse_options(
        config,
        model=root,
        sub_model=extra.get("sub_model"),
        max_iterations=extra.get("max_iterations"),
        max_depth=extra.get("max_depth"),
        prefix="rlm.",
    )
    messages = payload.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "'messages' must be a list of message objects", param="messages")
    try:
        context, query = messages_to_run(messages)
    except ConfigurationError as err:
        raise ApiError(400, str(err), param="messages") from err
    output = _response_format(payload)
    sid = session_id(request.headers.get(SESSION_HEADER))
    if sid is None:
        job = make_job(config, options, context, query, forkserver, provider, on_event, output)
    else:
        job = _session_job(
            sessions, sid, options, context, query, config, forkserver, provider, on_event, output
        )
    model_name = str(payload["model"])

    if payload.get("stream") is True:
        stream_options = payload.get("stream_options")
        include_usage = (
            isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        )

        async def produce(write: WriteText) -> None:
            await _stream(
                write, model_name, lambda: job(ignore_events), include_usage, output is not None
            )

        stream = EventStream(produce)
        if sid is not None:
            stream.headers[SESSION_HEADER] = sid
        return stream

    try:
        result = await until_disconnect(request, lambda: job(ignore_events))
    except RLMError as err:
        raise _run_failed(err) from err
    if result is None:  # the client went away; the run was cancelled
        return Response(status_code=499)
    return JSONResponse(
        _completion(result, model_name, output is not None).model_dump(mode="json"),
        headers=None if sid is None else {SESSION_HEADER: sid},
    )


def _session_job(
    sessions: SessionPool | None,
    sid: str,
    options: RunOptions,
    context: ContextData,
    query: str,
    config: ServerConfig,
    forkserver: ForkServer | None,
    provider: Provider | None,
    on_event: EventSink | None,
    output: Any,
) -> Job:
    """The job of a request in conversation ``sid``: a query of the pool's session."""
    if sessions is None:
        raise ApiError(
            400, f"this server keeps no sessions ({SESSION_HEADER})", code="sessions_off"
        )

    async def job(sink: EventSink) -> RLMResult:
        return await sessions.ask(
            sid,
            options,
            lambda: make_rlm(config, options, forkserver, provider, on_event),
            context,
            query or None,
            on_event=sink,
            output_type=output,
        )

    return job


def _response_format(payload: dict[str, Any]) -> Any:
    """The request's ``response_format`` as an ``output_type`` (``None``: plain text)."""
    try:
        return reply_format_shape(payload.get("response_format"))
    except ConfigurationError as err:
        raise ApiError(400, str(err), param="response_format") from err


def _completion(result: RLMResult, model: str, typed: bool) -> ChatCompletion:
    """The reply; with a ``response_format``, its content is the typed answer as JSON."""
    content = output_json(result.output) if typed and result.answer is not None else None
    return to_chat_completion(result, model, content=content)


async def _stream(
    write: WriteText,
    model: str,
    run: Callable[[], Awaitable[RLMResult]],
    include_usage: bool,
    typed: bool = False,
) -> None:
    """Write a run's answer as chat-completion chunks, then ``[DONE]``."""
    chunk_id = f"chatcmpl-rlm-{uuid.uuid4().hex[:16]}"
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        return sse_json(
            {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
        )

    await write(chunk({"role": "assistant", "content": ""}))
    try:
        result = await run()
    except Exception as err:  # the status line is sent: a failure can only travel as an event
        await write(sse_json(_run_failed(err).body()))
        await write("data: [DONE]\n\n")
        return
    completion = _completion(result, model, typed)
    text = completion.choices[0].message.content or ""
    for start in range(0, len(text), _PIECE):
        await write(chunk({"content": text[start : start + _PIECE]}))
    await write(chunk({}, completion.choices[0].finish_reason))
    if include_usage:
        usage = completion.usage.model_dump(mode="json")
        await write(
            sse_json(
                {
                    "id": chunk_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        )
    await write("data: [DONE]\n\n")
