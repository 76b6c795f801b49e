"""Hundreds of runs at once: the wall time against the ideal, and where each run's CPU goes.

A batch of two-turn needle-in-a-haystack runs (2,000-line contexts) against the fake model
server on 127.0.0.1, at a fixed concurrency, as in ``bench_latency.py batch``. Besides the
ratio of the median wall time to the ideal (``waves x 2 x latency``), it reads the CPU time
spent per run in each process of the SDK's tree:

* **parent**: this process (the event loop, the providers, the orchestration);
* **fork server**: the one process that forks every REPL worker;
* **workers**: every REPL worker, counted when the fork server reaps it (the fork server's
  ``cutime + cstime`` in ``/proc``).

The fake server's own CPU is not counted: it stands in for the model provider.

    uv run python bench/bench_many.py                                  # 200 runs at 100
    uv run python bench/bench_many.py --items 500 --concurrency 250
    uv run python bench/bench_many.py --isolation none                 # without the sandbox
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import time
from pathlib import Path

import anyio
from _common import median, model_server

from rlm_sdk import OpenAICompatibleProvider, RecursiveLM
from rlm_sdk.testing import NIAH_QUERY, make_haystack

_TICK = os.sysconf("SC_CLK_TCK")


def _forkserver_pid() -> int | None:
    """The fork server below this process, found by its program's name."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = stat.rsplit(")", 1)[1].split()[1]
        if ppid == me and b"_forkserver.py" in cmdline:
            return int(entry.name)
    return None


def _cpu(pid: int) -> tuple[float, float]:
    """(own CPU, reaped children's CPU) of ``pid``, in seconds."""
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / _TICK, (cutime + cstime) / _TICK


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(args: argparse.Namespace) -> None:
    items = [make_haystack(2_000, seed=1000 + i) for i in range(args.items)]
    walls: list[float] = []
    parent: list[float] = []
    server: list[float] = []
    workers: list[float] = []
    with model_server("niah", args.latency) as url:
        provider = OpenAICompatibleProvider(base_url=url, api_key="bench", max_in_flight=1024)
        async with RecursiveLM("fake-model", provider=provider, isolation=args.isolation) as rlm:
            await rlm.acomplete("warm-up", NIAH_QUERY)  # the fork server, imports, connections
            fork = _forkserver_pid()
            for i in range(args.repeat + 1):
                cpu0, fork0, reaped0 = _self_cpu(), *(_cpu(fork) if fork else (0.0, 0.0))
                t0 = time.perf_counter()
                results = await rlm.abatch(
                    [(text, NIAH_QUERY) for text, _ in items], concurrency=args.concurrency
                )
                wall = time.perf_counter() - t0
                await anyio.sleep(0.5)  # the last workers reaped by the fork server
                cpu1, fork1, reaped1 = _self_cpu(), *(_cpu(fork) if fork else (0.0, 0.0))
                wrong = [r.index for r in results if r.answer != str(items[r.index][1])]
                assert not wrong, f"wrong answers for items {wrong}"
                if i:  # the first round warms up
                    walls.append(wall)
                    parent.append((cpu1 - cpu0) / args.items)
                    server.append((fork1 - fork0) / args.items)
                    workers.append((reaped1 - reaped0) / args.items)
    ideal = math.ceil(args.items / args.concurrency) * 2 * args.latency
    m = median(walls)
    print(
        f"{args.items} runs at concurrency {args.concurrency}, {args.latency * 1000:.0f} ms "
        f"latency: median {m:.3f} s over {len(walls)} rounds; ideal {ideal:.3f} s; "
        f"ratio {m / ideal:.3f}x"
    )
    print("  rounds (s):", " ".join(f"{w:.3f}" for w in walls))
    per = {"parent": parent, "fork server": server, "workers": workers}
    total = median([sum(v) for v in zip(parent, server, workers, strict=True)])
    print(
        "  CPU per run (median): "
        + ", ".join(f"{k} {median(v) * 1000:.2f} ms" for k, v in per.items())
        + f"; all {total * 1000:.2f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--isolation", choices=("auto", "strict", "none"), default="auto")
    anyio.run(main, parser.parse_args())
