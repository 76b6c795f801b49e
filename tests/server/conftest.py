"""Fixtures for the server tests: a real uvicorn server on 127.0.0.1 and headless Chromium.

The server runs in a background thread with its own event loop, bound to an ephemeral port
on 127.0.0.1, exactly as ``rlm-sdk serve`` runs it; tests talk to it over real sockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from rlm_sdk.testing import ScriptedProvider
from tests.server.helpers import LiveServer, chromium_page, serve_in_thread


@pytest.fixture
def live_server() -> Iterator[Callable[..., LiveServer]]:
    """Start servers on demand (``live_server(provider, **config)``); all stop after the test."""
    stack: list[Any] = []

    def start(provider: ScriptedProvider, **config: Any) -> LiveServer:
        cm = serve_in_thread(provider, **config)
        handle = cm.__enter__()
        stack.append(cm)
        return handle

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture
async def browser_page() -> AsyncIterator[Any]:
    """A fresh page in headless Chromium; fails in CI (skips locally) without Chromium."""
    async with chromium_page() as page:
        yield page
