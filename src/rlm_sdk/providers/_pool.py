"""The providers' own HTTP transports: connection reuse in O(1), and a lean HTTP/1.1 path.

httpx's default transport hands every request to httpcore's ``AsyncConnectionPool``, which
rescans all of its connections (polling each idle socket) whenever a request starts or a
response closes, so with N requests in flight each one costs O(N). With 32 requests in flight,
``bench/bench_http.py`` measures about 3 ms of CPU per request through an ``httpx.AsyncClient``
on that pool, and about 0.4 ms for a whole provider call on :class:`LeanTransport`.

* :class:`LeanTransport` (what providers use): HTTP/1.1 through h11 on anyio streams. A request
  takes the most recently used idle connection to its origin, or opens one; head and body go
  out in one write, the whole response is read, and the connection is back on its stack before
  the response is returned. The providers bound requests in flight themselves, so it needs no
  queue, and call it directly rather than through an ``httpx.AsyncClient``. It honours httpx's
  ``timeout`` extension (connect, write, read: the read timeout bounds the whole response)
  and ``trace`` extension (``http11.send_request_body.complete``), and raises httpx's errors.
* :class:`PoolTransport`: the same stacks of connections, each an httpcore
  ``AsyncHTTPConnection``. :class:`LeanTransport` sends through it whenever httpcore's
  connection class has been patched, which is what respx's default mock router does, so
  tests that mock the SDK with plain ``respx.mock`` keep working.

Neither handles proxies or HTTP/2: :func:`make_transport` returns httpx's default transport
when the environment names a proxy.
"""

from __future__ import annotations

import os
import select
import ssl
import time
import urllib.request
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.abc
import h11
import httpcore
import httpx

__all__ = ["LeanTransport", "PoolTransport", "make_transport"]

_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_READ_SIZE = 65536
_Key = tuple[bytes, bytes, int]
_HTTPCORE_HANDLE = httpcore.AsyncHTTPConnection.handle_async_request
"""httpcore's own method, to tell when a mock library has patched it."""


def make_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    """A :class:`LeanTransport`, or httpx's default transport if a proxy is configured."""
    if urllib.request.getproxies():
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        return httpx.AsyncHTTPTransport(limits=limits)
    return LeanTransport(max_idle=max_connections)


@contextmanager
def _httpx_errors() -> Iterator[None]:
    """Raise httpcore's errors as httpx's errors of the same name (they share their names)."""
    try:
        yield
    except httpcore.ConnectionNotAvailable:
        raise
    except Exception as err:
        if not type(err).__module__.startswith("httpcore"):
            raise
        mapped = getattr(httpx, type(err).__name__, None)
        if isinstance(mapped, type) and issubclass(mapped, httpx.TransportError):
            raise mapped(str(err)) from err
        raise httpx.TransportError(str(err)) from err


def _key(origin: httpcore.Origin) -> _Key:
    return (origin.scheme, origin.host, origin.port)


class _Body(httpx.AsyncByteStream):
    """A response body that hands its connection back to the pool once closed."""

    def __init__(
        self,
        stream: AsyncIterable[bytes],
        pool: PoolTransport,
        key: _Key,
        conn: httpcore.AsyncHTTPConnection,
    ) -> None:
        self._stream = stream
        self._pool = pool
        self._key = key
        self._conn: httpcore.AsyncHTTPConnection | None = conn

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        close = getattr(self._stream, "aclose", None)
        try:
            if close is not None:
                with anyio.CancelScope(shield=True), _httpx_errors():
                    await close()
        finally:
            await self._pool._release(self._key, conn)


class _Stacks(httpx.AsyncBaseTransport):
    """What both transports keep: their settings, and an SSL context made on first need.

    Args:
        max_idle: idle connections kept per origin; more are closed as they come back.
        keepalive_expiry: seconds an idle connection is kept.
        verify: as httpx's ``verify``; the SSL context is made on the first https request,
            so plain-http use never loads certificates.
    """

    def __init__(
        self,
        *,
        max_idle: int = 64,
        keepalive_expiry: float = 5.0,
        verify: ssl.SSLContext | str | bool = True,
    ) -> None:
        self._max_idle = max_idle
        self._keepalive_expiry = keepalive_expiry
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._closed = False
        self._start()

    def _start(self) -> None:
        """Set up a subclass's own state."""

    @property
    def is_closed(self) -> bool:
        return self._closed

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context(verify=self._verify)
        return self._ssl


