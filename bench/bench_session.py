"""A session's follow-up query against a fresh run over the same context.

A fresh run forks a REPL worker and loads its context (a 40 MB text by default) before its
first cell can run; a session's follow-up finds both done. Every query here is the same two
turns against a fake model server on 127.0.0.1 (a TEST/DEMO double in its own process): a
cell printing ``len(context)``, then the answer read from that output, checked.

    uv run python bench/bench_session.py                 # model latency 0: nothing hides the start
    uv run python bench/bench_session.py --latency 0.2   # 200 ms per call, as a hosted model
    uv run python bench/bench_session.py --mb 40 --repeat 9

Reported, as medians: the worker start and context load measured alone (a REPLSession
opened until ready), a fresh run, a session's first query, and its second query; the
second query against the fresh run, as a ratio and a difference.
"""

from __future__ import annotations

import argparse
import time

import anyio
from _common import median, model_server

from rlm_sdk import OpenAICompatibleProvider, RecursiveLM
from rlm_sdk.repl import ForkServer, REPLSession


def _rlm(url: str) -> RecursiveLM:
    provider = OpenAICompatibleProvider(base_url=url, api_key="bench", max_in_flight=64)
    return RecursiveLM("fake-model", provider=provider)


def _ms(xs: list[float]) -> str:
    return f"{median(xs) * 1000:8.1f} ms   (runs: {' '.join(f'{x * 1000:.0f}' for x in xs)})"


async def main(args: argparse.Namespace) -> None:
    context = ("a line of the context, the same for every run\n" * (args.mb * 22_000))[
        : args.mb * 1_000_000
    ]
    expected = str(len(context))
    print(f"context: {len(context) / 1e6:.0f} MB of text; model latency {args.latency * 1000:g} ms")
    start_load: list[float] = []
    fresh: list[float] = []
    first: list[float] = []
    second: list[float] = []
    async with ForkServer() as forkserver:
        for _ in range(args.repeat):  # the worker start and the context load alone
            t0 = time.perf_counter()
            async with REPLSession(context, forkserver=forkserver) as repl:
                await repl.wait_ready()
                start_load.append(time.perf_counter() - t0)
    with model_server("count", args.latency) as url:
        async with _rlm(url) as rlm:
            await rlm.acomplete("warm-up", "How long?")  # connections, imports, fork server
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                result = await rlm.acomplete(context, "How long is the context?")
                fresh.append(time.perf_counter() - t0)
                assert result.answer == expected, result.answer
                async with rlm.session() as session:
                    t0 = time.perf_counter()
                    result = await session.acomplete(context, "How long is the context?")
                    first.append(time.perf_counter() - t0)
                    assert result.answer == expected, result.answer
                    pid = session.pid
                    t0 = time.perf_counter()
                    result = await session.acomplete("How long is it, once more?")
                    second.append(time.perf_counter() - t0)
                    assert result.answer == expected, result.answer
                    assert session.pid == pid  # the same worker served both queries
    critical = 2 * args.latency
    print(f"worker start + context load, alone : {_ms(start_load)}")
    print(f"fresh run                          : {_ms(fresh)}")
    print(f"session, first query               : {_ms(first)}")
    print(f"session, second query              : {_ms(second)}")
    saved = median(fresh) - median(second)
    print(
        f"second query / fresh run: {median(second) / median(fresh):.3f}x; "
        f"{saved * 1000:.1f} ms less (start + load alone: {median(start_load) * 1000:.1f} ms); "
        f"SDK time beyond the {critical * 1000:g} ms of model latency: fresh "
        f"{(median(fresh) - critical) * 1000:.1f} ms, second query "
        f"{(median(second) - critical) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=40, help="context size in MB")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per model call")
    parser.add_argument("--repeat", type=int, default=7)
    anyio.run(main, parser.parse_args())
