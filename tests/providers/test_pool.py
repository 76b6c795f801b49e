"""PoolTransport over real loopback sockets: reuse, concurrency, stale and broken connections."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import anyio.abc
import httpx
import pytest
import respx

from rlm_sdk.providers import OpenAICompatibleProvider
from rlm_sdk.providers._pool import LeanTransport, PoolTransport, make_transport
from rlm_sdk.testing import FakeChatServer
from tests.providers.helpers import chat

pytestmark = pytest.mark.integration

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(params=[LeanTransport, PoolTransport])
def make(request: pytest.FixtureRequest) -> type[LeanTransport] | type[PoolTransport]:
    """Each test runs against both transports."""
    kind: type[LeanTransport] | type[PoolTransport] = request.param
    return kind


@pytest.fixture
def server() -> Iterator[FakeChatServer]:
    with FakeChatServer(reply=lambda body: body["messages"][-1]["content"]) as server:
        yield server


async def _post(client: httpx.AsyncClient, url: str, text: str = "hi") -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    response = await client.post(url + "/chat/completions", json=body)
    response.raise_for_status()
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


async def test_sequential_requests_reuse_one_connection(
    make: type[LeanTransport] | type[PoolTransport], server: FakeChatServer
) -> None:
    transport = make()
    async with httpx.AsyncClient(transport=transport) as client:
        for i in range(5):
            assert await _post(client, server.base_url, f"n{i}") == f"n{i}"
        assert transport.connections == 1
    assert server.total_connections == 1


async def test_concurrent_requests_open_one_connection_each_then_reuse_them(
    make: type[LeanTransport] | type[PoolTransport],
    server: FakeChatServer,
) -> None:
    server.latency = 0.05  # all 20 overlap
    transport = make()
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(2):
            answers: list[str] = []
            async with anyio.create_task_group() as tg:
                for i in range(20):

                    async def one(i: int = i, out: list[str] = answers) -> None:
                        out.append(await _post(client, server.base_url, str(i)))

                    tg.start_soon(one)
            assert sorted(answers, key=int) == [str(i) for i in range(20)]
        assert transport.connections == 20
    assert server.total_connections == 20
    with anyio.fail_after(3):  # closed with the client (the server notices in its own time)
        while server.open_connections:
            await anyio.sleep(0.01)


async def test_idle_connections_beyond_max_idle_are_closed(
    make: type[LeanTransport] | type[PoolTransport], server: FakeChatServer
) -> None:
    server.latency = 0.05
    transport = make(max_idle=3)
    async with httpx.AsyncClient(transport=transport) as client:
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(_post, client, server.base_url)
        assert transport.connections == 3


async def test_a_connection_the_server_closed_is_not_reused(
    make: type[LeanTransport] | type[PoolTransport],
) -> None:
    """A server that closes after each reply: every request gets a fresh, working connection."""
    served = 0

    async def handle(stream: anyio.abc.SocketStream) -> None:
        nonlocal served
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            served += 1
            body = b'{"ok": %d}' % served
            await stream.send(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            # no "connection: close" header: the client only learns it from the socket

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    transport = make()
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        async with httpx.AsyncClient(transport=transport) as client:
            for i in range(1, 4):
                response = await client.get(f"http://127.0.0.1:{port}/")
                assert response.json() == {"ok": i}
                await anyio.sleep(0.02)  # let the close reach us
        tg.cancel_scope.cancel()
    assert served == 3


async def test_a_cut_body_is_a_read_error_and_the_connection_is_dropped(
    make: type[LeanTransport] | type[PoolTransport],
    server: FakeChatServer,
) -> None:
    server.truncate_next()
    transport = make()
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await _post(client, server.base_url)
        assert transport.connections == 0
        assert await _post(client, server.base_url, "after") == "after"
        assert transport.connections == 1


async def test_connection_refused_is_httpx_connect_error(
    make: type[LeanTransport] | type[PoolTransport],
) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    async with httpx.AsyncClient(transport=make()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_cancelling_a_request_drops_its_connection(
    make: type[LeanTransport] | type[PoolTransport], server: FakeChatServer
) -> None:
    server.latency = 0.6  # the server notices the close when it answers
    transport = make()
    async with httpx.AsyncClient(transport=transport) as client:
        with anyio.move_on_after(0.2):
            await _post(client, server.base_url)
        assert transport.connections == 0
    with anyio.fail_after(3):
        while server.open_connections:
            await anyio.sleep(0.01)


async def test_closed_transport_refuses_requests(
    make: type[LeanTransport] | type[PoolTransport], server: FakeChatServer
) -> None:
    transport = make()
    client = httpx.AsyncClient(transport=transport)
    await _post(client, server.base_url)
    await client.aclose()
    assert transport.connections == 0
    with pytest.raises(RuntimeError, match="closed"):
        await _post(client, server.base_url)


async def test_the_request_sent_trace_still_fires(
    make: type[LeanTransport] | type[PoolTransport], server: FakeChatServer
) -> None:
    events: list[str] = []

    async def trace(event: str, info: dict[str, object]) -> None:
        events.append(event)

    async with httpx.AsyncClient(transport=make()) as client:
        response = await client.post(
            server.base_url + "/chat/completions", json=BODY, extensions={"trace": trace}
        )
    assert response.status_code == 200
    assert "http11.send_request_body.complete" in events


async def test_respx_default_mocks_still_intercept_the_provider() -> None:
    """Users mock the SDK's HTTP with plain respx; nothing may reach the network."""
    url = "http://127.0.0.1:9/v1"  # the discard port: a real request would fail
    with respx.mock(base_url=url) as router:
        router.post("/chat/completions").respond(
            json={"choices": [{"message": {"content": "mocked"}}], "model": "m"}
        )
        async with OpenAICompatibleProvider(base_url=url) as provider:
            reply = await provider.acomplete(chat("x"))
    assert reply.text == "mocked"


