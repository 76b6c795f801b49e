"""Fixtures for the provider tests: instant backoff and a mocked local API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import respx

from rlm_sdk.providers import _http
from tests.providers.helpers import LOCAL_URL


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make retry backoff instant and record each delay the provider asked for."""
    delays: list[float] = []

    async def record(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr(_http, "_sleep", record)
    return delays


@pytest.fixture
def local_api() -> Iterator[respx.MockRouter]:
    """respx in place of the local server at LOCAL_URL."""
    with respx.mock(base_url=LOCAL_URL, assert_all_called=False) as router:
        yield router
