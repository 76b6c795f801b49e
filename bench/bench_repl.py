"""Benchmarks of the REPL worker: start, cell and bridge round trips, big contexts.

Run with ``uv run python bench/bench_repl.py`` (``--repeat N`` for more runs). Every figure is
the median of repeated runs; the table says which bar each one has to meet.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from rlm_sdk.repl import ContextData, REPLSession, SubCallRequest

MB = 1_000_000


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


async def bench_ready(context: ContextData | None, repeat: int) -> tuple[float, float, float]:
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
        async with REPLSession(context) as session:
            enter.append(time.perf_counter() - started)
            await session.wait_ready()
            ready.append(time.perf_counter() - started)
            assert session.pid is not None
            if size:
                ratios.append(_peak_rss(session.pid) / size)
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


def _row(name: str, value: str, bar: str) -> str:
    return f"| {name:<44} | {value:>16} | {bar:<22} |"


async def main(repeat: int) -> None:
    rows: list[tuple[str, str, str]] = []
    handshake, enter, _ = await bench_ready(None, repeat * 4)
    rows.append(("handshake, empty context", f"{handshake * 1e3:.1f} ms", "<= 60 ms"))
    rows.append(("  of which __aenter__ (returns early)", f"{enter * 1e3:.1f} ms", ""))
    trivial, per_call = await bench_cells(repeat)
    rows.append(("trivial cell round trip", f"{trivial * 1e3:.2f} ms", "<= 2 ms"))
    rows.append(("llm_query bridge round trip", f"{per_call * 1e3:.3f} ms", "<= 1 ms"))
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
