"""A real OpenAI-compatible HTTP server on 127.0.0.1: a TEST/DEMO double.

Mocked transports (respx) cannot show what happens on a socket: connections kept alive and
reused, or leaked; a body cut off mid-way; a hundred requests overlapping. This server shows
it, with faults on cue. It speaks HTTP/1.1 through h11 on non-blocking sockets driven by anyio,
and runs its own event loop in a background (daemon) thread, so sync tests, async tests on any
loop and benchmark scripts can all use it the same way.

Its latency counts from when a request's first bytes reached the machine, as the kernel stamps
them (``SO_TIMESTAMPNS``), not from when this one Python thread got round to reading them: a
real model server answers many clients at once, and here 32 large requests arriving together
would otherwise see their latency start tens of milliseconds late.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeAlias

import anyio
import anyio.abc
import h11
from anyio.from_thread import BlockingPortal

__all__ = ["FakeChatServer", "RecordedRequest", "ServerReply"]

ServerReply: TypeAlias = Callable[
    [dict[str, Any]], str | dict[str, Any] | Awaitable[str | dict[str, Any]]
]
"""From the parsed request body to the assistant's text, or to a whole response object."""

_HOST = "127.0.0.1"
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value where Python lacks it
_STAMP = struct.Struct("qq")
_ANCILLARY = socket.CMSG_SPACE(_STAMP.size)
_RECEIVE = 65536
_CUT_BODY = b'{"id": "chatcmpl-cut", "object": "chat.completion", "choices": [{"message": {"cont'
_GONE = (anyio.ClosedResourceError, h11.ProtocolError, OSError)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received: ``headers`` has lower-case names, ``json`` the parsed body."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any


@dataclass(frozen=True)
class _Fault:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    cut: bool = False


def _echo(body: dict[str, Any]) -> str:
    messages = body.get("messages") or [{}]
    return f"echo: {messages[-1].get('content', '')}"


async def _sleep_until(deadline: float) -> None:
    delay = deadline - anyio.current_time()
    if delay > 0:
        await anyio.sleep(delay)


class _Wire:
    """A client's non-blocking socket, read with ``recvmsg`` to learn when its bytes arrived."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.arrived: float | None = None
        """When the first bytes read since :meth:`expect` reached the machine (anyio's clock)."""
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)

    def expect(self) -> None:
        self.arrived = None

    async def receive(self) -> bytes:
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(_RECEIVE, _ANCILLARY)
            except BlockingIOError:
                await anyio.wait_readable(self.sock)
                continue
            if self.arrived is None:
                self.arrived = _arrival(ancillary)
            return data

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                await anyio.wait_writable(self.sock)

    def close(self) -> None:
        anyio.notify_closing(self.sock)
        self.sock.close()


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> float:
    """When data reached the machine, on anyio's clock: the kernel's stamp, else now."""
    now = anyio.current_time()
    for level, kind, raw in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(raw) >= _STAMP.size:
            seconds, nanoseconds = _STAMP.unpack_from(raw)
            if seconds <= 0:
                break  # a packet that arrived unstamped
            stamp = float(seconds + nanoseconds / 1e9)
            return now - max(0.0, time.time() - stamp)
    return now


async def _next_event(conn: h11.Connection, wire: _Wire) -> Any:
    """The next h11 event, reading from the socket as needed (end of stream -> ConnectionClosed)."""
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(await wire.receive())
    return event


