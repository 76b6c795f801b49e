"""Benchmarks of the REPL worker: start, cell and bridge round trips, big contexts, closing.

Run with ``uv run python bench/bench_repl.py`` (``--repeat N`` for more runs). Every figure is
the median of repeated runs; the table says which bar each one has to meet. Starts are measured
both ways: a direct ``python -I`` per worker, and forked by a shared ``ForkServer``. Workers run
in the default ``isolation="auto"`` sandbox.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from rlm_sdk.repl import ContextData, ForkServer, REPLOptions, REPLSession, SubCallRequest

MB = 1_000_000
CONCURRENT = 20
BATCH_PROMPTS, PROMPT_CHARS = 32, 120_000


async def _instant(request: SubCallRequest) -> list[str]:
    return ["ok"] * len(request.prompts)


def _peak_rss(pid: int) -> int:
    """The worker's peak resident set (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


async def _median(run: Callable[[], Awaitable[float]], repeat: int) -> float:
    return statistics.median([await run() for _ in range(repeat)])


async def bench_ready(
    context: ContextData | None, repeat: int, **session: Any
) -> tuple[float, float, float]:
    """Seconds from ``__aenter__`` to ready, the ``__aenter__`` part alone, and peak RSS / size."""
    ready: list[float] = []
    enter: list[float] = []
    ratios: list[float] = []
    size = len(context) if isinstance(context, str | bytes) else 0
    if isinstance(context, list):
        size = sum(map(len, context)) + len(context)
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        async with REPLSession(context, **session) as repl:
            enter.append(time.perf_counter() - started)
            await repl.wait_ready()
            ready.append(time.perf_counter() - started)
            assert repl.pid is not None
            if size:
                ratios.append(_peak_rss(repl.pid) / size)
    return (
        statistics.median(ready),
        statistics.median(enter),
        statistics.median(ratios) if ratios else 0.0,
    )


async def bench_cells(repeat: int) -> tuple[float, float]:
    """A trivial cell's round trip, and one ``llm_query`` bridge round trip, in seconds."""
    async with REPLSession(handler=_instant) as session:
        for _ in range(20):
            await session.run_cell("x = 1")

        async def cell() -> float:
            started = time.perf_counter()
            await session.run_cell("x = 1")
            return time.perf_counter() - started

        trivial = await _median(cell, repeat * 50)
        calls = 200

        async def bridge() -> float:
            started = time.perf_counter()
            result = await session.run_cell(f"for _ in range({calls}):\n    llm_query('p')")
            assert result.error is None, result.error
            return (time.perf_counter() - started - trivial) / calls

        per_call = await _median(bridge, repeat * 2)
    return trivial, per_call


async def bench_concurrent_open(repeat: int, **session: Any) -> tuple[float, float]:
    """20 sessions opened at once: seconds until all are ready, and the worst event-loop stall."""
    rounds = [await _open_at_once(session) for _ in range(repeat)]
    return statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds)


async def _open_at_once(session: dict[str, Any]) -> tuple[float, float]:
    """One round; the stall is how late a 1 ms sleep in a probe task wakes up, at worst."""
    ready: list[float] = []
    all_ready, release = anyio.Event(), anyio.Event()
    worst = 0.0

    async def probe() -> None:
        nonlocal worst
        while not all_ready.is_set():
            before = time.perf_counter()
            await anyio.sleep(0.001)
            worst = max(worst, time.perf_counter() - before - 0.001)

    async def one(index: int, started: float) -> None:
        async with REPLSession(
            f"context {index}", options=REPLOptions(start_timeout=60), **session
        ) as repl:
            await repl.wait_ready()
            ready.append(time.perf_counter() - started)
            if len(ready) == CONCURRENT:
                all_ready.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(probe)
        await anyio.sleep(0.01)
        started = time.perf_counter()
        for index in range(CONCURRENT):
            tg.start_soon(one, index, started)
        await all_ready.wait()
        release.set()
    return max(ready), worst


