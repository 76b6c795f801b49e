"""Helpers shared by the provider tests (a module of their own: conftest is not for importing)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import respx
import structlog
from httpx import Request
from structlog.testing import capture_logs
from structlog.typing import Processor

from rlm_sdk.providers import ChatMessage, CompletionRequest

LOCAL_URL = "http://127.0.0.1:8000/v1"
"""A local OpenAI-compatible server (no key needed); respx answers in its place."""


def mock_api(base_url: str) -> respx.MockRouter:
    """respx answering for ``base_url`` inside every ``httpx.AsyncClient``, whatever its transport.

    ``using="httpx"`` swaps the client's transport for the mock, so requests still go through
    the client (headers, timeouts, extensions), as the provider sends them.
    """
    return respx.mock(base_url=base_url, using="httpx", assert_all_called=False)


def chat(text: str = "Hi", **fields: Any) -> CompletionRequest:
    """A one-message request for model ``m``."""
    return CompletionRequest(model="m", messages=[ChatMessage(role="user", content=text)], **fields)


def sent(request: Request) -> dict[str, Any]:
    """The whole request as sent: method, URL, headers and JSON body."""
    return {
        "method": request.method,
        "url": str(request.url),
        "headers": dict(request.headers),
        "json": json.loads(request.content),
    }


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` without blocking the loop (sockets close on a later loop turn)."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


@contextmanager
def captured_logs(*processors: Processor) -> Iterator[list[dict[str, Any]]]:
    """``structlog.testing.capture_logs(processors)``, then structlog left unconfigured if it was.

    capture_logs configures structlog for good; other tests in the process would then see the
    SDK's events printed to stdout (the logging shim uses structlog once it is configured).
    """
    was_configured = structlog.is_configured()
    try:
        with capture_logs(processors) as entries:
            yield entries
    finally:
        if not was_configured:
            structlog.reset_defaults()
