"""A run's REPL (``_lazy_repl.py``): opened when wanted, its tasks in the run's task group,
closed (or never opened) by the run; every path leaves no worker behind."""

from __future__ import annotations

import anyio
import pytest

from rlm_sdk._lazy_repl import _LazyREPL
from rlm_sdk.repl import REPLSession

pytestmark = pytest.mark.integration


async def test_it_opens_when_wanted_and_closing_ends_the_run_task_group() -> None:
    lazy = _LazyREPL()
    opened: list[REPLSession] = []

    def open_session() -> REPLSession:
        opened.append(REPLSession("held"))
        return opened[-1]

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            lazy.start(tg, open_session)
            lazy.wanted.set()
            session = await lazy.get()
            assert (await session.run_cell("print(context)")).stdout == "held\n"
            assert session.pid is not None
            await lazy.close()
    assert session.pid is None
    assert lazy.session is None and lazy.isolation == session.isolation_layers


async def test_closed_before_it_was_wanted_it_never_opens() -> None:
    lazy = _LazyREPL()

    def open_session() -> REPLSession:
        raise AssertionError("opened after the run closed it")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            lazy.start(tg, open_session)
            await lazy.close()


async def test_closed_while_the_worker_is_being_started_it_is_closed_by_the_opener() -> None:
    lazy = _LazyREPL()
    sessions: list[REPLSession] = []

    def open_session() -> REPLSession:
        sessions.append(REPLSession("late"))
        return sessions[-1]

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            lazy.start(tg, open_session)
            lazy.wanted.set()
            while not sessions:  # the opener has begun starting the worker
                await anyio.sleep(0)
            await lazy.close()
    assert sessions[0].pid is None
    with pytest.raises(RuntimeError):
        await sessions[0].__aenter__()  # closed: it cannot be opened again
