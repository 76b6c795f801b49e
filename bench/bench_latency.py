"""What the SDK adds around model latency, against a fake model server on 127.0.0.1.

The server (a child process) answers every request after a fixed latency (200 ms by
default), so the ideal wall time of a run is its latency critical path; the ratio of the
measured median to that path is the SDK's overhead.

    uv run python bench/bench_latency.py niah         # 1M-line haystack, two root turns
    uv run python bench/bench_latency.py fanout       # 32 sub-calls through llm_query_batched
    uv run python bench/bench_latency.py concurrent   # 20 runs at once, each answer checked
    uv run python bench/bench_latency.py batch        # 100 items at concurrency 32
    uv run python bench/bench_latency.py memory       # 32 runs over 10 MB contexts: peak RSS
    uv run python bench/bench_latency.py niah --sync  # the same through the sync twins
                                                      # (niah, fanout, batch: complete/batch)
"""

from __future__ import annotations

import argparse
import math
import os
import threading
import time
from pathlib import Path

import anyio
from _common import model_server, report
from _policies import FANOUT

from rlm_sdk import Limits, OpenAICompatibleProvider, RecursiveLM
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
        rlm = _rlm(url, limits=Limits(max_concurrent_subcalls=FANOUT))
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


def _tree_rss(root: int, skip: set[int]) -> int:
    """Resident bytes of ``root`` and every process below it, except the ``skip`` subtrees."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid = int(entry.name)
        parents[pid] = int(fields["PPid"])
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    total = 0
    for pid, size in rss.items():
        p = pid
        while p not in (root, 0, 1) and p in parents and p not in skip:
            p = parents[p]
        if p == root and pid not in skip:
            total += size
    return total


async def bench_memory(args: argparse.Namespace) -> None:
    runs = 32
    haystacks = [make_haystack(260_000, seed=500 + i) for i in range(runs)]
    size = len(haystacks[0][0])
    print(f"{runs} concurrent runs over {size / 1e6:.1f} MB contexts")
    with model_server("niah", args.latency) as url:
        server_pids = {
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _parent(int(p.name)) == os.getpid()
        }
        rlm = _rlm(url)
        await rlm.acomplete("warm-up", NIAH_QUERY)  # the fork server is up, imports are done
        baseline = _tree_rss(os.getpid(), server_pids)
        peak = baseline
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.005):
                peak = max(peak, _tree_rss(os.getpid(), server_pids))

        sampler = threading.Thread(target=sample)
        sampler.start()
        answers: list[str | None] = [None] * runs

        async def one(k: int) -> None:
            answers[k] = (await rlm.acomplete(haystacks[k][0], NIAH_QUERY)).answer

        try:
            async with anyio.create_task_group() as tg:
                for k in range(runs):
                    tg.start_soon(one, k)
        finally:
            done.set()
            sampler.join()
        await rlm.aclose()
    wrong = [k for k in range(runs) if answers[k] != str(haystacks[k][1])]
    assert not wrong, f"wrong answers for runs {wrong}"
    per_run = (peak - baseline) / runs
    print(
        f"peak RSS of the process tree: {peak / 1e6:.0f} MB (before the runs: "
        f"{baseline / 1e6:.0f} MB); per run {per_run / 1e6:.1f} MB = "
        f"{per_run / size:.2f}x its context"
    )


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def bench_sync(name: str, args: argparse.Namespace) -> None:
    """``name``'s workload through the sync twins, each call on its own event loop."""
    walls = []
    if name == "batch":
        items = [make_haystack(2_000, seed=1000 + i) for i in range(args.items)]
        with model_server("niah", args.latency) as url:
            rlm = _rlm(url)
            for i in range(args.repeat + 1):
                t0 = time.perf_counter()
                results = rlm.batch(
                    [(t, NIAH_QUERY) for t, _ in items], concurrency=args.concurrency
                )
                if i:
                    walls.append(time.perf_counter() - t0)
                assert all(r.answer == str(items[r.index][1]) for r in results)
        waves = math.ceil(args.items / args.concurrency)
        report(
            f"sync batch {args.items} at {args.concurrency}", walls, waves * 2 * args.latency, 1.15
        )
        return
    fanout = name == "fanout"
    context, number = make_haystack(100_000 if fanout else 1_000_000, seed=3 if fanout else 7)
    query = "How many lines mention 'ember'?" if fanout else NIAH_QUERY
    expected = (
        str(sum(1 for line in context.split("\n") if "ember" in line)) if fanout else str(number)
    )
    with model_server(name, args.latency) as url:
        rlm = _rlm(url, limits=Limits(max_concurrent_subcalls=FANOUT)) if fanout else _rlm(url)
        for i in range(args.repeat + 1):
            t0 = time.perf_counter()
            result = rlm.complete(context, query)
            if i:  # the first call starts the fork server and warms the imports
                walls.append(time.perf_counter() - t0)
            assert result.answer == expected, result.answer
    critical = (3 if fanout else 2) * args.latency
    report(f"sync {name}", walls, critical, 1.10 if fanout else 1.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["niah", "fanout", "concurrent", "batch", "memory", "all"])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sync", action="store_true", help="use complete() / batch()")
    args = parser.parse_args()
    every = ["niah", "fanout", "concurrent", "batch", "memory"]
    chosen = every if args.which == "all" else [args.which]
    for name in chosen:
        if args.sync:
            if name in ("niah", "fanout", "batch"):
                bench_sync(name, args)
            continue
        anyio.run(
            {
                "niah": bench_niah,
                "fanout": bench_fanout,
                "concurrent": bench_concurrent,
                "batch": bench_batch,
                "memory": bench_memory,
            }[name],
            args,
        )


if __name__ == "__main__":
    main()
