"""The in-process floor: bench_latency's workloads with no REPL worker, for comparison.

The same fake model server (a TEST/DEMO double on 127.0.0.1, same scripted replies, same
latency) and the same provider, but the orchestration is the least a loop can do: call the
model, ``exec`` the reply's code in this process over the context, append what it printed,
until a ``FINAL(...)``. No worker, no isolation, no events, no budgets. What it measures is
what this machine costs any orchestrator for these workloads (the model's own code, the HTTP
exchange, the fake server's timer), so the SDK's ratio can be read against it.

    uv run python bench/bench_floor.py niah         # compare: bench_latency.py niah
    uv run python bench/bench_floor.py concurrent   # compare: bench_latency.py concurrent
    uv run python bench/bench_floor.py batch        # compare: bench_latency.py batch
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import re
import time

import anyio
from _common import model_server, report

from rlm_sdk import ChatMessage, CompletionRequest, OpenAICompatibleProvider
from rlm_sdk.testing import NIAH_QUERY, make_haystack

_CODE = re.compile(r"```repl\n(.*?)```", re.DOTALL)
_FINAL = re.compile(r"FINAL\((.*)\)")


async def _loop(provider: OpenAICompatibleProvider, context: str, query: str) -> str:
    """The least an RLM loop does: model, exec, output, again, until FINAL(...)."""
    messages = [
        ChatMessage(role="system", content="You answer with code over `context`."),
        ChatMessage(role="user", content=f"The query: {query}"),
    ]
    namespace: dict[str, object] = {"context": context}
    while True:
        reply = (
            await provider.acomplete(CompletionRequest(model="fake-model", messages=messages))
        ).text
        final = _FINAL.search(reply)
        if final:
            return final.group(1)
        code = _CODE.search(reply)
        out = io.StringIO()
        if code:
            with contextlib.redirect_stdout(out):
                exec(code.group(1), namespace)
        messages += [
            ChatMessage(role="assistant", content=reply),
            ChatMessage(role="user", content=f"Output:\n{out.getvalue()}"),
        ]


def _provider(url: str) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(base_url=url, api_key="bench", max_in_flight=1024)


async def floor_niah(args: argparse.Namespace) -> None:
    context, number = make_haystack(1_000_000, seed=7)
    walls = []
    with model_server("niah", args.latency) as url:
        provider = _provider(url)
        await _loop(provider, make_haystack(100, seed=1)[0], NIAH_QUERY)  # connections, imports
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            answer = await _loop(provider, context, NIAH_QUERY)
            walls.append(time.perf_counter() - t0)
            assert answer == str(number), answer
        await provider.aclose()
    report("floor: niah 1M lines", walls, 2 * args.latency, 1.05)


async def floor_concurrent(args: argparse.Namespace) -> None:
    haystacks = [make_haystack(50_000, seed=100 + i) for i in range(args.runs)]
    walls = []
    with model_server("niah", args.latency) as url:
        provider = _provider(url)
        for i in range(args.repeat + 1):
            answers: list[str | None] = [None] * args.runs

            async def one(k: int, out: list[str | None] = answers) -> None:
                out[k] = await _loop(provider, haystacks[k][0], NIAH_QUERY)

            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for k in range(args.runs):
                    tg.start_soon(one, k)
            if i:  # the first round opens the connections
                walls.append(time.perf_counter() - t0)
            assert answers == [str(n) for _, n in haystacks], answers
        await provider.aclose()
    report(f"floor: {args.runs} concurrent runs", walls, 2 * args.latency, 1.10)


async def floor_batch(args: argparse.Namespace) -> None:
    items = [make_haystack(2_000, seed=1000 + i) for i in range(args.items)]
    walls = []
    with model_server("niah", args.latency) as url:
        provider = _provider(url)
        for i in range(args.repeat + 1):
            answers: list[str | None] = [None] * args.items
            slots = anyio.CapacityLimiter(args.concurrency)

            async def one(
                k: int, out: list[str | None] = answers, slots: anyio.CapacityLimiter = slots
            ) -> None:
                async with slots:
                    out[k] = await _loop(provider, items[k][0], NIAH_QUERY)

            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for k in range(args.items):
                    tg.start_soon(one, k)
            if i:
                walls.append(time.perf_counter() - t0)
            assert answers == [str(n) for _, n in items], answers
        await provider.aclose()
    waves = math.ceil(args.items / args.concurrency)
    report(
        f"floor: batch {args.items} at {args.concurrency}", walls, waves * 2 * args.latency, 1.15
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["niah", "concurrent", "batch"])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    bench = {"niah": floor_niah, "concurrent": floor_concurrent, "batch": floor_batch}
    anyio.run(bench[args.which], args)


if __name__ == "__main__":
    main()
