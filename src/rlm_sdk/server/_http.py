"""HTTP plumbing shared by the page's API and the OpenAI-compatible endpoint.

* One error shape everywhere, OpenAI's: ``{"error": {"message", "type", "param", "code"}}``,
  so the ``openai`` client raises its usual exceptions and the page shows ``message``.
* Bodies are read as a bounded stream: a context of tens of MB arrives as the raw body, and
  anything past the limit is refused with 413 before it is all in memory.
* :class:`EventStream` is a server-sent-events response that owns a task group: the producer
  runs inside it, a heartbeat keeps idle connections alive, and a client that goes away
  cancels the producer (and so the run and its REPL workers). An async generator given to
  ``StreamingResponse`` could not own that scope safely.
* :class:`GuardMiddleware` checks ``Host`` (DNS rebinding) and ``Origin`` (another site's
  page posting to this server) and adds the page's security headers.
* :class:`TraceParentMiddleware` (with tracing on) runs each request inside the trace its
  ``traceparent`` header names, so a run it starts, even in the run registry's task group,
  is a child of the caller's span.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._config import ANY_HOST, HEARTBEAT_S, LOOPBACK_NAMES

__all__ = [
    "ApiError",
    "EventStream",
    "GuardMiddleware",
    "TraceParentMiddleware",
    "WriteText",
    "error_response",
    "read_body",
    "sse",
    "sse_json",
    "too_large",
    "until_disconnect",
]

T = TypeVar("T")
WriteText = Callable[[str], Awaitable[None]]

_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ApiError(Exception):
    """An error to answer in OpenAI's shape; raised by handlers, rendered by the app."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def error_response(status: int, message: str, **kw: Any) -> JSONResponse:
    """A JSON error response in OpenAI's shape."""
    return ApiError(status, message, **kw).response()


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the request body is larger than this server accepts ({limit:,} bytes); "
        "start the server with a larger --max-body-mb",
        code="request_too_large",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(request: Request, work: Callable[[], Awaitable[T]]) -> T | None:
    """Run ``work``; cancel it and return ``None`` if the client disconnects first.

    Call it after the body has been read: the next ASGI message is then the disconnect.
    An exception from ``work`` is raised as is (not wrapped in an exception group).
    """
    result: list[T] = []
    failure: list[Exception] = []
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            await _wait_disconnect(request.receive)
            tg.cancel_scope.cancel()

        async def run() -> None:
            try:
                result.append(await work())
            except Exception as err:
                failure.append(err)
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        tg.start_soon(run)
    if failure:
        raise failure[0]
    return result[0] if result else None


class EventStream(Response):
    """A ``text/event-stream`` response written by ``produce(write)`` (see the module docstring).

    ``produce`` is called with ``write(text)``, which sends ``text`` as is (callers format
    ``data: ...\\n\\n`` frames). It runs in a task group with a heartbeat (an SSE comment every
    :data:`HEARTBEAT_S` seconds) and a watcher that cancels everything when the client leaves.
    """

    media_type = "text/event-stream"

    def __init__(self, produce: Callable[[WriteText], Awaitable[None]]) -> None:
        # Not Response.__init__: it would declare a Content-Length for an empty body.
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})
        self._produce = produce

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lock = anyio.Lock()
        gone = False
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async with anyio.create_task_group() as tg:

            async def write(text: str) -> None:
                nonlocal gone
                async with lock:
                    if gone:
                        return
                    try:
                        await send(
                            {"type": "http.response.body", "body": text.encode(), "more_body": True}
                        )
                    except OSError:
                        gone = True
                        tg.cancel_scope.cancel()

            async def watch() -> None:
                nonlocal gone
                await _wait_disconnect(receive)
                gone = True
                tg.cancel_scope.cancel()

            async def heartbeat() -> None:
                while True:
                    await anyio.sleep(HEARTBEAT_S)
                    await write(": keep-alive\n\n")

            async def produce() -> None:
                await self._produce(write)
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            tg.start_soon(heartbeat)
            tg.start_soon(produce)
        if not gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def sse(data: str, *, event: str | None = None, id: int | None = None) -> str:
    """One server-sent event frame; ``data`` must be a single line (JSON is)."""
    head = (f"event: {event}\n" if event else "") + (f"id: {id}\n" if id is not None else "")
    return f"{head}data: {data}\n\n"


def sse_json(payload: Any, *, event: str | None = None, id: int | None = None) -> str:
    return sse(json.dumps(payload, separators=(",", ":")), event=event, id=id)


class GuardMiddleware:
    """Refuse foreign ``Host`` headers (400) and foreign ``Origin`` on writes (403); add headers.

    ``allowed_hosts`` as :class:`~rlm_sdk.server.ServerConfig` defines it: exact ``host:port``
    values, ``None`` for the loopback names on any port, or ``["*"]`` for any host (then an
    ``Origin`` must name the host the request was sent to).
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str] | None) -> None:
        self.app = app
        self.allowed = (
            None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        )

    def _trusted(self, netloc: str, host: str) -> bool:
        if self.allowed is None:
            name = netloc if netloc.endswith("]") else netloc.rsplit(":", 1)[0]
            return name in LOOPBACK_NAMES
        if ANY_HOST in self.allowed:
            return netloc == host
        return netloc in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "").lower()
        if not self._trusted(host, host):
            accepted = sorted(self.allowed) if self.allowed is not None else LOOPBACK_NAMES
            await error_response(
                400,
                f"invalid Host header {host!r}: this server only answers to " + ", ".join(accepted),
                code="invalid_host",
            )(scope, receive, send)
            return
        origin = headers.get("origin")
        foreign = origin is not None and not self._trusted(urlsplit(origin).netloc.lower(), host)
        if foreign and scope["method"] not in _SAFE_METHODS:
            await error_response(
                403, f"cross-origin request from {origin!r} refused", code="forbidden_origin"
            )(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name, value in _SECURITY_HEADERS.items():
                    out.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class TraceParentMiddleware:
    """Handle each HTTP request inside :func:`rlm_sdk.otel.continue_trace` of its headers.

    Tasks started while handling it (a run in the registry's task group, the ``/v1`` run)
    copy the context then, and with it the caller's span as their parent.
    """

    def __init__(self, app: ASGIApp) -> None:
        from rlm_sdk.otel import continue_trace  # the `otel` extra, only when tracing is on

        self.app = app
        self._continue = continue_trace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self._continue(Headers(scope=scope)):
            await self.app(scope, receive, send)