async def bench_big_batch(repeat: int) -> float:
    """Seconds for one ``llm_query_batched`` of 32 prompts of 120 KB, with an instant handler."""
    async with REPLSession(handler=_instant) as repl:
        setup = f"prompts = ['x' * {PROMPT_CHARS} + str(i) for i in range({BATCH_PROMPTS})]"
        await repl.run_cell(setup)
        await repl.run_cell("out = llm_query_batched(prompts)")

        async def batch() -> float:
            started = time.perf_counter()
            result = await repl.run_cell("out = llm_query_batched(prompts)")
            assert result.error is None, result.error
            return time.perf_counter() - started

        return await _median(batch, repeat * 6)


async def bench_close(context: ContextData, repeat: int, **session: Any) -> float:
    """Seconds ``__aexit__`` takes: kill the worker, reap it, release the context and directory."""
    times: list[float] = []
    for _ in range(repeat * 3):
        repl = REPLSession(context, **session)
        await repl.__aenter__()
        try:
            await repl.run_cell("1")
            await anyio.sleep(0.02)
        finally:
            started = time.perf_counter()
            await repl.__aexit__(None, None, None)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def _row(name: str, value: str, bar: str) -> str:
    return f"| {name:<44} | {value:>16} | {bar:<22} |"


async def main(repeat: int) -> None:
    rows: list[tuple[str, str, str]] = []
    trivial, per_call = await bench_cells(repeat)  # first, on a quiet machine
    rows.append(("trivial cell round trip", f"{trivial * 1e3:.2f} ms", "<= 2 ms"))
    rows.append(("llm_query bridge round trip", f"{per_call * 1e3:.3f} ms", "<= 1 ms"))
    async with ForkServer() as server:
        forked = {"forkserver": server}
        await bench_ready(None, 2, **forked)  # start the fork server
        handshake, enter, _ = await bench_ready(None, repeat * 4)
        rows.append(("handshake, empty context (direct)", f"{handshake * 1e3:.1f} ms", "<= 60 ms"))
        rows.append(("  of which __aenter__ (returns early)", f"{enter * 1e3:.1f} ms", ""))
        handshake, enter, _ = await bench_ready(None, repeat * 4, **forked)
        rows.append(("handshake, empty context (fork server)", f"{handshake * 1e3:.1f} ms", ""))
        rows.append(("  of which __aenter__", f"{enter * 1e3:.1f} ms", ""))
        for name, session in (("direct", {}), ("fork server", forked)):
            wall, stall = await bench_concurrent_open(repeat, **session)
            rows.append(
                (f"{CONCURRENT} sessions at once, all ready ({name})", f"{wall * 1e3:.0f} ms", "")
            )
            rows.append(("  worst event-loop stall", f"{stall * 1e3:.1f} ms", ""))
        big = await bench_big_batch(repeat)
        name = f"llm_query_batched {BATCH_PROMPTS} x {PROMPT_CHARS // 1000} KB"
        rows.append((name, f"{big * 1e3:.2f} ms", ""))
        contexts: list[tuple[str, Any, str]] = [
            ("100 MB str", ("x" * 99 + "\n") * (100 * MB // 100), "<= 0.25 s, RSS <= 2.5x"),
            (
                "38.5 MB str (1M lines)",
                "".join(f"line {i:08d} " + "y" * 23 + "\n" for i in range(MB)),
                "",
            ),
            ("38.5 MB list[str] (1M lines)", [f"line {i:08d} " + "y" * 23 for i in range(MB)], ""),
        ]
        for name, context, bar in contexts:
            ready, _, ratio = await bench_ready(context, repeat)
            rows.append((f"{name} context ready", f"{ready:.3f} s", bar))
            rows.append(("  worker peak RSS / context size", f"{ratio:.2f}x", ""))
            if name.startswith("38.5 MB str"):
                for how, session in (("direct", {}), ("fork server", forked)):
                    closed = await bench_close(context, repeat, **session)
                    rows.append((f"  close ({how})", f"{closed * 1e3:.2f} ms", ""))
            del context
    print(_row("measure (median)", "value", "bar"))
    print(f"|{'-' * 46}|{'-' * 18}|{'-' * 24}|")
    for row in rows:
        print(_row(*row))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs per figure (more for quick ones)"
    )
    anyio.run(main, parser.parse_args().repeat)
