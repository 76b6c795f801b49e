"""An httpx transport whose connection reuse costs O(1), however many connections are open.

httpx's default transport hands every request to httpcore's ``AsyncConnectionPool``, which
rescans all of its connections (polling each idle socket) whenever a request starts or a
response closes. With N requests in flight each one costs O(N): measured here, 32 concurrent
small requests cost about 160 ms of CPU through that pool against about 25 ms through this
transport (``bench/bench_latency.py fanout`` shows the effect on a whole run).

The providers already bound requests in flight, so this transport needs no queue: a request
takes the most recently used idle connection to its origin, or opens one, and the connection
goes back on that stack when the response is closed. Each connection is httpcore's own
``AsyncHTTPConnection`` (HTTP/1.1), so timeouts, TLS, trace hooks and respx's default mocks
behave exactly as with httpx's default transport; httpcore errors are raised as the httpx
errors of the same name, as that transport does. Proxies are not handled here:
:func:`make_client` falls back to httpx's default transport when the environment names one.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import contextmanager

import anyio
import httpcore
import httpx

__all__ = ["PoolTransport", "make_client"]

_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_Key = tuple[bytes, bytes, int]


def make_client(timeout: httpx.Timeout, max_connections: int) -> httpx.AsyncClient:
    """A client on :class:`PoolTransport`, or on httpx's default one if a proxy is configured."""
    if urllib.request.getproxies():
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        return httpx.AsyncClient(timeout=timeout, limits=limits)
    return httpx.AsyncClient(timeout=timeout, transport=PoolTransport(max_idle=max_connections))


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


class PoolTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connections kept on a last-in-first-out stack per origin.

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
        self._idle: dict[_Key, list[httpcore.AsyncHTTPConnection]] = {}
        self._open: set[httpcore.AsyncHTTPConnection] = set()
        self._closed = False

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
        if origin.scheme == b"https" and self._ssl is None:
            self._ssl = httpx.create_ssl_context(verify=self._verify)
        conn = httpcore.AsyncHTTPConnection(
            origin,
            ssl_context=self._ssl if origin.scheme == b"https" else None,
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
