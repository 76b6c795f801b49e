"""Cancelling runs stops everything they started: requests, cells, workers, child runs."""

from __future__ import annotations

import gc
import os
import time

import anyio
import pytest

from rlm_sdk import CompletionRequest, RecursiveLM
from rlm_sdk.testing import ScriptedProvider
from tests.helpers import descendants

pytestmark = pytest.mark.integration


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _slow_policy(request: CompletionRequest) -> str:
    """Root runs a cell that sleeps in the worker and then asks a sub-model; sub-calls answer."""
    if request.messages[0].role != "system":
        return "sub answer"
    return "```repl\nimport time\ntime.sleep(30)\n```"


async def _settle(baseline: set[int], timeout: float = 10.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while (left := descendants() - baseline) and time.monotonic() < deadline:
        await anyio.sleep(0.05)
    return left


async def test_cancelling_100_concurrent_runs_leaves_nothing_behind() -> None:
    """100 runs cancelled mid-cell return promptly; no worker, zombie or descriptor is left."""
    gc.collect()  # fork servers of RecursiveLMs other tests dropped are stopped by their finalizers
    baseline, fds = descendants(), _open_fds()
    rlm = RecursiveLM("m", provider=ScriptedProvider(_slow_policy))
    started = time.monotonic()
    with anyio.move_on_after(3.0):
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(rlm.acomplete, f"context {i}", "q")
    cancelled_in = time.monotonic() - started
    await rlm.aclose()
    assert cancelled_in < 8.0, "cancellation must be prompt"
    assert await _settle(baseline) == set(), "a process outlived its run"
    assert _open_fds() == fds


async def test_cancelling_a_recursive_run_kills_every_level() -> None:
    """A cancel during a child run's cell kills the child's worker and the parent's."""

    def policy(request: CompletionRequest) -> str:
        if request.messages[0].role != "system":
            return "leaf"
        if (
            "go deeper" in request.messages[1].content
            or "context itself" in request.messages[1].content
        ):
            return "```repl\nimport time\ntime.sleep(30)\n```"
        return "```repl\nprint(rlm_query('go deeper'))\n```"

    baseline = descendants()
    rlm = RecursiveLM("m", provider=ScriptedProvider(policy), max_depth=3)
    with anyio.move_on_after(2.0):
        await rlm.acomplete("ctx", "q")
    await rlm.aclose()
    assert await _settle(baseline) == set()


def test_sync_twin_timeout_via_wall_time_limit() -> None:
    """A wall-time budget stops a hanging run from the sync twin with a typed error and partial result."""
    from rlm_sdk import LimitExceededError, Limits

    rlm = RecursiveLM(
        "m", provider=ScriptedProvider(_slow_policy), limits=Limits(max_wall_time=1.0)
    )
    started = time.monotonic()
    with pytest.raises(LimitExceededError) as info:
        rlm.complete("ctx", "q")
    assert time.monotonic() - started < 6.0
    assert info.value.limit == "wall_time"
    assert info.value.result is not None and info.value.result.iterations == 1