def test_a_configured_proxy_falls_back_to_httpx_default_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(make_transport(8), LeanTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert isinstance(make_transport(8), httpx.AsyncHTTPTransport)


async def test_a_body_bigger_than_the_socket_buffer_goes_out_whole(
    make: type[LeanTransport] | type[PoolTransport], server: FakeChatServer
) -> None:
    """8 MB cannot go into the socket at once: the rest follows through the event loop."""
    text = "x" * (8 * 1024 * 1024)
    async with httpx.AsyncClient(transport=make()) as client:
        assert await _post(client, server.base_url, text) == text
    assert server.requests[-1].json["messages"][0]["content"] == text


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the system's openssl."""
    import shutil
    import subprocess

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture
def https_url(tls_files: tuple[str, str]) -> Iterator[tuple[str, set[int]]]:
    """An HTTPS server on 127.0.0.1 answering JSON, and the client ports it has seen."""
    import http.server
    import json
    import ssl
    import threading

    ports: set[int] = set()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            ports.add(self.client_address[1])
            length = int(self.headers["content-length"])
            body = json.loads(self.rfile.read(length))
            data = json.dumps({"echo": body["messages"][0]["content"]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", ports
    finally:
        server.shutdown()
        server.server_close()


async def test_https_with_a_trusted_certificate(
    make: type[LeanTransport] | type[PoolTransport],
    tls_files: tuple[str, str],
    https_url: tuple[str, set[int]],
) -> None:
    """TLS to a server whose certificate ``verify`` names; the connection is kept alive."""
    url, ports = https_url
    import ssl

    trusted = ssl.create_default_context(cafile=tls_files[0])
    async with httpx.AsyncClient(transport=make(verify=trusted)) as client:
        for i in range(3):
            response = await client.post(
                url + "/v1/chat/completions",
                json=BODY | {"messages": [{"role": "user", "content": f"m{i}"}]},
            )
            assert response.json() == {"echo": f"m{i}"}
    assert len(ports) == 1


async def test_https_refuses_an_unknown_certificate(
    make: type[LeanTransport] | type[PoolTransport], https_url: tuple[str, set[int]]
) -> None:
    url, _ = https_url
    async with httpx.AsyncClient(transport=make()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(url + "/v1/chat/completions", json=BODY)


async def test_a_chunked_response_is_read_whole(
    make: type[LeanTransport] | type[PoolTransport],
) -> None:
    """Transfer-Encoding: chunked, as some servers stream a JSON body: it arrives joined."""

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            await stream.send(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
                b'8\r\n{"a": "b\r\n'
            )
            await anyio.sleep(0.01)
            await stream.send(b'2\r\n"}\r\n0\r\n\r\n')

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        async with httpx.AsyncClient(transport=make()) as client:
            response = await client.get(f"http://127.0.0.1:{port}/")
            assert response.json() == {"a": "b"}
        tg.cancel_scope.cancel()
