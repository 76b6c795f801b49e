"""The transport under a provider's own ``httpx.AsyncClient``: lean HTTP/1.1 over h11.

Every request a provider sends goes through one ``httpx.AsyncClient``. When the provider
builds that client itself, this module supplies its transport. Why not httpx's default one:
it hands each request to httpcore's ``AsyncConnectionPool``, which rescans all of its
connections (polling each idle socket) whenever a request starts or a response closes, so with
N requests in flight each one costs O(N). With 32 in flight, ``bench/bench_http.py`` measures
about 4 ms of CPU for a whole provider call on that pool and about 0.6 ms on
:class:`LeanTransport`; a fan-out of 32 sub-calls pays the difference on its critical path.
(``httpx-aiohttp``'s transport costs a little less CPU, but runs on asyncio only and cannot
say when a request's body is written.)

* :class:`LeanTransport`: HTTP/1.1 through h11 on anyio streams (asyncio or trio). A request
  takes the most recently used idle connection to its origin, or opens one; head and body go
  out in one write, the whole response is read, and the connection is back on its stack before
  the response is returned. The provider bounds requests in flight itself, so the transport
  needs no queue. It honours httpx's ``timeout`` extension (connect, write, read: the read
  timeout bounds the whole response) and ``trace`` extension
  (``http11.send_request_body.complete``, which the orchestrator uses to start the REPL worker
  while the first model call is in flight), and raises httpx's errors.
* :func:`environment_proxy`: the proxy that the environment names for a URL. This transport
  does not speak to proxies; a provider whose URL the environment sends through one gives
  its client httpx's own transport for that proxy instead (see :mod:`._http`).
"""

from __future__ import annotations

import os
import select
import ssl
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.abc
import h11
import httpx

__all__ = ["LeanTransport", "environment_proxy"]

_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_READ_SIZE = 65536
_Key = tuple[bytes, bytes, int]
"""An origin: scheme, host and port."""


def environment_proxy(url: httpx.URL) -> str | None:
    """The proxy that ``HTTP_PROXY``, ``HTTPS_PROXY`` or ``ALL_PROXY`` name for ``url``.

    None when none is set for its scheme, or when ``NO_PROXY`` exempts its host (the standard
    library's reading of these variables, upper or lower case, which httpx also starts from).
    """
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy:
        return None
    host = url.host if url.port is None else f"{url.host}:{url.port}"
    if urllib.request.proxy_bypass(host):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


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


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connections through h11, on a last-in-first-out stack per origin.

    For request/response exchanges: the whole response body is read before the response is
    returned. See the module docstring for what it honours.

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
        self._idle: dict[_Key, list[_Connection]] = {}
        self._busy: set[_Connection] = set()

    @property
    def connections(self) -> int:
        """Connections open now, idle or in use."""
        return len(self._busy) + sum(map(len, self._idle.values()))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
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

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context(verify=self._verify)
        return self._ssl

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
