"""What the SDK adds around model latency, against a fake model server on 127.0.0.1.

The server (a child process) answers every request after a fixed latency (200 ms by
default), so the ideal wall time of a run is its latency critical path; the ratio of the
measured median to that path is the SDK's overhead.

    uv run python bench/bench_latency.py niah         # 1M-line haystack, two root turns
    uv run python bench/bench_latency.py fanout       # 32 sub-calls through llm_query_batched
    uv run python bench/bench_latency.py concurrent   # 20 runs at once, each answer checked
    uv run python bench/bench_latency.py batch        # 100 items at concurrency 32
"""

from __future__ import annotations

import argparse
import math
import time

import anyio
from _common import model_server, report
from _policies import FANOUT

from rlm_sdk import OpenAICompatibleProvider, RecursiveLM
from rlm_sdk.testing import NIAH_QUERY, make_haystack


def _rlm(url: str, **kw: object) -> RecursiveLM:
    provider = OpenAICompatibleProvider(base_url=url, api_key="bench", max_in_flight=1024)
    return RecursiveLM("fake-model", provider=provider, **kw)  # type: ignore[arg-type]


async def bench_niah(args: argparse.Namespace) -> None:
    context, number = make_haystack(1_000_000, seed=7)
    print(f"haystack: 1,000,000 lines, {len(context) / 1e6:.1f} MB")
    walls = []
    with model_server("niah", args.latency) as url:
        rlm = _rlm(url)
        await rlm.acomplete("warm-up", NIAH_QUERY)  # connection pool and imports
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = await rlm.acomplete(context, NIAH_QUERY)
            walls.append(time.perf_counter() - t0)
            assert result.answer == str(number), result.answer
            assert result.iterations == 2
        await rlm.aclose()
    report("niah 1M lines", walls, 2 * args.latency, 1.05)


async def bench_fanout(args: argparse.Namespace) -> None:
    context, _ = make_haystack(100_000, seed=3)
    expected = sum(1 for line in context.split("\n") if "ember" in line)
    walls = []
    with model_server("fanout", args.latency) as url:
        rlm = _rlm(url, max_concurrent_subcalls=FANOUT)
        for i in range(args.repeat + 1):
            t0 = time.perf_counter()
            result = await rlm.acomplete(context, "How many lines mention 'ember'?")
            if i:  # the first run warms the connection pool
                walls.append(time.perf_counter() - t0)
            assert result.answer == str(expected), (result.answer, expected)
            assert result.usage.calls == 2 + FANOUT
        await rlm.aclose()
    report(f"fan-out {FANOUT} sub-calls", walls, 3 * args.latency, 1.10)


async def bench_concurrent(args: argparse.Namespace) -> None:
    haystacks = [make_haystack(50_000, seed=100 + i) for i in range(args.runs)]
    walls = []
    with model_server("niah", args.latency) as url:
        rlm = _rlm(url)
        for i in range(args.repeat + 1):
            answers: list[str | None] = [None] * args.runs

            async def one(k: int, out: list[str | None] = answers) -> None:
                out[k] = (await rlm.acomplete(haystacks[k][0], NIAH_QUERY)).answer

            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for k in range(args.runs):
                    tg.start_soon(one, k)
            if i:
                walls.append(time.perf_counter() - t0)
            wrong = [k for k in range(args.runs) if answers[k] != str(haystacks[k][1])]
            assert not wrong, f"wrong answers for runs {wrong}"
        await rlm.aclose()
    report(f"{args.runs} concurrent runs", walls, 2 * args.latency, 1.10)


async def bench_batch(args: argparse.Namespace) -> None:
    items = []
    for i in range(args.items):
        text, number = make_haystack(2_000, seed=1000 + i)
        items.append((text, number))
    walls = []
    with model_server("niah", args.latency) as url:
        rlm = _rlm(url)
        for i in range(args.repeat + 1):
            t0 = time.perf_counter()
            results = await rlm.abatch(
                [(t, NIAH_QUERY) for t, _ in items], concurrency=args.concurrency
            )
            if i:
                walls.append(time.perf_counter() - t0)
            wrong = [r.index for r in results if r.answer != str(items[r.index][1])]
            assert not wrong, f"wrong answers for items {wrong}"
        await rlm.aclose()
    waves = math.ceil(args.items / args.concurrency)
    report(
        f"batch {args.items} items at concurrency {args.concurrency}",
        walls,
        waves * 2 * args.latency,
        1.15,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["niah", "fanout", "concurrent", "batch", "all"])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    chosen = ["niah", "fanout", "concurrent", "batch"] if args.which == "all" else [args.which]
    for name in chosen:
        anyio.run(
            {
                "niah": bench_niah,
                "fanout": bench_fanout,
                "concurrent": bench_concurrent,
                "batch": bench_batch,
            }[name],
            args,
        )


if __name__ == "__main__":
    main()
