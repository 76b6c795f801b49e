"""RateLimitedProvider paces calls and tokens for everything sharing it."""

from __future__ import annotations

import time

import anyio
import pytest

from rlm_sdk import ChatMessage, CompletionRequest, ConfigurationError, RateLimitedProvider
from rlm_sdk.testing import ScriptedProvider


def _request(chars: int = 40) -> CompletionRequest:
    return CompletionRequest(model="m", messages=[ChatMessage(role="user", content="x" * chars)])


async def test_requests_per_minute_paces_after_the_burst() -> None:
    """With a burst of 2 at 600/min, the 3rd and 4th calls wait about 0.1 s each."""
    paced = RateLimitedProvider(ScriptedProvider(lambda r: "ok"), requests_per_minute=600, burst=2)
    starts: list[float] = []
    t0 = time.perf_counter()

    async def one() -> None:
        await paced.acomplete(_request())
        starts.append(time.perf_counter() - t0)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(one)
    starts.sort()
    assert starts[1] < 0.05
    assert 0.08 < starts[2] < 0.3
    assert 0.18 < starts[3] < 0.45


async def test_tokens_per_minute_counts_estimates_and_usage() -> None:
    """A call estimated above the remaining token budget waits for the bucket to refill."""
    paced = RateLimitedProvider(ScriptedProvider(lambda r: "ok"), tokens_per_minute=60_000)
    t0 = time.perf_counter()
    await paced.acomplete(_request(chars=4 * 59_000))  # ~59k tokens: fits the first minute's bucket
    await paced.acomplete(_request(chars=4 * 2_000))  # ~2k more: waits for about 1k to refill
    elapsed = time.perf_counter() - t0
    assert 0.5 < elapsed < 3.0


def test_bad_rates_are_configuration_errors() -> None:
    """Zero or negative rates are refused."""
    with pytest.raises(ConfigurationError):
        RateLimitedProvider(ScriptedProvider(["x"]), requests_per_minute=0)
    with pytest.raises(ConfigurationError):
        RateLimitedProvider(ScriptedProvider(["x"]), tokens_per_minute=-1)
