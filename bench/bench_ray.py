"""rlm_sdk.ray against its ideal, and against the local engine, on a single-machine Ray.

1,000 two-turn runs (a small haystack each; the scripted NIAH stand-in, a TEST/DEMO double,
plays the model behind a fake OpenAI-compatible server on 127.0.0.1 in a child process, with a
fixed latency per request). With ``actors x runs_per_actor`` runs in flight, the ideal wall
time is ``ceil(items / in_flight) x 2 x latency``; the bar is 1.2x of it. Ray's start-up (the
local cluster, then the actors' first run) is reported apart from the steady-state job, and
the same items then run through the local ``RecursiveLM.abatch`` at the same concurrency.

    uv run python bench/bench_ray.py                      # 1000 items, 2 actors x 16, 100 ms
    uv run python bench/bench_ray.py --items 200 --repeat 1
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import anyio
from _common import model_server

# Under `uv run`, Ray would rebuild this environment for its workers from the command line
# (without the `ray` extra); here the workers share this interpreter. Read when Ray imports.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

from rlm_sdk import OpenAICompatibleProvider, RecursiveLM
from rlm_sdk.testing import NIAH_QUERY, make_haystack


def _items(n: int) -> tuple[list[dict[str, str]], dict[str, str]]:
    items, expected = [], {}
    for i in range(n):
        text, number = make_haystack(200, seed=10_000 + i)
        items.append({"id": f"doc-{i}", "context": text, "query": NIAH_QUERY})
        expected[f"doc-{i}"] = str(number)
    return items, expected


def _check(records: list[dict[str, object]], expected: dict[str, str]) -> None:
    wrong = [r["id"] for r in records if r["answer"] != expected[str(r["id"])]]
    assert len(records) == len(expected), (len(records), len(expected))
    assert not wrong, f"wrong answers for {wrong[:5]}"


def bench_ray(args: argparse.Namespace, url: str, items: list[dict[str, str]]) -> list[float]:
    import ray

    import rlm_sdk.ray as rlm_ray

    t0 = time.perf_counter()
    ray.init(
        address="local",  # a new single-machine cluster, never one already running here
        num_cpus=args.cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    print(f"ray.init (local cluster, {args.cpus} CPUs): {time.perf_counter() - t0:.2f} s")
    config = rlm_ray.RLMConfig(
        model="fake-model", base_url=url, provider_options={"max_in_flight": 1024}
    )
    in_flight = args.actors * args.runs_per_actor
    _, expected = _items(len(items))
    walls: list[float] = []
    try:
        for rep in range(args.repeat + 1):
            out = Path(tempfile.mkdtemp(prefix="bench-ray-"))
            first: list[float] = []
            t0 = time.perf_counter()
            summary = rlm_ray.run_batch(
                items if rep else items[: in_flight * 2],  # rep 0 warms the workers' imports
                config,
                out,
                actors=args.actors,
                runs_per_actor=args.runs_per_actor,
                num_cpus_per_actor=args.cpus / args.actors,
                on_progress=lambda _p, first=first: first.append(time.perf_counter()),
            )
            wall = time.perf_counter() - t0
            records = rlm_ray.read_results(out)
            shutil.rmtree(out)
            if rep == 0:
                print(
                    f"warm-up job ({summary.done} items, not counted): {wall:.2f} s, of which "
                    f"{first[0] - t0:.2f} s to the first record"
                )
                continue
            _check(records, expected)
            # The first record needs the actors up and one whole run (two requests) done.
            start_up = first[0] - t0 - 2 * args.latency
            walls.append(wall - start_up)
            run_walls = [float(str(r["wall_time_s"])) for r in records]
            print(
                f"  job {rep}: {wall:.2f} s in all = {start_up:.2f} s of actor start-up "
                f"+ {wall - start_up:.2f} s of runs; one run's median wall time "
                f"{statistics.median(run_walls) * 1000:.0f} ms (ideal {2 * args.latency * 1000:.0f})"
            )
    finally:
        ray.shutdown()
    return walls


async def bench_local(
    args: argparse.Namespace, url: str, items: list[dict[str, str]], expected: dict[str, str]
) -> list[float]:
    provider = OpenAICompatibleProvider(base_url=url, api_key="bench", max_in_flight=1024)
    in_flight = args.actors * args.runs_per_actor
    walls: list[float] = []
    async with RecursiveLM("fake-model", provider=provider) as rlm:
        await rlm.abatch(items[:in_flight], concurrency=in_flight)  # fork server, connections
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            results = await rlm.abatch(items, concurrency=in_flight)
            walls.append(time.perf_counter() - t0)
            _check([{"id": r.id, "answer": r.answer} for r in results], expected)
    await provider.aclose()
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--runs-per-actor", type=int, default=16)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    items, expected = _items(args.items)
    in_flight = args.actors * args.runs_per_actor
    waves = math.ceil(args.items / in_flight)
    ideal = waves * 2 * args.latency
    print(
        f"{args.items} two-turn runs, {args.latency * 1000:.0f} ms per request, "
        f"{args.actors} actors x {args.runs_per_actor} = {in_flight} in flight: "
        f"ideal {waves} waves x 2 x {args.latency * 1000:.0f} ms = {ideal:.2f} s"
    )
    with model_server("niah", args.latency) as url:
        ray_walls = bench_ray(args, url, items)
        local_walls = anyio.run(bench_local, args, url, items, expected)
    ray_median = statistics.median(ray_walls)
    local_median = statistics.median(local_walls)
    verdict = "PASS" if ray_median / ideal <= 1.2 else "MISS"
    print(
        f"ray:   median {ray_median:.2f} s of runs over {len(ray_walls)} jobs (start-up apart); "
        f"{ray_median / ideal:.3f}x the ideal (bar 1.20x) {verdict}; "
        f"{args.items / ray_median:.0f} runs/s"
    )
    print(
        f"local: median {local_median:.2f} s over {len(local_walls)} batches at concurrency "
        f"{in_flight}; {local_median / ideal:.3f}x the ideal; {args.items / local_median:.0f} runs/s"
    )
    print(f"ray / local (runs only): {ray_median / local_median:.3f}x")
    print("  ray runs (s):", " ".join(f"{w:.2f}" for w in ray_walls))
    print("  local runs (s):", " ".join(f"{w:.2f}" for w in local_walls))


if __name__ == "__main__":
    main()
