"""Shared pieces of the server tests: scripted models, a real server in a thread, Chromium's path."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from rlm_sdk import CompletionRequest
from rlm_sdk.server import ServerConfig, create_app, loopback_hosts
from rlm_sdk.testing import ScriptedProvider

CHROMIUM = os.environ.get("RLM_CHROMIUM", "/usr/bin/chromium")
"""Debian's Chromium; read at import, before the hermetic fixture clears ``RLM_*``."""
IN_CI = bool(os.environ.get("CI"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

ROOT = "scripted-root"
SUB = "scripted-sub"
ROOT_MARK = "[root]"
"""Put in a query so the scripted model knows it is the root run (a child's query is None)."""
F = "```"


def repl(code: str, prose: str = "Let me look at the context.") -> str:
    return f"{prose}\n{F}repl\n{code}\n{F}"


def two_turn_policy(request: CompletionRequest) -> str:
    """A root that runs one cell with an ``llm_query`` and then answers; sub-calls echo."""
    messages = request.messages
    if messages[0].role != "system":
        return f"sub says: {messages[-1].content[:40]}"
    if not any(m.role == "assistant" for m in messages):
        return repl("print(len(context))\nprint(llm_query('Summarise: ' + context[:30]))")
    return "I have it.\nFINAL(the answer is 42)"


def nested_policy(request: CompletionRequest) -> str:
    """The root calls ``rlm_query`` (a child run with its own REPL); the child calls ``llm_query``."""
    messages = request.messages
    if messages[0].role != "system":
        return "a plain sub-call answer"
    is_root = ROOT_MARK in messages[1].content
    turns = sum(1 for m in messages if m.role == "assistant")
    if is_root and turns == 0:
        return repl(
            "# count, then delegate\nn = len(context)\nprint(f'{n} characters')\n"
            "found = rlm_query('Find the colour in: the sky is blue today')\nprint(found)"
        )
    if is_root:
        return "The child found it.\nFINAL(blue)"
    if turns == 0:
        return repl(
            "print(context[:60])\nprint(llm_query('Which colour? ' + context))", "Child here."
        )
    return "FINAL(blue)"


def sleeping_policy(request: CompletionRequest) -> str:
    """A root whose first cell sleeps far longer than any test waits."""
    return repl("import time\nprint('sleeping')\ntime.sleep(60)", "This will take a while.")


def repl_workers() -> set[int]:
    """Pids of REPL workers below this process (Linux ``/proc``; empty elsewhere).

    A worker is a process running ``_worker.py``, started directly, or forked by the fork
    server (it then shows the server's ``_forkserver.py`` command line); the fork server itself
    (a direct child running ``_forkserver.py``) is not one.
    """
    parents: dict[int, int] = {}
    cmdlines: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdlines[int(entry.name)] = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    me = os.getpid()
    pids: set[int] = set()
    for pid, cmdline in cmdlines.items():
        if b"_worker.py" not in cmdline and b"_forkserver.py" not in cmdline:
            continue
        if parents.get(pid) == me and b"_forkserver.py" in cmdline:
            continue  # the fork server
        p = pid
        while p in parents and p > 1:
            p = parents[p]
            if p == me:
                pids.add(pid)
                break
    return pids


@dataclass
class LiveServer:
    """A running server: its base URL, port and the scripted provider behind it."""

    url: str
    port: int
    provider: ScriptedProvider
    config: ServerConfig


@contextmanager
def serve_in_thread(
    provider: ScriptedProvider, *, models: list[str] | None = None, **config: Any
) -> Iterator[LiveServer]:
    """Run the app under uvicorn on 127.0.0.1:<ephemeral> in a background thread."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config.setdefault("allowed_hosts", loopback_hosts(port))
    cfg = ServerConfig(models=models or [ROOT, SUB], provider=provider, **config)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(cfg),
            log_level="warning",
            ws="none",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        yield LiveServer(f"http://127.0.0.1:{port}", port, provider, cfg)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@asynccontextmanager
async def chromium_page() -> AsyncIterator[Any]:
    """A fresh page in headless Chromium; fails in CI (skips locally) without Chromium.

    On leaving, the page must have raised no JavaScript error.
    """
    if not Path(CHROMIUM).exists():
        message = (
            f"Chromium not found at {CHROMIUM} (install Debian's chromium or set RLM_CHROMIUM)"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1360, "height": 900})
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            yield page
            await context.close()
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            await browser.close()
