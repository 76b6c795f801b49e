"""The one helper behind every sync twin: run an async function on a fresh event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from ._exceptions import ConfigurationError

T = TypeVar("T")


def run_sync(fn: Callable[[], Awaitable[T]], *, name: str, async_name: str | None = None) -> T:
    """Run ``fn`` to completion on a new event loop.

    Refuses inside a running loop, where blocking would freeze the host application: the
    error names the async method to await instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise ConfigurationError(
            f"{name}() cannot be called from a running event loop; "
            f"use `await {async_name or 'a' + name}()` instead."
        )

    async def main() -> T:
        return await fn()

    return anyio.run(main)