class PoolTransport(_Stacks):
    """HTTP/1.1 keep-alive connections kept on a last-in-first-out stack per origin, each an
    httpcore ``AsyncHTTPConnection``. Arguments as :class:`_Stacks`."""

    def _start(self) -> None:
        self._idle: dict[_Key, list[httpcore.AsyncHTTPConnection]] = {}
        self._open: set[httpcore.AsyncHTTPConnection] = set()

    @property
    def connections(self) -> int:
        """Connections open now, idle or in use."""
        return len(self._open)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        assert isinstance(request.stream, httpx.AsyncByteStream)
        url = request.url
        scheme = url.raw_scheme
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=scheme,
                host=url.raw_host,
                port=url.port or _DEFAULT_PORTS.get(scheme),
                target=url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        origin = core.url.origin
        key = _key(origin)
        while True:
            conn = await self._checkout(origin, key)
            try:
                with _httpx_errors():
                    response = await conn.handle_async_request(core)
            except httpcore.ConnectionNotAvailable:
                await self._discard(conn)  # the server closed it meanwhile: take another
                continue
            except BaseException:
                await self._release(key, conn)
                raise
            assert isinstance(response.stream, AsyncIterable)
            return httpx.Response(
                status_code=response.status,
                headers=response.headers,
                stream=_Body(response.stream, self, key, conn),
                extensions=response.extensions,
            )

    async def aclose(self) -> None:
        """Close every connection, idle or in use; idempotent."""
        self._closed = True
        conns, self._open = list(self._open), set()
        self._idle.clear()
        with anyio.CancelScope(shield=True):
            for conn in conns:
                await conn.aclose()

    async def _checkout(self, origin: httpcore.Origin, key: _Key) -> httpcore.AsyncHTTPConnection:
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            if conn.is_available() and not conn.has_expired():
                return conn
            await self._discard(conn)
        conn = httpcore.AsyncHTTPConnection(
            origin,
            ssl_context=self._ssl_context() if origin.scheme == b"https" else None,
            keepalive_expiry=self._keepalive_expiry,
        )
        self._open.add(conn)
        return conn

    async def _discard(self, conn: httpcore.AsyncHTTPConnection) -> None:
        self._open.discard(conn)
        with anyio.CancelScope(shield=True):
            await conn.aclose()

    async def _release(self, key: _Key, conn: httpcore.AsyncHTTPConnection) -> None:
        """Back on the stack if it can serve another request; closed otherwise."""
        stack = self._idle.setdefault(key, [])
        if self._closed or not conn.is_available() or len(stack) >= self._max_idle:
            await self._discard(conn)
        else:
            stack.append(conn)


# --- the lean transport --------------------------------------------------------------------


@contextmanager
def _socket_errors(
    timeout_class: type[httpx.TimeoutException], error_class: type[httpx.TransportError]
) -> Iterator[None]:
    """Raise a timeout as ``timeout_class``, a broken socket as ``error_class``."""
    try:
        yield
    except TimeoutError as err:
        raise timeout_class(str(err) or "timed out") from err
    except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as err:
        raise error_class(str(err) or type(err).__name__) from err


class _Connection:
    """One HTTP/1.1 connection: a byte stream and its h11 state."""

    __slots__ = ("expires", "h11", "plain", "sock", "stream")

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.sock = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        self.plain = isinstance(stream, anyio.abc.SocketStream)  # no TLS layer in between
        self.expires = 0.0

    async def write(self, data: bytes, write_timeout: float | None) -> None:
        """Send ``data``: straight into the socket when it takes it all, which it usually does.

        No other write can be pending: a connection serves one exchange at a time, and the
        previous exchange's request was all sent before its response came. Going through the
        stream costs a trip round the event loop, so 32 concurrent requests would all be
        encoded before the first byte left; this way each leaves as soon as it is ready.
        """
        view = memoryview(data)
        if self.plain and self.sock is not None:
            try:
                view = view[os.write(self.sock.fileno(), view) :]
            except BlockingIOError:
                pass
            except OSError as err:
                raise httpx.WriteError(str(err) or type(err).__name__) from err
            if not view:
                return
        with _socket_errors(httpx.WriteTimeout, httpx.WriteError), anyio.fail_after(write_timeout):
            await self.stream.send(bytes(view))

    def reusable(self) -> bool:
        """Not expired, and not closed by the server: an idle socket that is readable can only
        be about to say end-of-file (httpcore's test, too)."""
        if time.monotonic() > self.expires or self.sock is None or self.sock.fileno() < 0:
            return False
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        return not poller.poll(0)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.stream.aclose()


