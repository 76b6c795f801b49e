"""Fixtures for the provider tests: fast backoff, a mocked API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import respx

from rlm_sdk.providers import _http
from tests.providers.helpers import LOCAL_URL, captured_logs, mock_api


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
