"""Batch runs: input order, isolated failures, progress, streaming results."""

from __future__ import annotations

import contextlib

import pytest

from rlm_sdk import BatchItem, BatchProgress, CompletionRequest, RecursiveLM
from rlm_sdk.testing import ScriptedProvider

pytestmark = pytest.mark.integration


def _policy(request: CompletionRequest) -> str:
    """Answer with the context's length; a query containing FAIL makes the model fail."""
    history = [m.content for m in request.messages]
    if len(history) == 2:
        return "```repl\nprint('len', len(context))\n```"
    if "FAIL" in history[1]:
        raise RuntimeError("the model broke")
    import re

    return "FINAL(" + re.search(r"len (\d+)", history[-1]).group(1) + ")"  # type: ignore[union-attr]


async def test_batch_keeps_input_order_and_isolates_failures() -> None:
    """Results come back in input order; one failing item carries its error and others succeed."""
    contexts = ["a" * n for n in (5, 1, 9, 3)]
    items: list[object] = [(c, "len?") for c in contexts]
    items.insert(2, BatchItem(context="whatever", query="FAIL len?", id="bad"))
    seen: list[BatchProgress] = []
    rlm = RecursiveLM("m", provider=ScriptedProvider(_policy))
    results = await rlm.abatch(items, concurrency=3, on_progress=seen.append)
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.answer for r in results] == ["5", "1", None, "9", "3"]
    bad = results[2]
    assert bad.id == "bad" and not bad.ok and bad.error_type == "RuntimeError"
    assert [p.done for p in seen] == [1, 2, 3, 4, 5]
    assert seen[-1].failed == 1 and seen[-1].total == 5


async def test_batch_iter_yields_as_completed_and_tags_events() -> None:
    """abatch_iter yields every item once; events carry the item index."""
    items = [("x" * n, "len?") for n in range(6)]
    events: list[object] = []
    rlm = RecursiveLM("m", provider=ScriptedProvider(_policy))
    async with contextlib.aclosing(
        rlm.abatch_iter(items, concurrency=2, on_event=events.append)
    ) as it:
        got = sorted([r.index async for r in it])
    assert got == list(range(6))
    assert {e.item for e in events} == set(range(6))  # type: ignore[attr-defined]


def test_sync_batch() -> None:
    """The sync twin returns the same ordered results."""
    rlm = RecursiveLM("m", provider=ScriptedProvider(_policy))
    assert [r.answer for r in rlm.batch([("ab", "q"), ("abc", "q")])] == ["2", "3"]


async def test_max_workers_bounds_runs_holding_a_worker() -> None:
    """With max_workers=2, no more than two top-level runs are in flight at once."""
    import anyio

    active = peak = 0

    async def policy(request: CompletionRequest) -> str:
        nonlocal active, peak
        if len(request.messages) == 2:
            active += 1
            peak = max(peak, active)
            await anyio.sleep(0.05)
            return "```repl\nprint('len', len(context))\n```"
        active -= 1
        return _policy(request)

    rlm = RecursiveLM("m", provider=ScriptedProvider(policy), max_workers=2)
    results = await rlm.abatch([("abc", "q")] * 6, concurrency=6)
    assert [r.answer for r in results] == ["3"] * 6
    assert peak == 2
