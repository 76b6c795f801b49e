"""LeanTransport over real loopback sockets (reuse, concurrency, stale and broken connections,
TLS), and which proxy the environment names for a URL."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import anyio.abc
import httpx
import pytest

from rlm_sdk.providers._transport import LeanTransport, environment_proxy
from rlm_sdk.testing import FakeChatServer

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def server() -> Iterator[FakeChatServer]:
    """A fake server that answers each message with its own text."""
    with FakeChatServer(reply=lambda body: body["messages"][-1]["content"]) as server:
        yield server


async def _post(client: httpx.AsyncClient, url: str, text: str = "hi") -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    response = await client.post(url + "/chat/completions", json=body)
    response.raise_for_status()
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


@pytest.mark.integration
async def test_sequential_requests_reuse_one_connection(server: FakeChatServer) -> None:
    """Requests one after another share one kept-alive connection."""
    transport = LeanTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        for i in range(5):
            assert await _post(client, server.base_url, f"n{i}") == f"n{i}"
        assert transport.connections == 1
    assert server.total_connections == 1


@pytest.mark.integration
async def test_concurrent_requests_open_one_connection_each_then_reuse_them(
    server: FakeChatServer,
) -> None:
    """20 overlapping requests open 20 connections, the next 20 reuse them, closing closes all."""
    server.latency = 0.05  # all 20 overlap
    transport = LeanTransport()
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


@pytest.mark.integration
async def test_idle_connections_beyond_max_idle_are_closed(server: FakeChatServer) -> None:
    """Only max_idle connections are kept once the requests are done."""
    server.latency = 0.05
    transport = LeanTransport(max_idle=3)
    async with httpx.AsyncClient(transport=transport) as client:
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(_post, client, server.base_url)
        assert transport.connections == 3


@pytest.mark.integration
async def test_a_connection_the_server_closed_is_not_reused() -> None:
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
    transport = LeanTransport()
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        async with httpx.AsyncClient(transport=transport) as client:
            for i in range(1, 4):
                response = await client.get(f"http://127.0.0.1:{port}/")
                assert response.json() == {"ok": i}
                await anyio.sleep(0.02)  # let the close reach us
        tg.cancel_scope.cancel()
    assert served == 3


@pytest.mark.integration
async def test_a_cut_body_is_a_read_error_and_the_connection_is_dropped(
    server: FakeChatServer,
) -> None:
    """A body cut off mid-way raises RemoteProtocolError and its connection is not reused."""
    server.truncate_next()
    transport = LeanTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await _post(client, server.base_url)
        assert transport.connections == 0
        assert await _post(client, server.base_url, "after") == "after"
        assert transport.connections == 1


@pytest.mark.integration
async def test_connection_refused_is_httpx_connect_error() -> None:
    """Nothing listening is httpx.ConnectError, as httpx's own transport says."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


@pytest.mark.integration
async def test_cancelling_a_request_drops_its_connection(server: FakeChatServer) -> None:
    """A request cancelled mid-exchange closes its connection rather than pooling it."""
    server.latency = 0.6  # the server notices the close when it answers
    transport = LeanTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        with anyio.move_on_after(0.2):
            await _post(client, server.base_url)
        assert transport.connections == 0
    with anyio.fail_after(3):
        while server.open_connections:
            await anyio.sleep(0.01)


@pytest.mark.integration
async def test_closed_transport_refuses_requests(server: FakeChatServer) -> None:
    """A closed transport has no connections left and refuses to send."""
    transport = LeanTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        await _post(client, server.base_url)
        await transport.aclose()
        await transport.aclose()  # idempotent
        assert transport.connections == 0
        with pytest.raises(RuntimeError, match="the transport is closed"):
            await _post(client, server.base_url)


@pytest.mark.integration
async def test_the_request_sent_trace_fires_once_the_body_is_written(
    server: FakeChatServer,
) -> None:
    """httpcore's ``send_request_body.complete`` trace event comes when the request is out,
    well before the reply (the orchestrator starts the REPL worker on it)."""
    server.latency = 0.3
    events: list[tuple[str, float]] = []

    async def trace(event: str, info: dict[str, object]) -> None:
        events.append((event, anyio.current_time()))

    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        response = await client.post(
            server.base_url + "/chat/completions", json=BODY, extensions={"trace": trace}
        )
    answered = anyio.current_time()
    assert response.status_code == 200
    [(event, sent_at)] = events
    assert event == "http11.send_request_body.complete"
    assert answered - sent_at > 0.2


