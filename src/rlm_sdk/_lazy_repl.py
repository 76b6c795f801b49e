"""A run's REPL session, opened lazily so that no turn waits for it early (``_LazyREPL``).

The worker's start (a fork and the context load) overlaps the first model call: the session
opens once a request of the run is on the wire. Its tasks run in the run's own task group.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.abc
import anyio.lowlevel

from .repl import REPLSession

__all__ = ["_OPEN_AFTER", "_LazyREPL"]

_OPEN_AFTER = 0.05
"""Seconds a run waits for its first request to be on the wire before opening its REPL
anyway (a provider that cannot tell when a request has left costs this, hidden behind the
model's latency)."""


class _LazyREPL:
    """A run's REPL session, opened by a task of its own so that no turn waits for it early.

    It opens on the first of: one of the run's requests is on the wire (the fork and the
    context load then overlap the model's latency instead of delaying the request), a turn
    asks for it, or ``_OPEN_AFTER`` seconds passed. Its tasks run in the run's task group. It
    closes, killing the worker, when the run closes it; closed before it opened, it never
    opens.
    """

    def __init__(self) -> None:
        self.wanted = anyio.Event()
        self.session: REPLSession | None = None
        self.isolation: list[str] = []
        """The sandbox layers its worker applied, kept when the session closes."""
        self._opened = anyio.Event()
        self._released = anyio.Event()

    def start(self, tg: anyio.abc.TaskGroup, open_session: Callable[[], REPLSession]) -> None:
        """Open the session when it is wanted, its tasks in ``tg`` (the run's task group)."""
        tg.start_soon(self._open_when_wanted, tg, open_session)

    async def _open_when_wanted(
        self, tg: anyio.abc.TaskGroup, open_session: Callable[[], REPLSession]
    ) -> None:
        with anyio.move_on_after(_OPEN_AFTER):
            await self.wanted.wait()
        # One more trip round the event loop: runs started together all get their first
        # requests out before any of them forks a worker.
        await anyio.lowlevel.checkpoint()
        if self._released.is_set():
            return
        session = open_session()
        try:
            await session._open_in(tg)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await session.aclose()
            if self._released.is_set():
                return  # closed while it was opening: nobody waits for it
            raise
        self.session = session
        self._opened.set()
        if self._released.is_set():  # the run closed it while the worker was being forked
            await self.close()

    async def get(self) -> REPLSession:
        self.wanted.set()
        await self._opened.wait()
        assert self.session is not None
        return self.session

    def release(self) -> None:
        self._released.set()
        self.wanted.set()  # an opener still waiting wakes up, and does not open

    async def close(self) -> None:
        """Close the session now (the worker is killed; its tasks end), and let it go."""
        self.release()
        session, self.session = self.session, None
        if session is not None:
            await session.aclose()  # shielded inside; idempotent
            self.isolation = list(session.isolation_layers)