class FakeChatServer:
    """A TEST/DEMO double: an OpenAI-compatible server on 127.0.0.1, in a background thread.

    Serves ``POST /v1/chat/completions`` and ``GET /v1/models``, with keep-alive and any number of
    concurrent connections. Use it as ``with FakeChatServer(...) as server:`` or with
    :meth:`start` and :meth:`stop`, then point a provider at :attr:`base_url`.

    Args:
        reply: called with the parsed JSON body of each chat request; returns the assistant
            text, or tool calls as ``{"tool_calls": [{"name": ..., "arguments": {...}}],
            "content": ...}`` (arguments as a mapping, or a string sent as it is), or a whole
            response object (one with ``choices``, or any other mapping) to send as is. May be
            async. Echoes the last message by default. If it raises, the server answers 500.
        latency: seconds from a chat request's arrival to its reply, slept without blocking
            so concurrent requests overlap; the reply function's own time counts within it.
        model: the model reported by ``/v1/models`` and when a request names none.
        port: 0 for an ephemeral port.
        tools: ``False`` plays a server without tool calling: a request carrying ``tools``
            gets a 400 whose error names ``tools``, as llama.cpp's does.

    Attributes:
        requests: every request received, in order (faulted ones included).
    """

    def __init__(
        self,
        reply: ServerReply | None = None,
        *,
        latency: float = 0.0,
        model: str = "fake-model",
        port: int = 0,
        tools: bool = True,
    ) -> None:
        self._reply = reply or _echo
        self.tools = tools
        self.latency = latency
        self.model = model
        self._port = port
        self.requests: list[RecordedRequest] = []
        self._faults: deque[_Fault] = deque()
        self._open = self._total = 0
        self._thread: threading.Thread | None = None
        self._portal: BlockingPortal | None = None

    # --- lifecycle, from any thread -----------------------------------------------------------

    def start(self) -> Self:
        """Start serving in a background thread; returns once the port is bound.

        The thread is a daemon: a script that forgets :meth:`stop` still exits.
        """
        if self._thread is not None:
            raise RuntimeError("FakeChatServer is already running")
        started: Future[int] = Future()
        thread = threading.Thread(
            target=anyio.run, args=(self._main, started), name="FakeChatServer", daemon=True
        )
        thread.start()
        self._port = started.result()
        self._thread = thread
        return self

    def stop(self) -> None:
        """Close every connection and the listener, and end the thread; idempotent."""
        thread, portal = self._thread, self._portal
        self._thread = self._portal = None
        if portal is not None:
            portal.call(portal.stop, True)
        if thread is not None:
            thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The API root to give a provider, e.g. ``http://127.0.0.1:54321/v1``."""
        if self._thread is None:
            raise RuntimeError("FakeChatServer is not running; call start() or use `with`")
        return f"http://{_HOST}:{self._port}/v1"

    @property
    def open_connections(self) -> int:
        """Client connections open right now (to prove that none leaks)."""
        return self._open

    @property
    def total_connections(self) -> int:
        """Client connections accepted so far (to prove that keep-alive reuses them)."""
        return self._total

    # --- faults ---------------------------------------------------------------------------

    def respond_next(
        self,
        status: int,
        *,
        body: str | bytes | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` chat requests with this status, headers and body.

        The body defaults to an OpenAI-style error object; a mapping is sent as JSON, a str or
        bytes as is (e.g. HTML with status 200). Example: ``respond_next(429,
        headers={"retry-after": "1"}, times=2)``.
        """
        if body is None:
            body = {"error": {"message": f"injected status {status}", "type": "fake_error"}}
        data = json.dumps(body).encode() if isinstance(body, Mapping) else body
        fault = _Fault(
            status, dict(headers or {}), data.encode() if isinstance(data, str) else data
        )
        self._faults.extend([fault] * times)

    def truncate_next(self, times: int = 1) -> None:
        """Answer the next ``times`` chat requests with a 200 whose body is cut off mid-way.

        The ``Content-Length`` promises more than is sent, then the connection is closed.
        """
        self._faults.extend([_Fault(cut=True)] * times)

    # --- serving, in the server's thread -------------------------------------------------

    async def _main(self, started: Future[int]) -> None:
        """The server thread's whole life: bind, report the port, serve until stopped."""
        try:
            listener = socket.create_server((_HOST, self._port), backlog=1024)
            listener.setblocking(False)
            # On the listener too: the kernel stamps packets only while some socket asks for
            # it, and a request can arrive before its connection is accepted.
            with contextlib.suppress(OSError):
                listener.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except BaseException as err:
            started.set_exception(err)
            raise
        try:
            async with BlockingPortal() as portal, anyio.create_task_group() as tg:
                tg.start_soon(self._accept, listener, tg)
                self._portal = portal
                started.set_result(listener.getsockname()[1])
                await portal.sleep_until_stopped()
                tg.cancel_scope.cancel()
        finally:
            anyio.notify_closing(listener)
            listener.close()

    async def _accept(self, listener: socket.socket, tg: anyio.abc.TaskGroup) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                await anyio.wait_readable(listener)
                continue
            tg.start_soon(self._serve_connection, _Wire(sock))

    async def _serve_connection(self, wire: _Wire) -> None:
        self._open += 1
        self._total += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while await self._serve_request(conn, wire):
                conn.start_next_cycle()
        except _GONE:
            pass  # the client went away mid-exchange
        finally:
            wire.close()
            self._open -= 1

    async def _serve_request(self, conn: h11.Connection, wire: _Wire) -> bool:
        """Read one request and answer it; False when the connection must close."""
        wire.expect()
        request = await _next_event(conn, wire)
        if not isinstance(request, h11.Request):
            return False
        # The latency counts from the request's arrival, so the server's own parsing and reply
        # work (the stand-in model's "thinking") is inside it rather than added on top.
        arrived = anyio.current_time() if wire.arrived is None else wire.arrived
        deadline = arrived + self.latency
        body = bytearray()
        while not isinstance(event := await _next_event(conn, wire), h11.EndOfMessage):
            if not isinstance(event, h11.Data):
                return False
            body += event.data
        method, path = request.method.decode(), request.target.decode()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        headers = {name.decode().lower(): value.decode() for name, value in request.headers}
        self.requests.append(RecordedRequest(method, path, headers, parsed))

        if (method, path) == ("GET", "/v1/models"):
            models = {"object": "list", "data": [{"id": self.model, "object": "model"}]}
            await self._send(conn, wire, 200, models)
        elif (method, path) != ("POST", "/v1/chat/completions"):
            await self._send(conn, wire, 404, _error(f"no route for {method} {path}"))
        else:
            fault = self._faults.popleft() if self._faults else None
            if fault is not None:
                await _sleep_until(deadline)
                if fault.cut:
                    await self._send_cut(conn, wire)
                    return False
                await self._send(conn, wire, fault.status, fault.body, fault.headers)
            elif not isinstance(parsed, dict):
                await _sleep_until(deadline)
                await self._send(conn, wire, 400, _error("the body is not a JSON object"))
            elif not self.tools and "tools" in parsed:
                await _sleep_until(deadline)
                refusal = _error("tools are not supported by this server")
                refusal["error"]["param"] = "tools"
                await self._send(conn, wire, 400, refusal)
            else:
                await self._send_completion(conn, wire, parsed, deadline)
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    async def _send_completion(
        self,
        conn: h11.Connection,
        wire: _Wire,
        body: dict[str, Any],
        deadline: float,
    ) -> None:
        # The whole reply is built and encoded before the wait, so the fixed latency is all a
        # client sees: replies due at the same moment go out together, not one encoding apart.
        try:
            reply = self._reply(body)
            if inspect.isawaitable(reply):
                reply = await reply
            data = json.dumps(self._completion(body, reply)).encode()
        except Exception as err:
            await _sleep_until(deadline)
            await self._send(conn, wire, 500, _error(f"reply function failed: {err!r}"))
            return
        await _sleep_until(deadline)
        await self._send(conn, wire, 200, data, {"x-request-id": f"req-fake-{len(self.requests)}"})

    def _completion(self, body: dict[str, Any], reply: str | dict[str, Any]) -> dict[str, Any]:
        """A reply function's text or tool calls as a chat completion (a whole object is
        sent as is)."""
        message: dict[str, Any]
        if isinstance(reply, str):
            message = {"role": "assistant", "content": reply}
        elif "tool_calls" in reply and "choices" not in reply:
            message = {
                "role": "assistant",
                "content": reply.get("content"),
                "tool_calls": [_tool_call(n, call) for n, call in enumerate(reply["tool_calls"])],
            }
        else:
            return reply
        text = str(message.get("content") or "") + json.dumps(message.get("tool_calls", ""))
        prompt_tokens = (
            sum(
                len(str(m.get("content", "")))
                for m in body.get("messages", [])
                if isinstance(m, dict)
            )
            // 4
        )
        return {
            "id": f"chatcmpl-fake-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if "tool_calls" in message else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(text) // 4,
                "total_tokens": prompt_tokens + len(text) // 4,
            },
        }

    async def _send(
        self,
        conn: h11.Connection,
        wire: _Wire,
        status: int,
        body: bytes | dict[str, Any],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        head = {"content-type": "application/json", **(headers or {})}
        head["content-length"] = str(len(data))
        response = h11.Response(status_code=status, headers=list(head.items()))
        # One write for the whole reply, as a real server does for a small body: the client
        # wakes once, not once per part.
        parts = [conn.send(response), conn.send(h11.Data(data=data)), conn.send(h11.EndOfMessage())]
        await wire.send(b"".join(part or b"" for part in parts))

    async def _send_cut(self, conn: h11.Connection, wire: _Wire) -> None:
        length = str(len(_CUT_BODY) * 2)
        head = [("content-type", "application/json"), ("content-length", length)]
        await wire.send(conn.send(h11.Response(status_code=200, headers=head)))
        await wire.send(conn.send(h11.Data(data=_CUT_BODY)))


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "fake_error"}}


def _tool_call(n: int, call: Mapping[str, Any]) -> dict[str, Any]:
    arguments = call.get("arguments", {})
    return {
        "id": str(call.get("id") or f"call_{n + 1}"),
        "type": "function",
        "function": {
            "name": call["name"],
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        },
    }
