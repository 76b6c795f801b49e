"""The one helper behind every sync twin: run an async function on a fresh event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

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

    outcome: list[Any] = []

    async def main() -> None:
        # The outcome leaves the event loop as a value, never as the main task's result or
        # exception: an error raised out of the loop would carry the loop's own frames in its
        # traceback, and they refer back to the task holding it (a reference cycle that keeps
        # every frame of the run alive until the garbage collector runs).
        try:
            outcome.append(await fn())
        except Exception as exc:
            outcome.append(_Raised(exc))

    anyio.run(main)
    value = outcome.pop()
    if isinstance(value, _Raised):
        error, value.error = value.error, None
        assert error is not None
        try:
            raise error
        finally:
            del error
    result: T = value
    return result


class _Raised:
    """An error that ended the coroutine, carried out of the event loop."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error: BaseException | None = error
