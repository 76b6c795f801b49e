"""The sub-call cache: a cached re-run of a 32-sub-call fan-out, and the cost of a lookup.

``rerun``: the fan-out of bench_latency.py (a fake model server, a TEST/DEMO double, in a
child process with 200 ms latency; 32 sub-calls through ``llm_query_batched``), run cold on
an empty store and then again on the warm one. The root's two turns still go to the model,
so a warm run's critical path is two latencies where a cold run's is three; its sub-call
requests should be zero.

``lookup``: the time the cache adds to one sub-call, with an instant stand-in for the model,
on a prompt the size of one fan-out chunk: a hit (key, store read, accounting), and a miss
(key, store read, store write) over the same call without a cache. Bar: 0.5 ms.

    uv run python bench/bench_cache.py rerun            # memory and SQLite stores
    uv run python bench/bench_cache.py lookup
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
from _common import model_server
from _policies import FANOUT

from rlm_sdk import (
    CacheStore,
    Limits,
    MemoryCache,
    OpenAICompatibleProvider,
    RecursiveLM,
    SQLiteCache,
    TokenUsage,
)
from rlm_sdk._budget import Budget
from rlm_sdk._cache import SubCallCache, through_cache
from rlm_sdk.providers import ChatMessage, CompletionResponse, Provider
from rlm_sdk.testing import make_haystack

QUERY = "How many lines mention 'ember'?"


def _stores(folder: Path) -> dict[str, Callable[[int], CacheStore]]:
    return {
        "memory": lambda i: MemoryCache(),
        "sqlite": lambda i: SQLiteCache(folder / f"rerun-{i}.db"),
    }


async def bench_rerun(args: argparse.Namespace) -> None:
    context, _ = make_haystack(100_000, seed=3)
    expected = str(sum(1 for line in context.split("\n") if "ember" in line))
    with model_server("fanout", args.latency) as url, tempfile.TemporaryDirectory() as tmp:
        provider = OpenAICompatibleProvider(base_url=url, api_key="bench", max_in_flight=1024)
        limits = Limits(max_concurrent_subcalls=FANOUT)
        plain = RecursiveLM("fake-model", provider=provider, limits=limits)
        await plain.acomplete(context, QUERY)  # the fork server, the connections, the imports
        uncached = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = await plain.acomplete(context, QUERY)
            uncached.append(time.perf_counter() - t0)
            assert result.answer == expected and result.usage.calls == 2 + FANOUT
        u = statistics.median(uncached)
        print(
            f"no cache: median {u * 1000:.1f} ms (model calls {2 + FANOUT}, critical path "
            f"{3 * args.latency * 1000:.0f} ms) over {args.repeat} runs"
        )
        for name, make in _stores(Path(tmp)).items():
            cold, warm, cold_calls, warm_calls, warm_hits = [], [], set(), set(), set()
            for i in range(args.repeat):
                rlm = RecursiveLM("fake-model", provider=provider, limits=limits, cache=make(i))
                for walls, calls in ((cold, cold_calls), (warm, warm_calls)):
                    t0 = time.perf_counter()
                    result = await rlm.acomplete(context, QUERY)
                    walls.append(time.perf_counter() - t0)
                    assert result.answer == expected, (result.answer, expected)
                    calls.add(result.usage.calls)
                warm_hits.add(result.usage.cache_hits)
            c, w = statistics.median(cold), statistics.median(warm)
            print(
                f"{name}: cold median {c * 1000:.1f} ms (model calls {sorted(cold_calls)}, "
                f"critical path {3 * args.latency * 1000:.0f} ms); warm median {w * 1000:.1f} ms "
                f"(model calls {sorted(warm_calls)}, of which sub-calls "
                f"{sorted(n - 2 for n in warm_calls)}; hits {sorted(warm_hits)}; critical path "
                f"{2 * args.latency * 1000:.0f} ms); cold/no cache {c / u:.3f}x, warm/no cache "
                f"{w / u:.3f}x, warm/critical {w / (2 * args.latency):.3f}x over {args.repeat} pairs"
            )
        await provider.aclose()


@dataclass(frozen=True)
class _Settings:
    cache: SubCallCache | None
    provider: Provider
    temperature: float | None = None
    max_tokens: int | None = None


async def _per_call(
    call: Callable[[int], Awaitable[object]], counter: itertools.count[int], n: int, rounds: int
) -> float:
    """Median seconds per call over ``rounds`` rounds of ``n`` calls."""
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            await call(next(counter))
        per.append((time.perf_counter() - t0) / n)
    return statistics.median(per)


async def bench_lookup(args: argparse.Namespace) -> None:
    context, _ = make_haystack(100_000, seed=3)
    lines = context.split("\n")
    size = -(-len(lines) // FANOUT)
    chunk = "\n".join(lines[:size])
    print(f"prompt: one fan-out chunk, {len(chunk) / 1000:.0f} kB")
    provider = OpenAICompatibleProvider(base_url="http://127.0.0.1:9", api_key="bench")
    reply = CompletionResponse(text="12", usage=TokenUsage(prompt_tokens=9000), model="m")

    async def ask() -> CompletionResponse:
        return reply

    budget = Budget(Limits(), {})
    with tempfile.TemporaryDirectory() as tmp:
        stores: dict[str, CacheStore] = {
            "memory": MemoryCache(max_entries=1_000_000),
            "sqlite": SQLiteCache(Path(tmp) / "lookup.db"),
        }
        for name, store in stores.items():
            settings = _Settings(SubCallCache(store), provider)
            hit_messages = [ChatMessage(role="user", content=chunk)]
            await through_cache(settings, budget, "m", hit_messages, ask)  # stored

            async def hit(
                _: int, s: _Settings = settings, m: list[ChatMessage] = hit_messages
            ) -> object:
                return await through_cache(s, budget, "m", m, ask)

            async def miss(i: int, s: _Settings = settings) -> object:
                messages = [ChatMessage(role="user", content=f"{i}\n{chunk}")]
                return await through_cache(s, budget, "m", messages, ask)

            async def bare(i: int) -> object:
                messages = [ChatMessage(role="user", content=f"{i}\n{chunk}")]
                return await ask(), messages

            counter = itertools.count()
            base = await _per_call(bare, counter, args.calls, args.rounds)
            hit_s = await _per_call(hit, counter, args.calls, args.rounds)
            miss_s = await _per_call(miss, counter, args.calls, args.rounds)
            bar = 0.5e-3
            for what, t in (("hit", hit_s - base), ("miss", miss_s - base)):
                verdict = "PASS" if t <= bar else "MISS"
                print(
                    f"{name} {what}: {t * 1e3:.3f} ms per sub-call over the call without a "
                    f"cache (median of {args.rounds} x {args.calls}; bar 0.5 ms) {verdict}"
                )
            if isinstance(store, SQLiteCache):
                store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["rerun", "lookup", "all"])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    chosen = ["rerun", "lookup"] if args.which == "all" else [args.which]
    for name in chosen:
        anyio.run({"rerun": bench_rerun, "lookup": bench_lookup}[name], args)


if __name__ == "__main__":
    main()
