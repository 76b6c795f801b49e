"""Fixtures for the real-model tests: one llama.cpp server per test session, and Chromium.

Without the ``realmodel`` dependency group the tests are skipped locally, saying how to
install it; in CI (``CI`` set) a missing server or model fails every one of them instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from rlm_sdk import OpenAICompatibleProvider
from tests.realmodel.llama import LlamaServer, RealModelMissing, llama_server
from tests.server.helpers import IN_CI, chromium_page


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama.cpp serving SmolLM2-135M on 127.0.0.1 for the whole session, then stopped."""
    try:
        with llama_server(tmp_path_factory.mktemp("llama")) as server:
            yield server
    except RealModelMissing as err:
        if IN_CI:
            pytest.fail(f"{err} (CI must install it: see .ci/run)")
        pytest.skip(str(err))


@pytest.fixture
async def real_provider(llama: LlamaServer) -> AsyncIterator[OpenAICompatibleProvider]:
    """An OpenAI-compatible provider for the real server; no retries, so errors show at once."""
    async with OpenAICompatibleProvider(
        base_url=llama.base_url, max_retries=0, timeout=120
    ) as provider:
        yield provider


@pytest.fixture
async def browser_page() -> AsyncIterator[Any]:
    """A fresh page in headless Chromium; fails in CI (skips locally) without Chromium."""
    async with chromium_page() as page:
        yield page