class LeanTransport(_Stacks):
    """HTTP/1.1 keep-alive connections through h11, on a last-in-first-out stack per origin.

    For request/response exchanges: the whole response body is read before the response is
    returned. See the module docstring for what it honours and when it defers to httpcore.
    Arguments: ``max_idle``, ``keepalive_expiry`` and ``verify``, as :class:`_Stacks`.
    """

    def _start(self) -> None:
        self._idle: dict[_Key, list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._fallback: PoolTransport | None = None

    @property
    def connections(self) -> int:
        """Connections open now, idle or in use."""
        return len(self._busy) + sum(map(len, self._idle.values()))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        if httpcore.AsyncHTTPConnection.handle_async_request is not _HTTPCORE_HANDLE:
            if self._fallback is None:  # a mock library patched httpcore: let it see this
                self._fallback = PoolTransport(
                    max_idle=self._max_idle,
                    keepalive_expiry=self._keepalive_expiry,
                    verify=self._verify,
                )
            return await self._fallback.handle_async_request(request)
        url = request.url
        scheme = url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        key = (scheme, url.raw_host, url.port or _DEFAULT_PORTS[scheme])
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        conn = await self._checkout(key, timeouts.get("connect"))
        self._busy.add(conn)
        try:
            response = await self._exchange(conn, request, timeouts)
        except BaseException:
            self._busy.discard(conn)
            await conn.aclose()
            raise
        self._busy.discard(conn)
        await self._release(key, conn)
        return response

    async def aclose(self) -> None:
        """Close every connection, idle or in use; idempotent."""
        self._closed = True
        conns = [conn for stack in self._idle.values() for conn in stack] + list(self._busy)
        self._idle.clear()
        self._busy.clear()
        for conn in conns:
            await conn.aclose()
        if self._fallback is not None:
            await self._fallback.aclose()

    async def _checkout(self, key: _Key, connect_timeout: float | None) -> _Connection:
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            if conn.reusable():
                return conn
            await conn.aclose()
        scheme, raw_host, port = key
        host = raw_host.decode("ascii")
        with (
            _socket_errors(httpx.ConnectTimeout, httpx.ConnectError),
            anyio.fail_after(connect_timeout),
        ):
            if scheme == b"https":
                stream: anyio.abc.ByteStream = await anyio.connect_tcp(
                    host,
                    port,
                    ssl_context=self._ssl_context(),
                    tls_hostname=host,
                    tls_standard_compatible=False,
                )
            else:
                stream = await anyio.connect_tcp(host, port)
        return _Connection(stream)

    async def _release(self, key: _Key, conn: _Connection) -> None:
        """Back on the stack when both sides are done and may go on; closed otherwise."""
        state = conn.h11
        stack = self._idle.setdefault(key, [])
        if (
            self._closed
            or state.our_state is not h11.DONE
            or state.their_state is not h11.DONE
            or len(stack) >= self._max_idle
        ):
            await conn.aclose()
            return
        state.start_next_cycle()
        conn.expires = time.monotonic() + self._keepalive_expiry
        stack.append(conn)

    async def _exchange(
        self, conn: _Connection, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> httpx.Response:
        state = conn.h11
        try:
            parts = [
                state.send(
                    h11.Request(
                        method=request.method,
                        target=request.url.raw_path,
                        headers=request.headers.raw,
                    )
                )
            ]
            async for chunk in request.stream:  # type: ignore[union-attr]
                if chunk:
                    parts.append(state.send(h11.Data(data=chunk)))
            parts.append(state.send(h11.EndOfMessage()))
        except h11.LocalProtocolError as err:
            raise httpx.LocalProtocolError(str(err)) from err
        await conn.write(b"".join(part or b"" for part in parts), timeouts.get("write"))
        trace: Callable[[str, dict[str, Any]], Awaitable[None]] | None = request.extensions.get(
            "trace"
        )
        if trace is not None:
            await trace("http11.send_request_body.complete", {"request": request})
        with (
            _socket_errors(httpx.ReadTimeout, httpx.ReadError),
            anyio.fail_after(timeouts.get("read")),
        ):
            head, body = await self._read_response(conn)
        return httpx.Response(
            status_code=head.status_code,
            headers=head.headers.raw_items(),
            content=body,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
            request=request,
        )

    async def _read_response(self, conn: _Connection) -> tuple[h11.Response, bytes]:
        state = conn.h11
        head: h11.Response | None = None
        chunks: list[bytes] = []
        try:
            while True:
                event = state.next_event()
                if event is h11.NEED_DATA:
                    try:
                        data = await conn.stream.receive(_READ_SIZE)
                    except anyio.EndOfStream:
                        data = b""
                    if not data and head is None:
                        raise httpx.RemoteProtocolError(
                            "Server disconnected without sending a response."
                        )
                    state.receive_data(data)
                elif isinstance(event, h11.Response):
                    head = event
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise httpx.RemoteProtocolError("the server closed the connection mid-response")
                # an h11.InformationalResponse (1xx) is skipped
        except h11.RemoteProtocolError as err:
            raise httpx.RemoteProtocolError(str(err)) from err
        assert head is not None
        return head, b"".join(chunks)