@pytest.mark.integration
async def test_a_body_bigger_than_the_socket_buffer_goes_out_whole(server: FakeChatServer) -> None:
    """8 MB cannot go into the socket at once: the rest follows through the event loop."""
    text = "x" * (8 * 1024 * 1024)
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
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


@pytest.mark.integration
async def test_https_with_a_trusted_certificate(
    tls_files: tuple[str, str],
    https_url: tuple[str, set[int]],
) -> None:
    """TLS to a server whose certificate ``verify`` names; the connection is kept alive."""
    url, ports = https_url
    import ssl

    trusted = ssl.create_default_context(cafile=tls_files[0])
    async with httpx.AsyncClient(transport=LeanTransport(verify=trusted)) as client:
        for i in range(3):
            response = await client.post(
                url + "/v1/chat/completions",
                json=BODY | {"messages": [{"role": "user", "content": f"m{i}"}]},
            )
            assert response.json() == {"echo": f"m{i}"}
    assert len(ports) == 1


@pytest.mark.integration
async def test_https_refuses_an_unknown_certificate(https_url: tuple[str, set[int]]) -> None:
    """A certificate no trusted authority signed fails the connection."""
    url, _ = https_url
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(url + "/v1/chat/completions", json=BODY)


@pytest.mark.integration
async def test_a_chunked_response_is_read_whole() -> None:
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
        async with httpx.AsyncClient(transport=LeanTransport()) as client:
            response = await client.get(f"http://127.0.0.1:{port}/")
            assert response.json() == {"a": "b"}
        tg.cancel_scope.cancel()


# --- environment_proxy ------------------------------------------------------------------------

PROXY = "http://127.0.0.1:3128"


@pytest.mark.parametrize(
    ("env", "url", "expected"),
    [
        pytest.param({}, "https://api.openai.com/v1", None, id="none-set"),
        pytest.param(
            {"NO_PROXY": "127.0.0.1"}, "https://api.openai.com/v1", None, id="no-proxy-alone"
        ),
        pytest.param({"HTTPS_PROXY": PROXY}, "https://api.openai.com/v1", PROXY, id="https"),
        pytest.param({"https_proxy": PROXY}, "https://api.openai.com/v1", PROXY, id="lower-case"),
        pytest.param({"HTTPS_PROXY": PROXY}, "http://127.0.0.1:8000/v1", None, id="other-scheme"),
        pytest.param({"HTTP_PROXY": PROXY}, "http://127.0.0.1:8000/v1", PROXY, id="http"),
        pytest.param({"ALL_PROXY": PROXY}, "https://api.openai.com/v1", PROXY, id="all"),
        pytest.param(
            {"HTTPS_PROXY": "127.0.0.1:3128"}, "https://api.openai.com/v1", PROXY, id="no-scheme"
        ),
        pytest.param(
            {"HTTPS_PROXY": PROXY, "NO_PROXY": "openai.com"},
            "https://api.openai.com/v1",
            None,
            id="exempt-domain",
        ),
        pytest.param(
            {"HTTP_PROXY": PROXY, "NO_PROXY": "localhost,127.0.0.1:8000"},
            "http://127.0.0.1:8000/v1",
            None,
            id="exempt-host-and-port",
        ),
        pytest.param(
            {"HTTP_PROXY": PROXY, "NO_PROXY": "127.0.0.1:9000"},
            "http://127.0.0.1:8000/v1",
            PROXY,
            id="other-port-not-exempt",
        ),
        pytest.param(
            {"HTTPS_PROXY": PROXY, "NO_PROXY": "*"}, "https://api.openai.com/v1", None, id="star"
        ),
    ],
)
def test_environment_proxy(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, expected: str | None
) -> None:
    """The proxy named for a URL's scheme (or ALL_PROXY), unless NO_PROXY exempts its host."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert environment_proxy(httpx.URL(url)) == expected
