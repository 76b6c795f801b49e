"""CPU per request of the HTTP paths a provider can take, 32 requests at a time.

Against a fake OpenAI-compatible server in a child process on 127.0.0.1 (200 ms latency, so
all 32 requests are in flight together), it measures this process's CPU time per request for:

* ``httpx client``: ``httpx.AsyncClient.post`` on httpx's default transport (httpcore's pool);
* ``pool transport``: ``AsyncClient.post`` on :class:`PoolTransport` (httpcore connections);
* ``provider``: ``OpenAICompatibleProvider.acomplete`` as shipped (its lean transport, called
  directly, plus retries, parsing and the reply model).

    uv run python bench/bench_http.py              # small prompts
    uv run python bench/bench_http.py --kb 120     # 120 kB prompts, as in the fan-out bench
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import anyio
import httpx
from _common import model_server

from rlm_sdk import CompletionRequest, OpenAICompatibleProvider
from rlm_sdk.providers._pool import PoolTransport

CONCURRENCY = 32


async def main(args: argparse.Namespace) -> None:
    text = "q\nember " + "lorem ipsum dolor sit amet\n" * (args.kb * 1024 // 27)
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    content = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    with model_server("fanout", 0.2) as url:
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=1024)
        default = httpx.AsyncClient(limits=limits)
        pooled = httpx.AsyncClient(transport=PoolTransport(max_idle=1024))
        provider = OpenAICompatibleProvider(base_url=url, api_key="bench", max_in_flight=1024)
        request = CompletionRequest.model_validate(body)

        async def post(client: httpx.AsyncClient) -> None:
            response = await client.post(
                url + "/chat/completions", content=content, headers=headers
            )
            response.json()

        async def provider_call() -> None:
            await provider.acomplete(request)

        paths: dict[str, Callable[[], Awaitable[None]]] = {
            "httpx client": lambda: post(default),
            "pool transport": lambda: post(pooled),
            "provider": provider_call,
        }
        cpu: dict[str, list[float]] = {name: [] for name in paths}
        for round_ in range(args.repeat + 1):
            for name, call in paths.items():
                started = time.process_time()
                async with anyio.create_task_group() as tg:
                    for _ in range(CONCURRENCY):
                        tg.start_soon(call)
                if round_:  # the first round opens the connections
                    cpu[name].append((time.process_time() - started) / CONCURRENCY)
        await default.aclose()
        await pooled.aclose()
        await provider.aclose()
    base = statistics.median(cpu["httpx client"])
    print(f"{CONCURRENCY} concurrent requests, {len(content) / 1024:.0f} kB bodies")
    for name, values in cpu.items():
        m = statistics.median(values)
        print(f"  {name:15} {m * 1000:.3f} ms CPU per request ({m / base:.2f}x the httpx client)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=int, default=0, help="prompt size in kB (default: tiny)")
    parser.add_argument("--repeat", type=int, default=9)
    anyio.run(main, parser.parse_args())
