"""CPU per provider call on each HTTP transport a provider's client could use, 32 at a time.

Against a fake OpenAI-compatible server in a child process on 127.0.0.1 (200 ms latency, so
all 32 requests are in flight together), it measures this process's CPU time per
``OpenAICompatibleProvider.acomplete`` call (encoding, the HTTP exchange, parsing and the reply
model) when the provider's ``httpx.AsyncClient`` sends through:

* ``lean (shipped)``: the client the provider builds itself, on its lean h11 transport;
* ``httpx pool``: an ``httpx.AsyncClient()`` passed in, on httpx's default transport (httpcore's
  connection pool);
* ``httpx-aiohttp``: an ``httpx.AsyncClient`` on ``httpx_aiohttp.AiohttpTransport`` (asyncio
  only), when that package is installed: ``uv run --with httpx-aiohttp python bench/bench_http.py``.

    uv run python bench/bench_http.py              # small prompts
    uv run python bench/bench_http.py --kb 120     # 120 kB prompts, as in the fan-out bench
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import anyio
import httpx
from _common import model_server

from rlm_sdk import CompletionRequest, OpenAICompatibleProvider

CONCURRENCY = 32


def _clients() -> dict[str, httpx.AsyncClient | None]:
    """Each path by name: the client passed to the provider (None: the provider's own)."""
    limits = httpx.Limits(max_connections=1024, max_keepalive_connections=1024)
    clients: dict[str, httpx.AsyncClient | None] = {
        "lean (shipped)": None,
        "httpx pool": httpx.AsyncClient(limits=limits),
    }
    if importlib.util.find_spec("httpx_aiohttp") is not None:
        import httpx_aiohttp

        clients["httpx-aiohttp"] = httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport())
    return clients


async def main(args: argparse.Namespace) -> None:
    text = "q\nember " + "lorem ipsum dolor sit amet\n" * (args.kb * 1024 // 27)
    request = CompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": text}]}
    )
    with model_server("fanout", 0.2) as url:
        clients = _clients()
        providers = {
            name: OpenAICompatibleProvider(
                base_url=url, api_key="bench", max_in_flight=1024, http_client=client
            )
            for name, client in clients.items()
        }
        cpu: dict[str, list[float]] = {name: [] for name in providers}
        for round_ in range(args.repeat + 1):
            for name, provider in providers.items():
                started = time.process_time()
                async with anyio.create_task_group() as tg:
                    for _ in range(CONCURRENCY):
                        tg.start_soon(provider.acomplete, request)
                if round_:  # the first round opens the connections
                    cpu[name].append((time.process_time() - started) / CONCURRENCY)
        for provider in providers.values():
            await provider.aclose()
        for client in clients.values():
            if client is not None:
                await client.aclose()
    base = statistics.median(cpu["lean (shipped)"])
    print(f"{CONCURRENCY} concurrent provider calls, {len(text) / 1024:.0f} kB prompts")
    for name, values in cpu.items():
        m = statistics.median(values)
        print(f"  {name:15} {m * 1000:.3f} ms CPU per call ({m / base:.2f}x the shipped path)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=int, default=0, help="prompt size in kB (default: tiny)")
    parser.add_argument("--repeat", type=int, default=9)
    anyio.run(main, parser.parse_args())
