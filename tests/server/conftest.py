"""Fixtures for the server tests: a real uvicorn server on 127.0.0.1 and headless Chromium.

The server runs in a background thread with its own event loop, bound to an ephemeral port
on 127.0.0.1, exactly as ``rlm-sdk serve`` runs it; tests talk to it over real sockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rlm_sdk.testing import ScriptedProvider
from tests.server.helpers import CHROMIUM, CHROMIUM_ARGS, IN_CI, LiveServer, serve_in_thread


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
async def browser_page(tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh page in headless Chromium; fails in CI (skips locally) without Chromium."""
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
