"""Fixtures for the provider tests: no proxy from the environment, fast backoff, a mocked API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import respx

from rlm_sdk.providers import _http
from tests.providers.helpers import LOCAL_URL, captured_logs, mock_api


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove the proxy variables (``*_proxy``, any case): a test sets the ones it needs."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff from 1 ms instead of INITIAL_RETRY_DELAY, so tests that retry do not wait."""
    monkeypatch.setattr(_http, "INITIAL_RETRY_DELAY", 0.001)


@pytest.fixture
def retry_delays() -> Iterator[list[float]]:
    """The delay of each retry scheduled, in seconds, as its ``rlm.retry_scheduled`` event says."""
    delays: list[float] = []

    def record(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        if event["event"] == "rlm.retry_scheduled":
            delays.append(event["delay"])
        return event

    with captured_logs(record):
        yield delays


@pytest.fixture
def local_api() -> Iterator[respx.MockRouter]:
    """respx in place of the local server at LOCAL_URL."""
    with mock_api(LOCAL_URL) as router:
        yield router
